"""LoRA from scratch (ftlab.tuners.lora) against peft: copied weights, bit-identical outputs and gradients."""

import copy
import math
import re
import warnings

import pytest
import torch
from torch import nn

from ftlab import compare, data, models
from ftlab.losses import IGNORE_INDEX
from ftlab.tuners import lora

TEXTS = ["LoRA trains two small matrices per layer.", "The base model stays frozen, so many adapters share it."]


def lm_batch(tok, texts=TEXTS):
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    return {**batch, "labels": labels}


def cls_batch(tok, labels=(0, 1)):
    return {**dict(tok(TEXTS, padding=True, return_tensors="pt")), "labels": torch.tensor(labels)}


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny-llama")


# --- the layer ------------------------------------------------------------------------------------

def test_fresh_layer_is_the_base_and_shapes_follow_the_issue():
    torch.manual_seed(0)
    base = nn.Linear(48, 32)
    layer = lora.LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 5, 48)
    assert torch.equal(layer(x), base(x))  # B = 0: the update starts at exactly zero
    assert layer.lora_A.weight.shape == (4, 48) and layer.lora_B.weight.shape == (32, 4)
    assert not torch.any(layer.lora_B.weight)
    bound = 1 / math.sqrt(48)  # kaiming_uniform(a=sqrt(5)) on fan_in 48 draws from U(-1/sqrt(48), 1/sqrt(48))
    assert layer.lora_A.weight.abs().max() <= bound and layer.lora_A.weight.std() > bound / 3
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.weight.requires_grad and layer.lora_B.weight.requires_grad
    assert layer.scaling == 2.0
    assert lora.LoRALinear(nn.Linear(8, 8), r=16, alpha=8, use_rslora=True).scaling == 2.0  # alpha / sqrt(r)


def test_forward_is_base_plus_scaled_low_rank_update():
    torch.manual_seed(1)
    layer = lora.LoRALinear(nn.Linear(16, 12), r=3, alpha=6)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(7, 16)
    want = x @ layer.base.weight.T + layer.base.bias + 2.0 * (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, word", [(dict(r=0, alpha=8), "r must"), (dict(r=2.5, alpha=8), "r must"),
                                          (dict(r=4, alpha=0), "alpha"), (dict(r=4, alpha=8, dropout=1.0), "dropout"),
                                          (dict(r=4, alpha=math.inf), "alpha must be a finite"),
                                          (dict(r=4, alpha=math.nan), "alpha")])
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        lora.LoRALinear(nn.Linear(4, 4), **kwargs)
    with pytest.raises(TypeError, match="base"):
        lora.LoRALinear(nn.Embedding(4, 4), r=2, alpha=2)


def test_merge_equals_unmerged_and_unmerge_restores():
    torch.manual_seed(2)
    layer = lora.LoRALinear(nn.Linear(64, 64), r=8, alpha=16)
    nn.init.normal_(layer.lora_B.weight, std=0.1)
    w0, x = layer.base.weight.detach().clone(), torch.randn(4, 64)
    before = layer(x)
    layer.merge()
    # (W + s B A) x and W x + s B (A x) round differently: float32 rounding of sums of 64 terms.
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    layer.unmerge()
    # Subtracting the same delta gives W back to within one float32 rounding of each element.
    assert (layer.base.weight - w0).abs().max() <= 2 * torch.finfo(torch.float32).eps * w0.abs().max()
    w1, before = layer.base.weight.detach().clone(), layer(x)
    layer.merge(keep_original=True)
    layer.unmerge()
    assert torch.equal(layer.base.weight, w1)  # the kept copy restores W bit for bit
    assert torch.equal(layer(x), before)


# --- injection ------------------------------------------------------------------------------------

def test_add_lora_targets_freezes_and_counts(tiny):
    model = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj", "v_proj"], r=4, alpha=8)
    wrapped = lora.lora_layers(model)
    assert sorted(wrapped) == sorted(f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj"))
    expected = sum(4 * (m.in_features + m.out_features) for m in wrapped.values())
    assert lora.count_trainable(model) == expected
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())
    everything = lora.add_lora(copy.deepcopy(tiny[0]), "all-linear", r=2, alpha=2)
    assert "lm_head" not in lora.lora_layers(everything) and len(lora.lora_layers(everything)) == 2 * 7


def test_add_lora_rejects_unknown_targets(tiny):
    with pytest.raises(ValueError, match="target_modules.*query.*q_proj"):
        lora.add_lora(copy.deepcopy(tiny[0]), ["query"], r=2, alpha=2)
    with pytest.raises(ValueError, match="target_modules"):
        lora.add_lora(copy.deepcopy(tiny[0]), "all-layers", r=2, alpha=2)
    with pytest.raises(ValueError, match="trainable"):
        lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj"], r=2, alpha=2, trainable=["classifier"])


