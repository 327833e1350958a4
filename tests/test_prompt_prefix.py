"""Prompt tuning and prefix tuning (ftlab.tuners.prompt, ftlab.tuners.prefix): parity with peft on copied
weights, parameter counts, initialisation, the cache path, training through ftlab.train, and clear errors."""

import pytest
import torch

from ftlab import compare, data, losses, models
from ftlab.tuners.prefix import PrefixTuning, prefix_param_count, prefix_shape
from ftlab.tuners.prompt import PromptTuning, prompt_param_count


@pytest.fixture(scope="module")
def llama():
    model, tok = models.load("tiny-llama", device="cpu")
    rows = data.load("instructions", "train", n=3)
    texts = ["A short line.", rows[1]["prompt"], rows[2]["prompt"] + " " + rows[2]["response"]]
    batch = data.CausalLMCollator(tok, 48)([{"text": t} for t in texts])
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].shape[1]  # some padding in the batch
    return model, tok, batch


KINDS = [("prompt", True), ("prefix", True), ("prefix", False)]


@pytest.mark.parametrize("kind, reparameterize", KINDS)
def test_tiny_llama_matches_peft_exactly(llama, kind, reparameterize):
    base, _, batch = llama
    ours, theirs = compare.peft.prompt_pair(base, kind, 6, reparameterize)
    result = compare.peft.parity(ours, theirs, batch)
    # Same tensors through the same kernels in the same order: bit-identical, no tolerance needed.
    assert result["exact"], result
    assert result["grad_max_abs_value"] > 0  # the check compared real gradients, not zeros


@pytest.mark.parametrize("kind, reparameterize", KINDS)
def test_trainable_counts_match_peft_and_formula(llama, kind, reparameterize):
    base, _, _ = llama
    ours, theirs = compare.peft.prompt_pair(base, kind, 6, reparameterize)
    mine = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert mine == theirs.get_nb_trainable_parameters()[0]
    s = prefix_shape(base.config)
    expected = (prompt_param_count(6, base.config.hidden_size) if kind == "prompt"
                else prefix_param_count(6, s["layers"], s["token_dim"], reparameterize))
    assert mine == expected


def test_prefix_shape_uses_kv_heads():
    model, _ = models.load("tiny-llama", device="cpu")
    # tiny-llama: 4 query heads, 2 KV heads of 16 dims: the cache holds 2 x 16 = 32 numbers per token and layer
    assert prefix_shape(model.config) == {"layers": 2, "kv_heads": 2, "head_dim": 16, "token_dim": 32}


def test_prompt_inits(llama):
    base, tok, _ = llama
    table = base.get_input_embeddings().weight
    text = PromptTuning(base, 7, init="text", init_text="Answer briefly", tokenizer=tok)
    ids = tok("Answer briefly")["input_ids"]
    want = (ids * 7)[:7]
    assert text.init_token_ids == want and torch.equal(text.prompt, table[want])
    vocab = PromptTuning(base, 5, init="vocab", seed=3)
    assert torch.equal(vocab.prompt, table[vocab.init_token_ids])
    rand = PromptTuning(base, 200, init="random")
    assert abs(rand.prompt.std().item() / table.std().item() - 1) < 0.1


