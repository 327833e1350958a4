"""ftlab.train: token-weighted accumulation, the loop, bit-exact resume, bad checkpoints."""

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ftlab import losses, models, train
from ftlab.data import pad_batch
from ftlab.losses import IGNORE_INDEX


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
    (losses.summed_loss(model, batch) / losses.count_targets(batch["labels"])).backward()
    return grads(model).clone()


def micro_batches(rows, size, pad_id):
    return [pad_batch(rows[i:i + size], pad_id) for i in range(0, len(rows), size)]


def naive_accumulate(model, micro):
    """The classic bug: average the micro-batches' mean losses."""
    for mb in micro:
        (losses.summed_loss(model, mb) / losses.count_targets(mb["labels"]) / len(micro)).backward()


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
    mean = losses.summed_loss(model, batch) / losses.count_targets(batch["labels"])
    assert loss == pytest.approx(mean.item(), rel=1e-5)


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
    assert len({losses.count_targets(mb["labels"]) for mb in micro}) > 1  # unequal token counts, or there is no bug
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


def test_token_count_makes_data_parallel_shares_equal_one_big_batch(tiny):
    """Two simulated ranks, each with half the rows: dividing by N_global / W and averaging the ranks' gradients
    (what DDP does) is the whole batch's gradient; each rank's own count (the default) is the naive bug."""
    model, tok = tiny
    rows = random_rows(8, len(tok))
    want = full_batch_grad(model, rows, tok.pad_token_id)
    shares = [micro_batches(rows[r::2], 2, tok.pad_token_id) for r in range(2)]
    n_global = sum(losses.count_targets(mb["labels"]) for share in shares for mb in share)

    def averaged(token_count):
        out = []
        for share in shares:
            model.zero_grad()
            train.accumulate(model, share, token_count=token_count)
            out.append(grads(model).clone())
        return (out[0] + out[1]) / 2

    torch.testing.assert_close(averaged(lambda n: n_global / 2), want, rtol=1e-5, atol=1e-6)
    assert ((averaged(None) - want).norm() / want.norm()).item() > 1e-2  # unequal shares: the count matters
    with pytest.raises(ValueError, match="no target tokens"):
        train.accumulate(model, shares[0], token_count=lambda n: 0)


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
    before = losses.mean_loss(model, rows[:16], collate)
    cfg = train.TrainConfig(steps=30, batch_size=8, micro_batch_size=4, lr=3e-3, warmup_steps=3, eval_every=10,
                            progress=False)
    history = train.train(model, rows, cfg, collate=collate, eval_dataset=rows[:16])
    assert len(history["loss"]) == 30 and history["eval_step"] == [10, 20, 30]
    assert history["eval_loss"][-1] < 0.6 * before, (before, history["eval_loss"])
    assert history["lr"][0] == 0.0 and max(history["lr"]) == pytest.approx(3e-3)
    assert not model.training


def test_loss_fn_reports_numbers_weighted_like_the_loss():
    """A loss_fn returning {"loss": S, name: sum} gets `name` logged per step as sum / N: the loss's weights."""
    rows = random_rows(12, 256, lo=3, hi=30)  # unequal micro-batch token counts: a mean of means would differ
    collate = lambda rs: pad_batch(rs, 0)  # noqa: E731

    def reporting(model, batch):
        summed = losses.summed_loss(model, batch)
        return {"loss": summed, "twice the loss": 2 * summed.item(),
                "target share": losses.count_targets(batch["labels"])}

    runs = {}
    for name, loss_fn, micro in [("plain", losses.summed_loss, 3), ("reporting", reporting, 3),
                                 ("whole", reporting, None)]:
        model, _ = models.load("tiny-llama")
        cfg = train.TrainConfig(steps=3, batch_size=6, micro_batch_size=micro, progress=False)
        runs[name] = train.train(model, rows, cfg, collate=collate, loss_fn=loss_fn, eval_dataset=rows[:4])
    plain, reporting_run, whole = runs["plain"], runs["reporting"], runs["whole"]
    assert set(plain) == {"step", "loss", "lr", "grad_norm", "eval_step", "eval_loss"}  # nothing new unless reported
    assert {k: reporting_run[k] for k in plain} == plain  # reporting changes nothing that was logged before
    assert reporting_run["twice the loss"] == pytest.approx([2 * v for v in plain["loss"]], rel=1e-6)
    assert reporting_run["target share"] == pytest.approx([1.0] * 3)
    assert whole["twice the loss"] == pytest.approx(reporting_run["twice the loss"], rel=1e-5)


