"""ftlab.train: token-weighted accumulation, the loop, bit-exact resume, bad checkpoints, memory estimate."""

import copy
import json

import pytest
import torch

from ftlab import models, train
from ftlab.data import IGNORE_INDEX, pad_batch


def random_rows(n, vocab, seed=0, lo=3, hi=40):
    """Token sequences of very different lengths: the case where naive averaging goes wrong."""
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),),
                                        generator=g).tolist()} for _ in range(n)]


def counting_rows(n, length=16, period=32, seed=0):
    """A learnable task: each sequence counts up by one (modulo `period`) from a random start."""
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": [3 + (int(s) + t) % period for t in range(length)]}
            for s in torch.randint(0, period, (n,), generator=g)]


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def full_batch_grad(model, rows, pad_id):
    model.zero_grad()
    batch = pad_batch(rows, pad_id)
    (train.summed_loss(model, batch) / train.count_targets(batch)).backward()
    return grads(model).clone()


def micro_batches(rows, size, pad_id):
    return [pad_batch(rows[i:i + size], pad_id) for i in range(0, len(rows), size)]


def naive_accumulate(model, micro):
    """The classic bug: average the micro-batches' mean losses."""
    for mb in micro:
        (train.summed_loss(model, mb) / train.count_targets(mb) / len(micro)).backward()


@pytest.fixture(scope="module")
def tiny():
    model, tok = models.load("tiny-llama")
    return model.train(), tok


@pytest.mark.parametrize("size", [1, 2, 4])
def test_accumulation_equals_one_big_batch_tiny(tiny, size):
    model, tok = tiny
    rows = random_rows(8, len(tok))
    want = full_batch_grad(model, rows, tok.pad_token_id)
    model.zero_grad()
    loss = train.accumulate(model, micro_batches(rows, size, tok.pad_token_id))
    # fp32 sums in a different order (and over differently padded shapes): rounding-level differences only.
    torch.testing.assert_close(grads(model), want, rtol=1e-5, atol=1e-6)
    batch = pad_batch(rows, tok.pad_token_id)
    assert loss == pytest.approx((train.summed_loss(model, batch) / train.count_targets(batch)).item(), rel=1e-5)


def test_accumulation_equals_one_big_batch_smollm2():
    model, tok = models.load("smollm2-135m")
    model.train()
    rows = random_rows(8, 1000, lo=4, hi=12)
    want = full_batch_grad(model, rows, tok.pad_token_id)
    for size in (1, 2, 4):
        model.zero_grad()
        train.accumulate(model, micro_batches(rows, size, tok.pad_token_id))
        # 30 layers of fp32 rounding: allow 1e-4 relative, measured ~1e-5 worst case (size 1).
        torch.testing.assert_close(grads(model), want, rtol=1e-4, atol=1e-4)


def test_naive_averaging_is_measurably_wrong(tiny):
    model, tok = tiny
    rows = random_rows(8, len(tok))
    want = full_batch_grad(model, rows, tok.pad_token_id)
    micro = micro_batches(rows, 2, tok.pad_token_id)
    assert len({train.count_targets(mb) for mb in micro}) > 1  # unequal token counts, or there is no bug
    model.zero_grad()
    naive_accumulate(model, micro)
    naive_error = ((grads(model) - want).norm() / want.norm()).item()
    model.zero_grad()
    train.accumulate(model, micro)
    ours_error = ((grads(model) - want).norm() / want.norm()).item()
    assert naive_error > 0.05 and ours_error < 1e-5, (naive_error, ours_error)


def test_equal_token_counts_make_naive_and_weighted_agree(tiny):
    model, tok = tiny
    rows = [{"input_ids": r["input_ids"][:10]} for r in random_rows(4, len(tok), lo=10, hi=20)]
    micro = micro_batches(rows, 2, tok.pad_token_id)
    model.zero_grad()
    naive_accumulate(model, micro)
    naive = grads(model).clone()
    model.zero_grad()
    train.accumulate(model, micro)
    torch.testing.assert_close(grads(model), naive, rtol=1e-5, atol=1e-7)


def test_classification_targets_are_rows():
    model, tok = models.load("tiny-bert", task="classification")
    batch = {**tok(["a b c", "d"], padding=True, return_tensors="pt"), "labels": torch.tensor([0, 1])}
    assert train.count_targets(batch) == 2
    assert train.count_targets({"labels": torch.tensor([[5, 6, IGNORE_INDEX], [7, 8, 9]])}) == 1 + 2
    loss = train.summed_loss(model, batch) / 2
    torch.testing.assert_close(loss, model(**batch).loss, rtol=1e-6, atol=1e-6)


def test_no_targets_is_an_error(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="no target tokens"):
        train.accumulate(model, [{"input_ids": torch.tensor([[5, 6]]), "labels": torch.tensor([[5, IGNORE_INDEX]])}])