def test_add_lora_twice_keeps_the_first_adapter_training(tiny):
    """The second call used to freeze everything and re-enable only its own targets (R20)."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    lora.add_lora(model, ["o_proj"], r=2, alpha=4, trainable=["model.norm"])
    lora.add_lora(model, ["q_proj"], r=4, alpha=8)
    lora.add_lora(model, ["v_proj"], r=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora.lora_state_dict(model)), "what is saved must be what trains"
    assert {n.split(".")[-3] for n in trainable if ".lora_" in n} == {"o_proj", "q_proj", "v_proj"}
    assert model.lora_trainable_modules == ["model.norm"]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():  # B = 0 gives A no gradient at first: give B some values
        if p.requires_grad and p.dim() == 2 and p.shape[1] in (2, 4):
            torch.nn.init.normal_(p.data, std=0.1)
    batch = lm_batch(tok)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch).loss.backward()
    opt.step()
    moved = {n.rsplit(".", 3)[-3] for n, p in model.named_parameters() if p.requires_grad and ".lora_A" in n
             and not torch.equal(p, before[n])}
    assert moved == {"o_proj", "q_proj", "v_proj"}


def test_add_lora_on_an_adapted_layer_says_so(tiny):
    model = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match=r"\['q_proj'\] already have LoRA .*model.layers.0.self_attn.q_proj"):
        lora.add_lora(model, ["q_proj", "k_proj"], r=8, alpha=8)
    assert lora.lora_layers(model)["model.layers.0.self_attn.q_proj"].r == 4


def test_rank_above_the_layer_width_warns_why(tiny):
    with pytest.warns(UserWarning, match=r"r=40 exceeds min\(in_features, out_features\).*k_proj: 32.*expressiveness"):
        lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj", "k_proj"], r=40, alpha=8)  # q: 64 wide, k: 32 wide
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lora.add_lora(copy.deepcopy(tiny[0]), ["k_proj"], r=32, alpha=8)  # full rank, not more


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_loading_a_non_finite_adapter_is_refused(tiny, bad):
    model = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj"], r=4, alpha=8)
    sd = lora.lora_state_dict(model)
    key = "model.layers.1.self_attn.q_proj.lora_B.weight"
    sd[key][0, 0] = bad
    with pytest.raises(ValueError, match=re.escape(key) + ".*NaN or infinity"):
        lora.load_lora_state_dict(model, sd)
    assert torch.isfinite(lora.lora_state_dict(model)[key]).all()


def test_state_dict_round_trip_and_clear_errors(tiny):
    model = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj", "v_proj"], r=4, alpha=8)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    batch = lm_batch(tiny[1])
    want = model(**batch).logits
    sd = lora.lora_state_dict(model)
    assert set(sd) == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj", "v_proj"], r=4, alpha=8)
    assert not torch.equal(fresh(**batch).logits, want)
    lora.load_lora_state_dict(fresh, sd)
    assert torch.equal(fresh(**batch).logits, want)
    sd["model.layers.0.self_attn.q_proj.lora_A.weight"].add_(1)  # the state dict holds copies ...
    assert torch.equal(fresh(**batch).logits, want)  # ... so editing it does not touch the model
    with pytest.raises(KeyError, match="missing"):
        lora.load_lora_state_dict(fresh, {k: v for k, v in sd.items() if "layers.1" not in k})
    other_rank = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj", "v_proj"], r=2, alpha=8)
    with pytest.raises(ValueError, match="rank"):
        lora.load_lora_state_dict(other_rank, sd)


def test_merge_lora_unloads_to_plain_linear_layers(tiny):
    model = lora.add_lora(copy.deepcopy(tiny[0]), "all-linear", r=4, alpha=8)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.weight.normal_(std=0.05)
    batch = lm_batch(tiny[1])
    want = model(**batch).logits
    merged = lora.merge_lora(model)
    assert not lora.lora_layers(merged)
    assert type(merged.model.layers[0].self_attn.q_proj) is nn.Linear
    torch.testing.assert_close(merged(**batch).logits, want, atol=1e-5, rtol=1e-5)


# --- parity with peft -------------------------------------------------------------------------------

@pytest.mark.parametrize("targets, rslora", [(["q_proj", "k_proj", "v_proj", "o_proj"], False), ("all-linear", True)])
def test_tiny_llama_matches_peft_bit_for_bit(tiny, targets, rslora):
    ours, theirs = compare.peft.lora_pair(tiny[0], targets, r=8, alpha=16, use_rslora=rslora)
    result = compare.peft.parity(ours, theirs, lm_batch(tiny[1]))
    assert result["grad_max_abs_value"] > 0  # B was made non-zero, so A's gradients are not trivially 0
    assert result["exact"], result  # same operations in the same order: no tolerance needed


def test_copy_both_ways_and_mismatches_fail(tiny):
    ours, theirs = compare.peft.lora_pair(tiny[0], ["q_proj", "v_proj"], r=4, alpha=8)
    with torch.no_grad():
        for layer in lora.lora_layers(ours).values():
            layer.lora_A.weight.add_(0.5)
    assert compare.peft.copy_lora_to_peft(ours, theirs) == 8
    batch = lm_batch(tiny[1])
    assert torch.equal(ours(**batch).logits, theirs(**batch).logits)
    wrong_alpha = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj", "v_proj"], r=4, alpha=4)
    with pytest.raises(ValueError, match="scaling"):
        compare.peft.copy_lora_from_peft(wrong_alpha, theirs)
    wrong_targets = lora.add_lora(copy.deepcopy(tiny[0]), ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match="different layers"):
        compare.peft.copy_lora_from_peft(wrong_targets, theirs)


def test_merge_matches_peft_merge_and_unload(tiny):
    ours, theirs = compare.peft.lora_pair(tiny[0], "all-linear", r=4, alpha=8)
    ours = lora.merge_lora(ours)
    theirs = theirs.merge_and_unload()
    ours_w, theirs_w = ours.state_dict(), theirs.state_dict()
    assert set(ours_w) == set(theirs_w)
    assert all(torch.equal(ours_w[k], theirs_w[k]) for k in ours_w)  # W + (B @ A) * s, same op order


def test_training_steps_match_peft(tiny):
    from ftlab import train

    _, tok = tiny
    rows = [{"text": r["prompt"] + " " + r["response"]} for r in data.load("instructions", "train", n=24)]
    ours, theirs = compare.peft.lora_pair(tiny[0], ["q_proj", "v_proj"], r=4, alpha=8)
    cfg = train.TrainConfig(steps=4, batch_size=8, micro_batch_size=4, lr=1e-2, max_grad_norm=None, progress=False)
    collate = data.CausalLMCollator(tok, 64)
    ours_hist, theirs_hist = (train.train(m, rows, cfg, collate=collate) for m in (ours, theirs))
    assert ours_hist["loss"] == theirs_hist["loss"]
    batch = lm_batch(tok)
    assert torch.equal(ours(**batch).logits, theirs(**batch).logits)


@pytest.mark.slow
@pytest.mark.parametrize("targets", [["q_proj", "k_proj", "v_proj", "o_proj"], "all-linear"])
def test_smollm2_matches_peft(targets):
    base, tok = models.load("smollm2-135m")
    ours, theirs = compare.peft.lora_pair(base, targets, r=8, alpha=16)
    result = compare.peft.parity(ours, theirs, lm_batch(tok))
    assert result["n_grads"] == 2 * 30 * (4 if isinstance(targets, list) else 7)
    assert result["exact"], result


@pytest.mark.slow
def test_minilm_classifier_matches_peft():
    base, tok = models.load("minilm", task="classification")
    ours, theirs = compare.peft.lora_pair(base, ["query", "value"], r=8, alpha=16, trainable=["classifier"],
                                     task_type="SEQ_CLS")
    result = compare.peft.parity(ours, theirs, cls_batch(tok))
    assert result["n_grads"] == 2 * 6 * 2 + 2  # A and B of 12 layers, classifier weight and bias
    assert result["exact"], result


QUIET = r"""
import logging, warnings
import ftlab
from ftlab import models
from peft import LoraConfig, get_peft_model
model, _ = models.load("tiny-llama")
get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))  # reads is_gradient_checkpointing
log = logging.getLogger("bitsandbytes.backends.cpu.ops")  # logs this at import on CPUs with AVX512-BF16
log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
            "`pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
log.warning("another bitsandbytes warning")
warnings.warn("another FutureWarning", FutureWarning)
"""


def test_importing_ftlab_hides_exactly_the_two_harmless_library_messages():
    """Browser review, defect 7: red stderr in chapter 03 and lab 03 from bitsandbytes and peft."""
    import subprocess
    import sys
    err = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True, timeout=300).stderr
    assert "is_gradient_checkpointing" not in err and "kernels-community" not in err, err
    assert "another bitsandbytes warning" in err and "another FutureWarning" in err, err