def test_loss_fn_may_not_report_what_train_logs():
    model, tok = models.load("tiny-llama")
    clashing = lambda m, b: {"loss": losses.summed_loss(m, b), "lr": 1.0}  # noqa: E731
    with pytest.raises(ValueError, match=r"'lr'.*train\(\) logs itself"):
        train.train(model, random_rows(4, len(tok)), train.TrainConfig(steps=1, batch_size=4, progress=False),
                    collate=lambda rs: pad_batch(rs, tok.pad_token_id), loss_fn=clashing)


def test_train_works_for_sequence_classification():
    model, tok = models.load("tiny-bert", task="classification")
    g = torch.Generator().manual_seed(0)
    words = ["good", "great", "bad", "awful"]
    rows = [{"text": " ".join(words[int(i)] for i in torch.randint(0, 2, (3,), generator=g) + 2 * (k % 2)),
             "label": k % 2} for k in range(32)]

    def collate(rs):
        batch = tok([r["text"] for r in rs], padding=True, return_tensors="pt")
        return {**batch, "labels": torch.tensor([r["label"] for r in rs])}

    before = losses.mean_loss(model, rows, collate)
    cfg = train.TrainConfig(steps=40, batch_size=8, micro_batch_size=4, lr=3e-3, progress=False)
    history = train.train(model, rows, cfg, collate=collate, eval_dataset=rows)
    assert history["eval_loss"][-1] < 0.5 * before, (before, history["eval_loss"])


def with_dropout(model, p=0.2):
    """tiny-llama has no dropout; attention dropout makes every training step draw from torch's global RNG."""
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = p
    return model


def _run(tmp_path, steps, resume_from=None, save_every=0):
    """A run with dropout on. The caller seeds torch's RNG: a fresh start uses it, a resume must replace it."""
    model, tok = models.load("tiny-llama")
    with_dropout(model)
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
    torch.manual_seed(123)
    straight, hist_straight, _ = _run(tmp_path / "a", 2 * n)

    # Same run, checkpointing every n steps, killed while loading the data of step n+1.
    torch.manual_seed(123)
    model, tok = models.load("tiny-llama")
    with_dropout(model)
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

    # Negative control: the same checkpoint with the new process's RNG state in place of the saved one (what a
    # loader that forgot the RNG would use) must not reproduce the run, or this test could not see a lost RNG.
    torch.manual_seed(999)
    save_file({"torch": torch.get_rng_state()}, str(ckpt / "rng.safetensors"))  # same size: the checks pass
    _, hist_lost, _ = _run(tmp_path / "b", 2 * n, resume_from=ckpt)
    assert hist_lost["loss"][:n] == hist_straight["loss"][:n]  # the history up to the checkpoint is stored
    assert hist_lost["loss"][n:] != hist_straight["loss"][n:]


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


# --- the config is checked up front (R2, R23, T1-T11) -----------------------------------------------

@pytest.mark.parametrize("field, value, error", [
    ("steps", 0, ValueError), ("steps", -5, ValueError), ("steps", 3.0, TypeError), ("steps", True, TypeError),
    ("batch_size", 0, ValueError), ("batch_size", -4, ValueError), ("micro_batch_size", 0, ValueError),
    ("micro_batch_size", -2, ValueError), ("max_grad_norm", -1.0, ValueError), ("max_grad_norm", 0, ValueError),
    ("max_grad_norm", float("nan"), ValueError), ("lr", 0.0, ValueError), ("lr", float("inf"), ValueError),
    ("lr", "3e-4", TypeError), ("weight_decay", -0.1, ValueError), ("warmup_steps", -1, ValueError),
    ("eval_every", -1, ValueError), ("save_every", 1.5, TypeError), ("eval_batch_size", 0, ValueError),
    ("schedule", "cosin", ValueError), ("precision", "fp8", ValueError), ("shuffle", 1, TypeError),
])
def test_bad_config_is_refused_naming_the_field(field, value, error):
    with pytest.raises(error, match=f"TrainConfig.{field}"):
        train.TrainConfig(**{field: value})


def test_config_normalises_what_it_accepts():
    cfg = train.TrainConfig(steps=np.int64(3), lr=1, micro_batch_size=None, max_grad_norm=None, output_dir=Path("x"))
    assert type(cfg.steps) is int and type(cfg.lr) is float and cfg.output_dir == "x"


