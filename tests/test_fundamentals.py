"""ftlab.transfer: layer groups, freezing, the gradual-unfreezing callback, replay, accuracy, LR range test;
and compare.hf's Trainer run, chapter 01's reference."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from ftlab import compare, data, models, transfer
from ftlab.train import TrainConfig, train


@pytest.fixture(scope="module")
def rows():
    return data.load("sentiment", "train", n=64)


def tiny(seed=0, dropout=True):
    model, tok = models.load("tiny-bert", task="classification", seed=seed, device="cpu")
    if not dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model, data.ClassificationCollator(tok, 32)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_layer_groups_top_down_and_complete():
    model, _ = tiny()
    groups = transfer.layer_groups(model)
    assert [n for n, _ in groups] == ["head", "block 1", "block 0", "embeddings"]
    ids = [id(p) for _, ps in groups for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    head = {n for n, p in model.named_parameters() if any(p is q for q in groups[0][1])}
    assert head == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


def test_layer_groups_on_a_decoder():
    model, _ = models.load("tiny-llama", task="classification", device="cpu")
    names = [n for n, _ in transfer.layer_groups(model)]
    assert names == ["head", "block 1", "block 0", "embeddings"]


def test_layer_groups_needs_blocks():
    with pytest.raises(ValueError, match="numbered blocks"):
        transfer.layer_groups(torch.nn.Linear(3, 2))
    with pytest.raises(TypeError, match="model"):
        transfer.layer_groups("bert")


def test_freeze_to_counts_and_errors():
    model, _ = tiny()
    sizes = [sum(p.numel() for p in ps) for _, ps in transfer.layer_groups(model)]
    for k in range(len(sizes) + 1):
        assert transfer.freeze_to(model, k) == sum(sizes[:k]) == models.n_params(model, trainable_only=True)
    for bad in (-1, len(sizes) + 1, 1.5, True):
        with pytest.raises(ValueError, match="n_groups"):
            transfer.freeze_to(model, bad)


@pytest.mark.parametrize("step,per,groups,start,want", [
    (0, 5, 8, 1, 1), (4, 5, 8, 1, 1), (5, 5, 8, 1, 2), (34, 5, 8, 1, 7), (35, 5, 8, 1, 8), (1000, 5, 8, 1, 8),
    (0, 1, 3, 2, 2), (1, 1, 3, 2, 3), (7, 3, 4, 1, 3)])
def test_unfrozen_groups(step, per, groups, start, want):
    assert transfer.unfrozen_groups(step, per, groups, start) == want


def test_unfrozen_groups_epoch_question():
    # The chapter's quiz: 6 blocks + head, one stage per epoch: all blocks train first in epoch 7.
    epochs = [e for e in range(1, 20) if transfer.unfrozen_groups(e - 1, 1, 7) == 7]
    assert epochs[0] == 7


@pytest.mark.parametrize("kwargs,name", [(dict(step=-1), "step"), (dict(steps_per_stage=0), "steps_per_stage"),
                                         (dict(n_groups=0), "n_groups"), (dict(start=0), "start"),
                                         (dict(step=1.0), "step")])
def test_unfrozen_groups_errors(kwargs, name):
    args = dict(step=0, steps_per_stage=1, n_groups=2, start=1) | kwargs
    with pytest.raises(ValueError, match=name):
        transfer.unfrozen_groups(**args)


def test_train_with_empty_callbacks_is_plain_train(rows):
    a, collate = tiny()
    b, _ = tiny()
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3, progress=False)
    torch.manual_seed(0)  # dropout masks come from the global generator
    ha = train(a, rows, cfg, collate=collate)
    torch.manual_seed(0)
    hb = train(b, rows, cfg, collate=collate, callbacks=[])
    assert ha["loss"] == hb["loss"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_gradual_unfreezing_schedule_and_frozen_weights(rows):
    model, collate = tiny()
    before = snapshot(model)
    groups = transfer.layer_groups(model)
    sizes = [sum(p.numel() for p in ps) for _, ps in groups]
    cb = transfer.GradualUnfreezing(model, steps_per_stage=2)
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, progress=False, eval_every=2)
    hist = train(model, rows, cfg, collate=collate, eval_dataset=rows[:16], callbacks=[cb])
    assert hist["trainable"] == [sizes[0], sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1]]
    assert cb.log == [(0, sizes[0]), (2, sizes[0] + sizes[1])]
    assert len(hist["eval_loss"]) == 2  # evaluation forwards do not advance or disturb the schedule
    after = dict(model.named_parameters())
    for (name, params), moved in zip(groups, (True, True, False, False)):
        ids = {id(p) for p in params}
        changed = [not torch.equal(before[n], after[n]) for n, p in model.named_parameters() if id(p) in ids]
        if moved:
            assert any(changed), f"{name} should have trained"
        else:
            assert not any(changed), f"{name} was frozen the whole run but changed"


def test_gradual_unfreezing_unfreezes_everything_eventually(rows):
    model, collate = tiny()
    transfer.freeze_to(model, 0)  # callbacks' parameters are re-enabled for the optimizer
    cb = transfer.GradualUnfreezing(model, steps_per_stage=1)
    hist = train(model, rows, TrainConfig(steps=5, batch_size=4, progress=False), collate=collate, callbacks=[cb])
    assert hist["trainable"][-1] == models.n_params(model)
    assert hist["trainable"] == sorted(hist["trainable"])


def test_train_rejects_bad_callbacks(rows):
    model, collate = tiny()
    cfg = TrainConfig(steps=1, batch_size=4, progress=False)
    transfer.freeze_to(model, 1)
    head_only = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="optimizer passed to train"):
        train(model, rows, cfg, collate=collate, optimizer=head_only,
              callbacks=[transfer.GradualUnfreezing(model, steps_per_stage=1)])
    with pytest.raises(TypeError, match="on_step_begin"):
        train(model, rows, cfg, collate=collate, callbacks=[object()])
    with pytest.raises(ValueError, match="steps_per_stage"):
        transfer.GradualUnfreezing(model, steps_per_stage=0)


def test_replay_mix():
    new, old = [{"i": i, "d": "b"} for i in range(20)], [{"i": i, "d": "a"} for i in range(50)]
    mixed = transfer.replay_mix(new, old, 0.25, seed=3)
    assert len(mixed) == 25
    assert sorted(r["i"] for r in mixed if r["d"] == "b") == list(range(20))
    picked = [r["i"] for r in mixed if r["d"] == "a"]
    assert len(picked) == len(set(picked)) == 5
    assert mixed == transfer.replay_mix(new, old, 0.25, seed=3)
    assert mixed != transfer.replay_mix(new, old, 0.25, seed=4)
    assert sorted(r["i"] for r in transfer.replay_mix(new, old, 0.0)) == list(range(20))
    # the documented procedure, spelled out
    g = torch.Generator().manual_seed(3)
    pick = torch.randperm(50, generator=g)[:5].tolist()
    pool = new + [old[i] for i in pick]
    assert mixed == [pool[i] for i in torch.randperm(25, generator=g).tolist()]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "0.2", True])
def test_replay_mix_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        transfer.replay_mix([1, 2], [3, 4], fraction)


def test_replay_mix_not_enough_old_rows():
    with pytest.raises(ValueError, match="old_rows"):
        transfer.replay_mix(list(range(10)), [0, 1], 0.5)
    with pytest.raises(ValueError, match="new_rows"):
        transfer.replay_mix([], [0, 1], 0.5)


class Fixed(torch.nn.Module):
    """Predicts class 1 exactly when the first token id is odd."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **kwargs):
        odd = (input_ids[:, 0] % 2).float()
        return SimpleNamespace(logits=torch.stack([1 - odd, odd], dim=1) + 0 * self.w)


