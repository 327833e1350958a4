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


# --- mean pooling, the mean-pooled classifier, the linear probe, discriminative learning rates ---------

def encoder_and_collate():
    enc, tok = models.load("tiny-bert", task="base", device="cpu")
    return enc, data.ClassificationCollator(tok, 32)


def test_mean_pool_averages_real_tokens_only():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    want = torch.stack([hidden[i, :int(mask[i].sum())].mean(0) for i in range(3)])  # padding at the end
    assert torch.allclose(transfer.mean_pool(hidden, mask), want, atol=1e-6)
    with pytest.raises(ValueError, match="without any real token"):
        transfer.mean_pool(hidden, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="attention_mask"):
        transfer.mean_pool(hidden, mask[:, :4])


def test_mean_pool_classifier_is_the_encoder_plus_a_linear_head(rows):
    enc, collate = encoder_and_collate()
    state = torch.get_rng_state()
    model = transfer.MeanPoolClassifier.from_encoder(enc, seed=3, labels=["negative", "positive"])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    d = enc.config.hidden_size
    groups = transfer.layer_groups(model)
    assert groups[0][0] == "head" and sum(p.numel() for p in groups[0][1]) == 2 * d + 2  # a linear probe's size
    assert all(torch.equal(v, model.bert.state_dict()[k]) for k, v in enc.state_dict().items()
               if not k.startswith("pooler."))
    same = transfer.MeanPoolClassifier.from_encoder(enc, seed=3)
    other = transfer.MeanPoolClassifier.from_encoder(enc, seed=4)
    assert torch.equal(model.classifier.weight, same.classifier.weight)
    assert not torch.equal(model.classifier.weight, other.classifier.weight)
    # logits, computed independently: the encoder's hidden states, averaged row by row over real tokens
    batch = collate(rows[:6])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        hidden = enc(**inputs).last_hidden_state
        pooled = torch.stack([hidden[i][batch["attention_mask"][i].bool()].mean(0) for i in range(6)])
        want = pooled @ model.classifier.weight.T + model.classifier.bias
        out = model(**batch)
    assert torch.allclose(out.logits, want, atol=1e-5)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(want, batch["labels"]).item(), abs=1e-5)


def test_mean_pool_classifier_saves_with_its_label_names(tmp_path, rows):
    enc, collate = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc, labels=["negative", "positive"])
    model.save_pretrained(tmp_path)
    served = transfer.MeanPoolClassifier.from_pretrained(tmp_path).eval()
    assert served.config.id2label == {0: "negative", 1: "positive"}
    inputs = {k: v for k, v in collate(rows[:4]).items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, served(**inputs).logits)


def test_mean_pool_classifier_errors():
    enc, _ = encoder_and_collate()
    with pytest.raises(TypeError, match="BertModel"):
        transfer.MeanPoolClassifier.from_encoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="labels"):
        transfer.MeanPoolClassifier.from_encoder(enc, num_labels=3, labels=["a", "b"])


def test_pooled_features_match_one_row_at_a_time(rows):
    enc, collate = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc).train()
    x = transfer.pooled_features(model, rows[:10], collate, batch_size=4)
    assert model.training  # mode restored
    with torch.no_grad():  # no padding at all when each row is its own batch
        want = torch.cat([enc(**{k: v for k, v in collate([r]).items() if k != "labels"}).last_hidden_state.mean(1)
                          for r in rows[:10]])
    assert x.shape == (10, enc.config.hidden_size) and torch.allclose(x, want, atol=1e-5)


def separable_ish(n=120, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + 1.5 * torch.nn.functional.one_hot(y, d)[:, :d].float()
    return x, y


def test_fit_linear_probe_is_sklearns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = separable_ish(classes=3)
    l2 = 0.05
    head = transfer.fit_linear_probe(x, y, num_labels=3, l2=l2)
    ref = LogisticRegression(C=1 / (len(y) * l2), tol=1e-12, max_iter=10_000).fit(x.double().numpy(), y.numpy())
    assert torch.allclose(head.weight.double(), torch.from_numpy(ref.coef_), atol=1e-4)
    assert torch.allclose(head.bias.double(), torch.from_numpy(ref.intercept_), atol=1e-4)
    # two classes: scikit-learn keeps one vector, the difference of our two rows; C = 2 / (n * l2)
    x2, y2 = separable_ish(classes=2, seed=1)
    head2 = transfer.fit_linear_probe(x2, y2, l2=l2)
    ref2 = LogisticRegression(C=2 / (len(y2) * l2), tol=1e-12, max_iter=10_000).fit(x2.double().numpy(), y2.numpy())
    with torch.no_grad():
        ours = torch.softmax(head2(x2), -1)[:, 1].double()
    assert torch.allclose(ours, torch.from_numpy(ref2.predict_proba(x2.double().numpy())[:, 1]), atol=1e-5)


@pytest.mark.parametrize("kwargs,name", [(dict(l2=0), "l2"), (dict(num_labels=1), "num_labels"),
                                         (dict(labels=[0, 2, 1]), "labels"),
                                         (dict(features=torch.zeros(4)), "features")])
def test_fit_linear_probe_errors(kwargs, name):
    args = dict(features=torch.zeros(3, 2), labels=[0, 1, 1]) | kwargs
    with pytest.raises(ValueError, match=name):
        transfer.fit_linear_probe(**args)


def test_probe_head_in_the_model_predicts_like_the_probe(rows):
    # LP-FT's starting point: the probe fitted on cached features, copied into the model's head.
    enc, collate = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc, seed=5)
    x = transfer.pooled_features(model, rows, collate)
    probe = transfer.fit_linear_probe(x, [r["label"] for r in rows], l2=1e-2)
    model.classifier.load_state_dict(probe.state_dict())
    with torch.no_grad():
        want = probe(x).argmax(-1)
    assert torch.equal(transfer.predict(model, rows, collate), want)


