"""Bottleneck adapters (ftlab.tuners.adapters): identity at init, the parameter-count formula, freezing,
several adapters on one base, and clear errors."""

import pytest
import torch

from ftlab import models
from ftlab.tuners import adapters as ad


def _bert():
    model, tok = models.load("tiny-bert", task="classification", device="cpu")
    batch = tok(["a fine film", "the battery died after a week of use"], padding=True, return_tensors="pt")
    return model, dict(batch)


def _llama():
    model, tok = models.load("tiny-llama", device="cpu")
    batch = tok(["hello there", "a longer line of text to pad"], padding=True, return_tensors="pt")
    return model, {k: v for k, v in batch.items() if k != "token_type_ids"}


CASES = {"tiny-bert": _bert, "tiny-llama": _llama}
# Pfeiffer's adapter follows the feed-forward Add&Norm, which only post-norm (BERT) blocks have.
VALID = [(name, placement) for name in CASES for placement in ad.PLACEMENTS
         if not (name == "tiny-llama" and placement == "pfeiffer")]


def _adapter_numel(model):
    return sum(p.numel() for layer in ad.adapter_layers(model).values() for p in layer.adapters.parameters())


@pytest.mark.parametrize("name, placement", VALID)
def test_identity_at_init(name, placement):
    model, batch = CASES[name]()
    with torch.no_grad():
        before = model(**batch).logits
        ad.add_adapters(model, reduction_factor=8, placement=placement)
        after = model(**batch).logits
    assert torch.equal(before, after)  # W_up = 0, b_up = 0: exactly the base model
    assert len(ad.adapter_layers(model)) == (2 if placement == "houlsby" else 1) * model.config.num_hidden_layers


@pytest.mark.parametrize("rf", [4, 16, 64])
@pytest.mark.parametrize("name, placement", VALID)
def test_param_count_formula(name, rf, placement):
    model, _ = CASES[name]()
    d, L = model.config.hidden_size, model.config.num_hidden_layers
    ad.add_adapters(model, reduction_factor=rf, placement=placement)
    m = d // rf
    per_adapter = 2 * d * m + d + m
    assert _adapter_numel(model) == ad.adapter_param_count(d, L, rf, placement) == \
        L * (2 if placement == "houlsby" else 1) * per_adapter
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == _adapter_numel(model)