def test_lr_factor_matches_transformers_linear_warmup():
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=10)
    for step in range(10):
        assert train.lr_factor(step, 3, 10) == pytest.approx(sched.get_last_lr()[0], abs=1e-12)
        opt.step()
        sched.step()
    assert train.lr_factor(5, 0, 10, "cosine") == pytest.approx(0.5)


def test_batch_indices_cover_each_epoch_once():
    seen = [i for step in range(5) for i in train.batch_indices(step, 4, 10, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != seen[10:20]  # a new permutation each epoch
    assert train.batch_indices(2, 4, 10, shuffle=False) == [8, 9, 0, 1]


def test_train_reduces_loss_on_a_tiny_task():
    model, tok = models.load("tiny-llama")
    rows = counting_rows(64)
    collate = lambda rs: pad_batch(rs, tok.pad_token_id)  # noqa: E731
    before = train.evaluate(model, rows[:16], collate)
    cfg = train.TrainConfig(steps=30, batch_size=8, micro_batch_size=4, lr=3e-3, warmup_steps=3, eval_every=10,
                            progress=False)
    history = train.train(model, rows, cfg, collate=collate, eval_dataset=rows[:16])
    assert len(history["loss"]) == 30 and history["eval_step"] == [10, 20, 30]
    assert history["eval_loss"][-1] < 0.6 * before, (before, history["eval_loss"])
    assert history["lr"][0] == 0.0 and max(history["lr"]) == pytest.approx(3e-3)
    assert not model.training


def test_train_works_for_sequence_classification():
    model, tok = models.load("tiny-bert", task="classification")
    g = torch.Generator().manual_seed(0)
    words = ["good", "great", "bad", "awful"]
    rows = [{"text": " ".join(words[int(i)] for i in torch.randint(0, 2, (3,), generator=g) + 2 * (k % 2)),
             "label": k % 2} for k in range(32)]

    def collate(rs):
        batch = tok([r["text"] for r in rs], padding=True, return_tensors="pt")
        return {**batch, "labels": torch.tensor([r["label"] for r in rs])}

    before = train.evaluate(model, rows, collate)
    cfg = train.TrainConfig(steps=40, batch_size=8, micro_batch_size=4, lr=3e-3, progress=False)
    history = train.train(model, rows, cfg, collate=collate, eval_dataset=rows)
    assert history["eval_loss"][-1] < 0.5 * before, (before, history["eval_loss"])


def _run(tmp_path, steps, resume_from=None, save_every=0):
    torch.manual_seed(123)  # the loop must restore the RNG itself on resume; this seeds the fresh start
    model, tok = models.load("tiny-llama")
    rows = random_rows(24, len(tok), seed=1)
    cfg = train.TrainConfig(steps=steps, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=2,
                            save_every=save_every, output_dir=str(tmp_path / "ckpt"), progress=False)
    history = train.train(model, rows, cfg, collate=lambda rs: pad_batch(rs, tok.pad_token_id),
                          resume_from=resume_from)
    return model, history, cfg


class Interrupted(Exception):
    pass


def test_resume_is_bit_exact(tmp_path):
    n = 4
    straight, hist_straight, _ = _run(tmp_path / "a", 2 * n)

    # Same run, checkpointing every n steps, killed while loading the data of step n+1.
    torch.manual_seed(123)
    model, tok = models.load("tiny-llama")
    rows = random_rows(24, len(tok), seed=1)

    class Crashing(list):
        reads = 0

        def __getitem__(self, i):
            Crashing.reads += 1
            if Crashing.reads > n * 4 + 1:
                raise Interrupted
            return super().__getitem__(i)

    cfg = train.TrainConfig(steps=2 * n, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=2, save_every=n,
                            output_dir=str(tmp_path / "b" / "ckpt"), progress=False)
    with pytest.raises(Interrupted):
        train.train(model, Crashing(rows), cfg, collate=lambda rs: pad_batch(rs, tok.pad_token_id))
    ckpt = tmp_path / "b" / "ckpt" / f"step-{n}"
    assert json.loads((ckpt / "state.json").read_text())["step"] == n

    torch.manual_seed(999)  # a different RNG state in the new "process": resume must restore the saved one
    resumed, hist_resumed, _ = _run(tmp_path / "b", 2 * n, resume_from=ckpt)
    assert hist_resumed["loss"] == hist_straight["loss"]  # floats compared exactly
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    _run(tmp, 2, save_every=2)
    return tmp / "ckpt" / "step-2"


def _resume(path, model=None, **changes):
    model = model or models.load("tiny-llama")[0]
    cfg = train.TrainConfig(steps=2, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=2, progress=False)
    for k, v in changes.items():
        setattr(cfg, k, v)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return train.load_checkpoint(path, model, opt, sched, cfg)


def test_good_checkpoint_loads(checkpoint):
    step, history = _resume(checkpoint)
    assert step == 2 and len(history["loss"]) == 2


def test_truncated_checkpoint_is_a_clear_error(checkpoint, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in checkpoint.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(train.CheckpointError, match="truncated"):
        _resume(bad)
    (bad / "state.json").write_text((checkpoint / "state.json").read_text()[:100])
    with pytest.raises(train.CheckpointError, match="not valid JSON"):
        _resume(bad)
    (bad / "state.json").unlink()
    with pytest.raises(train.CheckpointError, match="no state.json"):
        _resume(bad)


def test_mismatched_checkpoint_is_a_clear_error(checkpoint):
    with pytest.raises(train.CheckpointError, match="does not match this model"):
        _resume(checkpoint, model=models.load("tiny-bert", task="classification")[0])
    with pytest.raises(train.CheckpointError, match="lr: checkpoint 0.001 vs now 0.01"):
        _resume(checkpoint, lr=1e-2)


def test_fp16_on_cpu_is_refused(tiny):
    model, tok = tiny
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        train.train(copy.deepcopy(model), counting_rows(8), train.TrainConfig(steps=1, precision="fp16"))


def test_estimate_full_adamw_is_16_bytes_per_param():
    for dtype in ("fp32", "bf16"):  # fp32: 4+4+8; mixed: 2 weights + 2 grads + 4 master + 8 moments
        est = train.estimate_memory(1_000_000, "full", "adamw", dtype, n_layers=0)
        assert est.weights + est.grads + est.optimizer == 16_000_000 and est.activations == 0


def test_estimate_orders_methods_and_options():
    arch = dict(batch=2, seq_len=1024, n_layers=32, hidden=4096, intermediate=11008, vocab_size=32000)
    full = train.estimate_memory(6.7e9, "full", "adamw", "bf16", **arch)
    eight = train.estimate_memory(6.7e9, "full", "adamw8bit", "bf16", **arch)
    lora = train.estimate_memory(6.7e9, "lora", "adamw", "bf16", lora_params=4e7, **arch)
    qlora = train.estimate_memory(6.7e9, "qlora", "adamw", "bf16", lora_params=4e7, **arch)
    assert full.total > eight.total > lora.total > qlora.total
    assert qlora.weights == pytest.approx(6.7e9 * 0.5 + 4e7 * 4)
    assert 0 < qlora.quant_constants < 0.02 * 6.7e9  # double quant: ~0.127 bits/param
    ckpt = train.estimate_memory(6.7e9, "lora", "adamw", "bf16", lora_params=4e7, grad_checkpointing=True, **arch)
    assert ckpt.activations < lora.activations / 5
    double = train.estimate_memory(6.7e9, "lora", "adamw", "bf16", lora_params=4e7, **{**arch, "batch": 4})
    assert double.activations == pytest.approx(2 * lora.activations)
    with pytest.raises(ValueError):
        train.estimate_memory(1e6, "prefix")


def test_estimate_qlora_keeps_unquantized_params_in_dtype():
    kept = 2.6e8  # embeddings + lm_head of a 7B Llama stay in bf16 under QLoRA
    all_nf4 = train.estimate_memory(6.7e9, "qlora", "adamw", "bf16", lora_params=4e7)
    mixed = train.estimate_memory(6.7e9, "qlora", "adamw", "bf16", lora_params=4e7, n_unquantized=kept)
    assert mixed.weights - all_nf4.weights == pytest.approx(kept * (2 - 0.5))
    assert mixed.quant_constants < all_nf4.quant_constants
    with pytest.raises(ValueError, match="n_unquantized"):
        train.estimate_memory(6.7e9, "lora", lora_params=4e7, n_unquantized=kept)
    with pytest.raises(ValueError, match="n_unquantized"):
        train.estimate_memory(1e6, "qlora", n_unquantized=2e6)


def test_checkpointing_and_bf16_train_the_same_model():
    model, tok = models.load("tiny-llama")
    rows = counting_rows(16)
    collate = lambda rs: pad_batch(rs, tok.pad_token_id)  # noqa: E731
    cfg = train.TrainConfig(steps=3, batch_size=4, micro_batch_size=2, lr=1e-3, progress=False)
    plain = train.train(copy.deepcopy(model), rows, cfg, collate=collate)["loss"]
    cfg.gradient_checkpointing = True
    ckpt = train.train(copy.deepcopy(model), rows, cfg, collate=collate)["loss"]
    assert ckpt == pytest.approx(plain, rel=1e-6)  # recomputation repeats the same float32 ops
    cfg.gradient_checkpointing, cfg.precision = False, "bf16"
    bf16 = train.train(copy.deepcopy(model), rows, cfg, collate=collate)["loss"]
    assert bf16 == pytest.approx(plain, abs=5e-2) and bf16 != plain  # bf16 keeps ~3 significant digits