def test_train_checks_a_config_changed_after_construction(tiny):
    model, _ = tiny
    cfg = train.TrainConfig(steps=2, progress=False)
    cfg.max_grad_norm = -1.0  # would multiply every gradient by a negative factor: training climbs
    with pytest.raises(ValueError, match="max_grad_norm"):
        train.train(model, counting_rows(8), cfg)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arg", ["dataset", "eval_dataset"])
def test_empty_datasets_fail_before_training(tiny, arg):
    model, tok = tiny
    before = _weights(model)
    data = {"dataset": counting_rows(8), "eval_dataset": counting_rows(4), arg: []}
    with pytest.raises(ValueError, match=f"^{arg} is empty"):
        train.train(model, data["dataset"], train.TrainConfig(steps=2, batch_size=4, progress=False),
                    collate=lambda rs: pad_batch(rs, tok.pad_token_id), eval_dataset=data["eval_dataset"])
    assert _unchanged(model, before)


# --- resume checks everything before it writes a weight (R16, R17, C5, C8, C9) -----------------------

def test_resume_from_a_file_is_a_checkpoint_error(checkpoint):
    with pytest.raises(train.CheckpointError, match="is a file"):
        _resume(checkpoint / "state.json")


def _checkpoint_rows(seed=1):
    """The rows `_run` trains on (seed=1); another seed gives other rows of the same length."""
    return random_rows(24, len(models.load("tiny-llama")[1]), seed=seed)


def _train_resume(path, rows, optimizer=None, model=None):
    model = model or models.load("tiny-llama")[0]
    tok = models.load("tiny-llama")[1]
    cfg = train.TrainConfig(steps=2, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=2, progress=False)
    before = _weights(model)
    with pytest.raises(train.CheckpointError) as err:
        train.train(model, rows, cfg, collate=lambda rs: pad_batch(rs, tok.pad_token_id), resume_from=path,
                    optimizer=optimizer(model) if optimizer else None)
    assert _unchanged(model, before), "a refused resume changed the model"
    return str(err.value)


def test_resume_with_another_optimizer_class_is_refused_untouched(checkpoint):
    message = _train_resume(checkpoint, _checkpoint_rows(), lambda m: torch.optim.SGD(m.parameters(), lr=1e-3))
    assert "AdamW" in message and "SGD" in message


def test_resume_into_a_model_of_other_shapes_is_refused_untouched(checkpoint):
    model, _ = models.load("tiny-llama")
    config = copy.deepcopy(model.config)
    config.intermediate_size += 64
    wider = type(model)(config)
    message = _train_resume(checkpoint, _checkpoint_rows(), model=wider)
    assert "mlp" in message and "shapes" in message


def _copy(checkpoint, tmp_path, edit):
    bad = tmp_path / "copy"
    bad.mkdir()
    for f in checkpoint.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    state = json.loads((bad / "state.json").read_text())
    (bad / "state.json").write_text(json.dumps(edit(state)))
    return bad


@pytest.mark.parametrize("edit, match", [
    (lambda s: {k: v for k, v in s.items() if k != "files"}, "bad files \\(missing\\)"),
    (lambda s: {**s, "step": "2"}, "bad step \\(str\\)"),
    (lambda s: {**s, "optimizer_groups": [1]}, "optimizer_groups"),
    (lambda s: {**s, "files": {"../model.safetensors": 3}}, "files"),
    (lambda s: [s], "holds a JSON list"),
])
def test_damaged_state_json_is_a_checkpoint_error(checkpoint, tmp_path, edit, match):
    model = models.load("tiny-llama")[0]
    before = _weights(model)
    with pytest.raises(train.CheckpointError, match=match):
        _resume(_copy(checkpoint, tmp_path, edit), model=model)
    assert _unchanged(model, before)


def test_resume_on_other_data_is_refused_naming_the_difference(checkpoint):
    assert "24 rows; this one has 16" in _train_resume(checkpoint, _checkpoint_rows()[:16])
    assert "differ from the ones the checkpoint saw" in _train_resume(checkpoint, _checkpoint_rows(seed=2))


def test_old_checkpoint_without_fingerprint_or_optimizer_class_resumes(checkpoint, tmp_path):
    old = _copy(checkpoint, tmp_path, lambda s: {k: v for k, v in s.items() if k not in ("dataset", "optimizer_class")})
    model, tok = models.load("tiny-llama")
    cfg = train.TrainConfig(steps=2, batch_size=4, micro_batch_size=2, lr=1e-3, warmup_steps=2, progress=False)
    # 16 rows instead of 24: refused by a checkpoint with the fingerprint (test above), not by an old one
    history = train.train(model, _checkpoint_rows()[:16], cfg, resume_from=old,
                          collate=lambda rs: pad_batch(rs, tok.pad_token_id))
    loaded = model.state_dict()
    assert history["step"] == [1, 2]
    assert all(torch.equal(loaded[k], v) for k, v in load_file(str(old / "model.safetensors")).items())