def test_prefix_reaches_every_layer_through_the_cache(llama):
    base, _, batch = llama
    model = PrefixTuning(base, 4, reparameterize=False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        plain = base(**inputs).logits
        out = model(**inputs)
        assert out.logits.shape == plain.shape  # the prefix adds keys/values, not positions
        assert out.past_key_values.get_seq_length() == 4 + batch["input_ids"].shape[1]
        assert not torch.allclose(out.logits, plain)
        for layer in range(base.config.num_hidden_layers):  # changing one layer's prefix changes the output
            w = model.embedding.weight.view(4, 2 * base.config.num_hidden_layers, -1)
            saved = w[:, 2 * layer].clone()
            w[:, 2 * layer] += 1.0
            assert not torch.equal(model(**inputs).logits, out.logits)
            w[:, 2 * layer] = saved


def test_bake_keeps_outputs(llama):
    base, _, batch = llama
    model = PrefixTuning(base, 4, reparameterize=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).logits
        n_before = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model.bake()
        after = model(**inputs).logits
    assert model.mlp is None and sum(p.numel() for p in model.parameters() if p.requires_grad) < n_before
    # the MLP ran once per row before and once after baking: same math, rounding may differ
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_summed_loss_matches_peft_loss(llama):
    base, _, batch = llama
    ours, theirs = compare.peft.prompt_pair(base, "prompt", 5)
    n_targets = batch["labels"].ne(-100).sum()  # after padding by 5 and shifting by 1: every real label counts
    with torch.no_grad():
        ours_loss = losses.summed_loss(ours, batch) / n_targets
        torch.testing.assert_close(ours_loss, theirs(**batch).loss, atol=1e-6, rtol=1e-6)


def test_trains_with_ftlab_train_and_leaves_base_alone():
    from ftlab.train import TrainConfig, train

    base, tok = models.load("tiny-llama", device="cpu")
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    rows = [{"text": r["prompt"] + " " + r["response"]} for r in data.load("instructions", "train", n=8)]
    collate = data.CausalLMCollator(tok, 32)
    for model in (PromptTuning(base, 4), PrefixTuning(base, 4)):
        start = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        hist = train(model, rows, TrainConfig(steps=3, batch_size=4, lr=1e-2, progress=False), collate=collate)
        assert len(hist["loss"]) == 3
        trained = [p for p in model.parameters() if p.requires_grad]
        assert all(not torch.equal(a, b) for a, b in zip(start, trained))
    assert all(torch.equal(frozen[k], v) for k, v in base.state_dict().items())


def test_encoder_classification():
    model, tok = models.load("tiny-bert", task="classification", device="cpu")
    batch = dict(tok(["good", "bad and long review"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    for wrapper in (PromptTuning(model, 3, trainable=["classifier"]),
                    PrefixTuning(model, 3, trainable=["classifier"])):
        out = wrapper(**batch)
        assert out.logits.shape == (2, 2)
        out.loss.backward()
        own = [p for n, p in wrapper.named_parameters() if p.requires_grad and not n.startswith("model.")]
        assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
        assert model.classifier.weight.grad is not None
        model.zero_grad(set_to_none=True)


def test_generate_with_prompt(llama):
    base, tok, _ = llama
    model = PromptTuning(base, 3)
    enc = tok(["hello"], return_tensors="pt")
    out = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 4)


@pytest.mark.parametrize("kwargs, word", [
    (dict(n_virtual_tokens=0), "n_virtual_tokens"), (dict(n_virtual_tokens=2.5), "n_virtual_tokens"),
    (dict(n_virtual_tokens=4, init="zeros"), "init"), (dict(n_virtual_tokens=4, init="text"), "init_text"),
    (dict(n_virtual_tokens=4, init="text", init_text="hi"), "tokenizer"),
    (dict(n_virtual_tokens=4, init_text="hi"), "init_text"),
    (dict(n_virtual_tokens=4, trainable=["nope"]), "trainable"),
])
def test_prompt_errors(llama, kwargs, word):
    with pytest.raises(ValueError, match=word):
        PromptTuning(llama[0], **kwargs)


def test_prefix_errors(llama):
    base, _, batch = llama
    with pytest.raises(ValueError, match="n_virtual_tokens"):
        PrefixTuning(base, -1)
    with pytest.raises(ValueError, match="reparameterize"):
        PrefixTuning(base, 2, reparameterize="yes")
    model = PrefixTuning(base, 2)
    with pytest.raises(ValueError, match="past_key_values"):
        model(input_ids=batch["input_ids"], past_key_values=object())
    with pytest.raises(ValueError, match="kind"):
        compare.peft.prompt_pair(base, "lora", 2)
    ours, theirs = compare.peft.prompt_pair(base, "prefix", 2, reparameterize=True)
    with pytest.raises(ValueError, match="prefix_projection"):
        compare.peft.copy_prefix_from_peft(PrefixTuning(base, 2, reparameterize=False), theirs)


@pytest.mark.slow
@pytest.mark.parametrize("kind, reparameterize", KINDS[:2])
def test_smollm2_matches_peft_exactly(kind, reparameterize):
    base, tok = models.load("smollm2-135m", device="cpu")
    rows = data.load("instructions", "train", n=2)
    batch = data.CausalLMCollator(tok, 24)([{"text": r["prompt"] + " " + r["response"]} for r in rows])
    result = compare.peft.parity(*compare.peft.prompt_pair(base, kind, 4, reparameterize), batch)
    assert result["exact"] and result["grad_max_abs_value"] > 0, result