def test_only_adapters_and_named_modules_train():
    model, batch = _bert()
    ad.add_adapters(model, trainable=["classifier"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.default." in n or n.startswith("classifier.") for n in trainable)
    assert {n for n in trainable if n.startswith("classifier.")} == {"classifier.weight", "classifier.bias"}
    for layer in ad.adapter_layers(model).values():  # give W_up a value so every adapter weight gets a gradient
        torch.nn.init.normal_(layer.adapters["default"].up.weight, std=0.1)
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_train_layer_norms():
    model, _ = _llama()
    ad.add_adapters(model, placement="houlsby", train_layer_norms=True)
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == _adapter_numel(model) + norms


def test_adapter_changes_output_and_sits_before_residual():
    model, batch = _llama()
    with torch.no_grad():
        base = model(**batch).logits
    ad.add_adapters(model, placement="houlsby")
    site = next(iter(ad.adapter_layers(model).values()))
    with torch.no_grad():
        site.adapters["default"].up.bias.fill_(0.5)
        x = torch.randn(3, site.base.in_features)
        # the adapted projection is A(W x): the base projection followed by h + up(f(down(h)))
        h = site.base(x)
        a = site.adapters["default"]
        assert torch.allclose(site(x), h + a.up(torch.nn.functional.gelu(a.down(h))))
        assert not torch.equal(model(**batch).logits, base)


def _adapterhub_pfeiffer(block_output, x, r, adapter):
    """AdapterHub's SeqBnConfig path through BertOutput, written out from its pre_forward / forward /
    post_forward with original_ln_before=True, residual_before_ln=True, original_ln_after=True."""
    s = block_output.dropout(block_output.dense(x))          # the sublayer output, before the Add&Norm
    residual = s                                             # residual_before_ln=True: taken before the norm
    h = block_output.LayerNorm(s + r)                        # original_ln_before: the block's Add&Norm
    out = adapter.up(torch.relu(adapter.down(h))) + residual
    return block_output.LayerNorm(out + r)                   # original_ln_after: the norm again, with r


def test_pfeiffer_follows_the_feed_forward_add_norm():
    model, batch = _bert()
    ad.add_adapters(model, placement="pfeiffer")
    layers = ad.adapter_layers(model)
    assert sorted(layers) == [f"bert.encoder.layer.{i}.output" for i in range(model.config.num_hidden_layers)]
    site = next(iter(layers.values()))
    adapter = site.adapters["default"]
    assert isinstance(adapter.act, torch.nn.ReLU)  # AdapterHub's Pfeiffer configuration
    with torch.no_grad():
        torch.nn.init.normal_(adapter.up.weight, std=0.5)
        torch.nn.init.normal_(adapter.up.bias, std=0.5)
        x = torch.randn(2, 5, site.base.dense.in_features)
        r = torch.randn(2, 5, site.base.dense.out_features)
        ours = site(x, r)
        theirs = _adapterhub_pfeiffer(site.base, x, r, adapter)
        # the Houlsby-style placement (adapter on the projection, before the Add&Norm) is a different function
        before_norm = site.base.LayerNorm(adapter(site.base.dense(x)) + r)
    assert torch.equal(ours, theirs)
    assert (ours - before_norm).abs().max() > 1e-2


def test_pfeiffer_needs_a_post_norm_block():
    model, _ = _llama()
    with pytest.raises(ValueError, match="pfeiffer.*Add&Norm.*houlsby"):
        ad.add_adapters(model, placement="pfeiffer")
    assert not ad.adapter_layers(model)  # nothing was changed


def test_one_placement_per_model():
    model, _ = _bert()
    ad.add_adapters(model, placement="pfeiffer", name="a")
    with pytest.raises(ValueError, match="same placement"):
        ad.add_adapters(model, placement="houlsby", name="b")
    assert ad.adapter_names(model) == ["a"]


@pytest.mark.parametrize("placement", ad.PLACEMENTS)
def test_several_adapters_on_one_base(placement):
    model, batch = _bert()
    with torch.no_grad():
        base = model(**batch).logits
    ad.add_adapters(model, name="movies", placement=placement)
    ad.add_adapters(model, name="electronics", placement=placement)
    assert ad.adapter_names(model) == ["movies", "electronics"]
    # only the newest adapter trains
    assert all(("electronics" in n) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for i, layer in enumerate(ad.adapter_layers(model).values()):
            layer.adapters["movies"].up.bias.fill_(0.1 * (i + 1))
            layer.adapters["electronics"].up.bias.fill_(-0.2)
            # a second stacked adapter must read the first one's output: give it a weight that reads its input
            torch.nn.init.normal_(layer.adapters["electronics"].up.weight, std=0.5)
        ad.set_active_adapters(model, "movies")
        movies = model(**batch).logits
        ad.set_active_adapters(model, "electronics")
        elec = model(**batch).logits
        ad.set_active_adapters(model, ["movies", "electronics"])
        stacked = model(**batch).logits
        ad.set_active_adapters(model, None)
        assert torch.equal(model(**batch).logits, base)
    assert not torch.equal(movies, elec) and not torch.equal(stacked, movies) and not torch.equal(stacked, elec)

    sd = ad.adapter_state_dict(model, "movies")
    assert all(".adapters.movies." in k for k in sd)
    fresh, _ = _bert()
    ad.add_adapters(fresh, name="movies", placement=placement)
    ad.load_adapter_state_dict(fresh, sd, "movies")
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, movies)
    ad.remove_adapters(fresh)
    assert not ad.adapter_layers(fresh)
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, base)


@pytest.mark.parametrize("kwargs, word", [
    (dict(placement="parallel"), "placement"), (dict(nonlinearity="swish"), "nonlinearity"),
    (dict(reduction_factor=0), "reduction_factor"), (dict(reduction_factor=1000), "reduction_factor"),
    (dict(trainable=["nothing_here"]), "trainable"), (dict(name=""), "name"),
])
def test_bad_arguments_name_the_argument(kwargs, word):
    model, _ = _bert()
    with pytest.raises(ValueError, match=word):
        ad.add_adapters(model, **kwargs)


def test_errors():
    with pytest.raises(ValueError, match="no transformer block"):
        ad.add_adapters(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    model, _ = _bert()
    ad.add_adapters(model)
    with pytest.raises(ValueError, match="exists already"):
        ad.add_adapters(model)
    with pytest.raises(ValueError, match="active"):
        ad.set_active_adapters(model, "missing")
    with pytest.raises(KeyError, match="missing"):
        ad.load_adapter_state_dict(model, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="placement"):
        ad.adapter_param_count(64, 2, 16, "both")
    with pytest.raises(ValueError, match="hidden"):
        ad.BottleneckAdapter(0, 4)


@pytest.mark.slow
def test_minilm_houlsby_count_and_identity():
    model, tok = models.load("minilm", task="classification", device="cpu")
    batch = dict(tok(["what a film"], return_tensors="pt"))
    with torch.no_grad():
        before = model(**batch).logits
        ad.add_adapters(model, reduction_factor=16, placement="houlsby", trainable=["classifier"])
        assert torch.equal(model(**batch).logits, before)
    # 6 blocks x 2 adapters x (2 * 384 * 24 + 384 + 24)
    assert _adapter_numel(model) == ad.adapter_param_count(384, 6, 16, "houlsby") == 226_080