# --- saving over a checkpoint is atomic (R1, C10, C11) -------------------------------------------------

SAVER = r"""
import json, os, random, shutil, signal, sys, time, torch
from ftlab import train
root, points = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
opt = torch.optim.AdamW(model.parameters())
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
cfg = train.TrainConfig(steps=10**6, progress=False)

def save(path, step):
    model[0].weight.data.fill_(step)  # the weights say which save wrote them
    train.save_checkpoint(path, model, opt, sched, cfg, step, {"step": [step]})

def die():
    os._exit(9)

def saver(path, point):  # runs in a forked child, which dies at `point`
    renames, replace, rmtree = [], os.replace, shutil.rmtree
    def dying_replace(a, b):
        renames.append(a)
        if point == f"before-rename-{len(renames)}": die()
        replace(a, b)
        if point == f"after-rename-{len(renames)}": die()
    def dying_rmtree(p, ignore_errors=False):
        if point == "in-rmtree":  # half deleted
            os.remove(sorted(os.scandir(p), key=lambda e: e.name)[0].path)
            die()
        rmtree(p, ignore_errors=ignore_errors)
    os.replace, shutil.rmtree = dying_replace, dying_rmtree
    if point == "in-write":
        train.save_file = lambda *a, **k: die()
    for step in range(2, 10**6 if point.startswith("sigkill") else 3):
        save(path, step)
    os._exit(0)

rng, status = random.Random(0), {}
for point in points:
    path = os.path.join(root, point, "latest")
    save(path, 1)
    pid = os.fork()
    if pid == 0:
        saver(path, point)
    if point.startswith("sigkill"):
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
    status[point] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(status))
"""


def _kill_savers(tmp_path, points):
    """Save over tmp_path/POINT/latest in a child that dies at POINT; returns {point: exit code} (-9: SIGKILL)."""
    out = subprocess.run([sys.executable, "-c", SAVER, str(tmp_path), json.dumps(points)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _load_after_kill(path):
    """Load what a killed saver left at `path` (recovery included); returns the step of the loaded checkpoint."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    step, history = train.load_checkpoint(path, model, opt, sched, train.TrainConfig(steps=10**6, progress=False))
    assert history == {"step": [step]} and torch.all(model[0].weight == step)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "recovery left temporary folders"
    return step


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork a saver")


@needs_fork
def test_a_save_killed_at_any_point_leaves_a_complete_checkpoint(tmp_path):
    """The old code deleted the checkpoint before renaming the new one into place: killed in that window
    (here: halfway through the delete, or before the rename), it left no loadable checkpoint at all."""
    expected = {"in-write": 1, "before-rename-1": 1, "after-rename-1": 1, "before-rename-2": 1,
                "after-rename-2": 2, "in-rmtree": 2}
    status = _kill_savers(tmp_path, list(expected))
    for point, step in expected.items():
        assert status[point] == 9, f"{point}: the saver did not reach that point"
        assert _load_after_kill(tmp_path / point / "latest") == step, point


@needs_fork
def test_sigkill_while_saving_over_and_over_never_loses_the_checkpoint(tmp_path):
    """SIGKILL at random moments of a loop of saves over one path: a complete checkpoint always loads."""
    points = [f"sigkill-{trial}" for trial in range(12)]
    status = _kill_savers(tmp_path, points)
    for point in points:
        assert status[point] == -signal.SIGKILL
        assert _load_after_kill(tmp_path / point / "latest") >= 1


def test_the_next_save_cleans_up_after_a_killed_one(tmp_path):
    path = tmp_path / "latest"
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = train.TrainConfig(steps=10, progress=False)
    train.save_checkpoint(path, model, opt, sched, cfg, 1, {})
    (tmp_path / ".latest.tmp-abcd1234").mkdir()  # a killed save's half-written folder
    os.replace(path, tmp_path / ".latest.old")  # killed between the two renames
    (tmp_path / ".latest-b.tmp-abcd1234").mkdir()  # another checkpoint's: not ours to delete
    train.save_checkpoint(path, model, opt, sched, cfg, 2, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".latest-b.tmp-abcd1234", "latest"]