def test_discriminative_lr_groups_divide_by_the_factor_going_down():
    enc, _ = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc)
    transfer.freeze_to(model, 1)  # frozen parameters are included too, for a callback to switch on
    groups = transfer.discriminative_lr_groups(model, lr=1e-3, factor=2.6, weight_decay=0.01)
    assert [g["name"] for g in groups] == ["head", "block 1", "block 0", "embeddings"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3 / 2.6, 1e-3 / 2.6**2, 1e-3 / 2.6**3])
    assert all(g["weight_decay"] == 0.01 for g in groups)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for bad in (dict(lr=0), dict(factor=0.5), dict(weight_decay=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            transfer.discriminative_lr_groups(model, **({"lr": 1e-3} | bad))


def test_discriminative_lrs_reach_each_group_through_train(rows):
    # Adam's first step moves every weight with a clear gradient by about its group's rate (|m/sqrt(v)| = 1),
    # so the measured step per group recovers lr / 2.6**i: the rates train() applies, computed independently.
    enc, collate = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    before = snapshot(model)
    opt = torch.optim.AdamW(transfer.discriminative_lr_groups(model, lr=1e-3), weight_decay=0.0, eps=1e-12)
    train(model, rows, TrainConfig(steps=1, batch_size=16, lr=1.0, progress=False), collate=collate, optimizer=opt)
    after = dict(model.named_parameters())
    for i, (name, params) in enumerate(transfer.layer_groups(model)):
        ids = {id(p) for p in params}
        steps = torch.cat([(after[n] - before[n]).abs().flatten() for n, p in model.named_parameters() if id(p) in ids])
        moved = steps[steps > 0]
        assert moved.numel() > 0, name
        assert torch.median(moved).item() == pytest.approx(1e-3 / 2.6**i, rel=1e-3), name


def test_discriminative_lrs_with_gradual_unfreezing(rows):
    enc, collate = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc)
    opt = torch.optim.AdamW(transfer.discriminative_lr_groups(model, lr=1e-3))
    cb = transfer.GradualUnfreezing(model, steps_per_stage=1)
    hist = train(model, rows, TrainConfig(steps=4, batch_size=8, progress=False), collate=collate,
                 optimizer=opt, callbacks=[cb])
    assert hist["trainable"][-1] == models.n_params(model)


def test_tied_output_head_sits_with_the_embeddings():
    # Documented in layer_groups: the tied lm_head is the embedding matrix, so it unfreezes last.
    model, _ = models.load("tiny-llama", device="cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    groups = transfer.layer_groups(model)
    assert groups[-1][0] == "embeddings" and any(p is model.lm_head.weight for p in groups[-1][1])
    assert not any(p is model.lm_head.weight for p in groups[0][1])


def test_profiles_compare_methods_over_seeds():
    # Chapter 01 compares methods over runtime.profile().seeds; the learner's profiles afford three or more.
    from ftlab import runtime

    assert runtime.PROFILES["ci"].seeds >= 1
    assert all(runtime.PROFILES[name].seeds >= 3 for name in ("cpu", "gpu"))


def test_lr_range_test_fused_is_the_same_update(rows):
    model, collate = tiny(dropout=False)
    plain = transfer.lr_range_test(model, rows, collate, min_lr=1e-5, max_lr=1e-1, steps=5, batch_size=8)
    fused = transfer.lr_range_test(model, rows, collate, min_lr=1e-5, max_lr=1e-1, steps=5, batch_size=8, fused=True)
    assert fused["lrs"] == plain["lrs"]
    assert fused["losses"] == pytest.approx(plain["losses"], rel=1e-4)


def test_peft_ia3_on_the_mean_pool_classifier_starts_as_identity_and_trains_the_head(rows):
    from peft import IA3Config, get_peft_model

    enc, collate = encoder_and_collate()
    model = transfer.MeanPoolClassifier.from_encoder(enc, seed=1)
    batch = collate(rows[:4])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).logits
    # peft's SEQ_CLS task saves (and trains) a module named "classifier": the head's name must stay that
    wrapped = get_peft_model(model, IA3Config(task_type="SEQ_CLS", target_modules=["key", "value", "output.dense"],
                                              feedforward_modules=["output.dense"]))
    with torch.no_grad():
        assert torch.equal(wrapped(**inputs).logits, before)
    wrapped(**batch).loss.backward()
    trained = {n for n, p in wrapped.named_parameters()
               if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}
    assert any("classifier" in n for n in trained) and any("ia3_l" in n for n in trained)