def test_accuracy_and_predict():
    rows = [{"ids": [i], "label": lab} for i, lab in zip(range(10), [0, 1, 0, 1, 0, 0, 0, 0, 1, 1])]

    def collate(rs):
        return {"input_ids": torch.tensor([r["ids"] for r in rs]), "labels": torch.tensor([r["label"] for r in rs])}

    model = Fixed().train()
    assert transfer.predict(model, rows, collate, batch_size=3).tolist() == [0, 1] * 5
    assert transfer.classifier_accuracy(model, rows, collate, batch_size=4) == pytest.approx(0.7)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="rows"):
        transfer.predict(model, [], collate)


def test_lr_range_test_restores_and_grows(rows):
    model, collate = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = transfer.lr_range_test(model, rows, collate, min_lr=1e-6, max_lr=1e-1, steps=6, batch_size=8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    lrs = out["lrs"]
    assert lrs[0] == pytest.approx(1e-6) and len(lrs) == len(out["losses"]) == len(out["smoothed"])
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([10 ** (5 / 5)] * len(ratios))
    assert lrs[0] <= out["steepest"] <= lrs[-1]
    # the smoothed curve is the bias-corrected EMA of the losses
    avg = 0.0
    for t, (loss, sm) in enumerate(zip(out["losses"], out["smoothed"])):
        avg = 0.7 * avg + 0.3 * loss
        assert sm == pytest.approx(avg / (1 - 0.7 ** (t + 1)))


def test_lr_range_test_stops_on_divergence(rows):
    model, collate = tiny()
    out = transfer.lr_range_test(model, rows, collate, min_lr=1e-4, max_lr=1e4, steps=40, batch_size=8,
                                 max_grad_norm=None, diverge=1.5)
    assert out["stopped_early"] and len(out["lrs"]) < 40


@pytest.mark.parametrize("kwargs,name", [(dict(min_lr=0), "min_lr"), (dict(min_lr=1, max_lr=0.1), "max_lr"),
                                         (dict(steps=2), "steps"), (dict(beta=1.0), "beta")])
def test_lr_range_test_errors(rows, kwargs, name):
    model, collate = tiny()
    with pytest.raises(ValueError, match=name):
        transfer.lr_range_test(model, rows, collate, **kwargs)


def test_trainer_run_matches_ftlab_train(rows, tmp_path):
    ours, collate = tiny(dropout=False)
    theirs, _ = tiny(dropout=False)
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, progress=False)
    h1 = train(ours, rows, cfg, collate=collate)
    h2 = compare.hf.trainer_run(theirs, rows, cfg, collate, output_dir=str(tmp_path))
    assert h2["step"] == [1, 2, 3, 4]
    assert max(abs(a - b) for a, b in zip(h1["loss"], h2["loss"])) <= 1e-6
    pairs = zip(ours.state_dict().values(), theirs.state_dict().values())
    assert max((a - b).abs().max().item() for a, b in pairs) <= 1e-6
    with pytest.raises(ValueError, match="micro_batch_size"):
        compare.hf.trainer_run(theirs, rows, replace(cfg, micro_batch_size=4), collate, output_dir=str(tmp_path))
