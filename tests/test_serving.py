"""ftlab.serving: a batch mixing adapters equals running each adapter on its own, and equals peft's mixed batch."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ftlab import compare, data, models, serving
from ftlab.tuners import lora

NAMES = ["movies", "electronics", "__base__", "electronics", "movies", "movies"]
# The gathered update sums the same products as the per-adapter one, through a different kernel (bmm vs
# matmul), so results may differ by float32 rounding of the activations (about 1e-7 relative per layer).
ATOL = 1e-5


def random_adapters(base, n=2, scale=0.05):
    """lora_state_dicts with every trained tensor (A, B, head) moved off its init, so each adapter matters."""
    sds = {}
    for i, name in enumerate(["movies", "electronics"][:n]):
        torch.manual_seed(i + 1)
        m = copy.deepcopy(base)
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * scale)
        sds[name] = lora.lora_state_dict(m)
    return sds


def one_adapter_at_a_time(plain, base, sds, names, inputs):
    """Swap each adapter into one model (or disable LoRA for the base) and keep the rows that asked for it."""
    out = None
    model = copy.deepcopy(base)
    for name in set(names):
        if name == serving.BASE:
            logits = plain(**inputs).logits
        else:
            lora.load_lora_state_dict(model, sds[name])
            logits = model(**inputs).logits
        rows = [i for i, a in enumerate(names) if a == name]
        out = torch.empty_like(logits) if out is None else out
        out[rows] = logits[rows]
    return out


@pytest.fixture(scope="module")
def encoder():
    enc, tok = models.load("tiny-bert", task="classification")
    base = lora.add_lora(copy.deepcopy(enc), ["query", "value"], r=4, alpha=8, trainable=["classifier"])
    inputs = data.ClassificationCollator(tok, 64)(data.load("sentiment", "test", n=len(NAMES)))
    inputs.pop("labels")
    return enc, base, random_adapters(base), inputs


@torch.no_grad()
def test_mixed_batch_equals_one_adapter_at_a_time(encoder):
    enc, base, sds, inputs = encoder
    server = serving.MultiAdapterModel(base, sds)
    mixed = server(NAMES, **inputs).logits
    alone = one_adapter_at_a_time(enc, base, sds, NAMES, inputs)
    torch.testing.assert_close(mixed, alone, atol=ATOL, rtol=0)
    # the adapters really differ, so routing a row to the wrong one would fail the check above
    other = server(["electronics" if a == "movies" else "movies" for a in NAMES], **inputs).logits
    assert (other - mixed).abs().max() > 100 * ATOL


@torch.no_grad()
def test_mixed_batch_equals_peft_adapter_names(encoder):
    enc, base, sds, inputs = encoder
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS",
                        modules_to_save=["classifier"])
    peft_model = get_peft_model(copy.deepcopy(enc), config, adapter_name="movies")
    peft_model.add_adapter("electronics", config)
    holder = copy.deepcopy(base)
    for name, sd in sds.items():
        lora.load_lora_state_dict(holder, sd)
        compare.peft.copy_lora_to_peft(holder, peft_model, adapter=name)
    peft_model.eval()
    theirs = peft_model(**inputs, adapter_names=NAMES).logits
    ours = serving.MultiAdapterModel(base, sds)(NAMES, **inputs).logits
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@torch.no_grad()
def test_decoder_mixed_batch():
    lm, tok = models.load("tiny-llama")
    base = lora.add_lora(copy.deepcopy(lm), "all-linear", r=4, alpha=8)
    sds = random_adapters(base)
    rows = [{"text": r["prompt"]} for r in data.load("instructions", "test", n=4)]
    inputs = data.CausalLMCollator(tok, 64)(rows)
    inputs.pop("labels")
    names = ["electronics", "movies", "movies", "__base__"]
    mixed = serving.MultiAdapterModel(base, sds)(names, **inputs).logits
    torch.testing.assert_close(mixed, one_adapter_at_a_time(lm, base, sds, names, inputs), atol=ATOL, rtol=0)


def test_bad_requests_are_named(encoder):
    _, base, sds, inputs = encoder
    server = serving.MultiAdapterModel(base, sds)
    with pytest.raises(KeyError, match="unknown adapters"):
        server(["movies"] * 5 + ["poetry"], **inputs)
    with pytest.raises(ValueError, match="adapter_names has 2 entries"):
        server(["movies", "movies"], **inputs)
    with pytest.raises(ValueError, match="no LoRA layers"):
        serving.MultiAdapterModel(torch.nn.Linear(2, 2), sds)
    with pytest.raises(ValueError, match="adapters must be"):
        serving.MultiAdapterModel(base, {})


def test_adapter_of_another_rank_is_refused(encoder):
    enc, base, sds, _ = encoder
    other = lora.add_lora(copy.deepcopy(enc), ["query", "value"], r=2, alpha=4, trainable=["classifier"])
    with pytest.raises(ValueError, match="same targets and rank"):
        serving.MultiAdapterModel(base, {**sds, "small": lora.lora_state_dict(other)})


def test_adapter_bytes(encoder):
    _, base, sds, _ = encoder
    server = serving.MultiAdapterModel(base, sds)
    one = sum(t.numel() * t.element_size() for t in sds["movies"].values())
    assert server.adapter_bytes() == 3 * one  # base slot (zeros, untrained head) + two adapters
