"""Prompt tuning and prefix tuning (ftlab.tuners.prompt, ftlab.tuners.prefix): parity with peft on copied
weights, parameter counts, initialisation, the cache path, training through ftlab.train, and clear errors."""

import pytest
import torch

from ftlab import compare, data, losses, models
from ftlab.tuners.prefix import PrefixTuning, prefix_param_count, prefix_shape
from ftlab.tuners.prompt import PromptTuning, frequent_token_ids, prompt_param_count


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
    pool = [5, 9, 11]
    vocab = PromptTuning(base, 5, init="vocab", vocab_ids=pool, seed=3)
    assert set(vocab.init_token_ids) <= set(pool) and torch.equal(vocab.prompt, table[vocab.init_token_ids])
    rand = PromptTuning(base, 200, init="random")
    assert abs(rand.prompt.std().item() / table.std().item() - 1) < 0.1


def test_label_init_averages_each_word_then_draws_from_the_pool(llama):
    base, tok, _ = llama
    table = base.get_input_embeddings().weight
    words = ["negative", "positive"]
    model = PromptTuning(base, 4, init="labels", label_words=words, tokenizer=tok, vocab_ids=[7, 8], seed=1)
    for i, word in enumerate(words):
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert torch.allclose(model.prompt[i], table[ids].mean(0))
    assert set(model.init_token_ids) <= {7, 8} and len(model.init_token_ids) == 2
    assert torch.equal(model.prompt[2:], table[model.init_token_ids])
    exact = PromptTuning(base, 2, init="labels", label_words=words, tokenizer=tok)  # no pool needed
    assert torch.equal(exact.prompt, model.prompt[:2])


def test_frequent_token_ids_counts_and_skips_special_tokens():
    _, tok = models.load("tiny-bert", task="classification", device="cpu")
    texts = ["the cat saw the dog", "the dog", "a cat"]
    ids = frequent_token_ids(tok, texts, k=3)
    counts = {}
    for t in texts:
        for i in tok(t, add_special_tokens=False)["input_ids"]:
            counts[i] = counts.get(i, 0) + 1
    assert ids == sorted(counts, key=lambda i: (-counts[i], i))[:3]
    assert ids[0] == tok.convert_tokens_to_ids("the")
    assert not set(frequent_token_ids(tok, ["[CLS] the [SEP] [PAD]"])) & set(tok.all_special_ids)
    with pytest.raises(ValueError, match="k"):
        frequent_token_ids(tok, texts, k=0)
    with pytest.raises(ValueError, match="no tokens"):
        frequent_token_ids(tok, ["", ""])


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


def mean_pooled_classifier():
    """tiny-bert under chapter 01's mean-pooled head (dropout off, so train and eval compute the same), and a
    padded batch of two reviews."""
    from ftlab.transfer import MeanPoolClassifier

    body, tok = models.load("tiny-bert", task="base", device="cpu")
    model = MeanPoolClassifier.from_encoder(body, seed=2)
    batch = dict(tok(["good", "bad and long review"], padding=True, return_tensors="pt"))
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # row 0 is padded
    batch["labels"] = torch.tensor([1, 0])
    return model, batch


def masked_mean(hidden, mask):
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


def test_prompt_tuning_on_the_mean_pooled_classifier_averages_the_real_tokens_only():
    model, batch = mean_pooled_classifier()
    wrapper = PromptTuning(model, 3, trainable=["classifier"], seed=1)
    out = wrapper(**batch)
    # by hand: [prompt; token embeddings] through the encoder, then the mean over the real tokens' vectors
    ids, mask = batch["input_ids"], batch["attention_mask"]
    embeds = torch.cat([wrapper.prompt.expand(2, -1, -1), model.get_input_embeddings()(ids)], 1)
    full_mask = torch.cat([mask.new_ones(2, 3), mask], 1)
    assert "token_type_ids" not in batch  # so segment 0 everywhere, BERT's default, is what the wrapper used too
    with torch.no_grad():
        hidden = model.bert(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
        real = model.classifier(masked_mean(hidden[:, 3:], mask))
        everything = model.classifier(masked_mean(hidden, full_mask))
    torch.testing.assert_close(out.logits, real, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.logits, everything, atol=1e-3)  # the test tells the two means apart
    out.loss.backward()
    assert wrapper.prompt.grad.abs().sum() > 0 and model.classifier.weight.grad.abs().sum() > 0


def test_prefix_tuning_reaches_the_mean_pooled_classifier():
    model, batch = mean_pooled_classifier()
    wrapper = PrefixTuning(model, 3, trainable=["classifier"], seed=1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        plain = model(**inputs).logits
        full_mask = torch.cat([batch["attention_mask"].new_ones(2, 3), batch["attention_mask"]], 1)
        hidden = model.bert(**dict(inputs, attention_mask=full_mask),
                            past_key_values=wrapper.cache(2)).last_hidden_state
        want = model.classifier(masked_mean(hidden, batch["attention_mask"]))
    out = wrapper(**batch)
    torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.logits, plain, atol=1e-3)  # the prefix changed what the head reads
    out.loss.backward()
    assert wrapper.embedding.weight.grad.abs().sum() > 0 and model.classifier.weight.grad.abs().sum() > 0


def _greedy_by_full_forward(model, ids, mask, steps):
    """Reference decoding: a whole forward pass per new token, no cache reuse (positions follow the mask)."""
    n = model.n_virtual_tokens
    for _ in range(steps):
        kwargs = {}
        if isinstance(model, PrefixTuning):  # the real tokens sit after the n cached virtual positions
            full = torch.cat([mask.new_ones(mask.shape[0], n), mask], 1)
            kwargs["position_ids"] = (full.cumsum(-1) - 1).clamp_min(0)[:, n:]
        nxt = model(input_ids=ids, attention_mask=mask, **kwargs).logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_generate_matches_decoding_by_full_forward(llama, kind):
    base, tok, _ = llama
    model = PromptTuning(base, 3, seed=1) if kind == "prompt" else PrefixTuning(base, 3, seed=1)
    with torch.no_grad():  # move away from the near-neutral start so the virtual tokens change the output
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    encoded = [tok("hello there")["input_ids"], tok("a longer line of text to pad")["input_ids"]]
    ids, mask = data.left_pad(encoded, tok.pad_token_id), data.left_pad([[1] * len(x) for x in encoded], 0)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)
        want = _greedy_by_full_forward(model, ids, mask, 5)
        # the virtual tokens change what the model predicts, so agreeing with `want` is not agreeing with the base
        assert (model(input_ids=ids, attention_mask=mask).logits[:, -1]
                - base(input_ids=ids, attention_mask=mask).logits[:, -1]).abs().max() > 1e-3
    assert out.shape == (2, ids.shape[1] + 5) and torch.equal(out[:, :ids.shape[1]], ids)  # prompt, then new tokens
    assert torch.equal(out, want)


def test_sft_generate_serves_both_wrappers(llama):
    from ftlab import sft

    base, tok, _ = llama
    for model in (PromptTuning(base, 2), PrefixTuning(base, 2)):
        replies = sft.generate(model, tok, ["Say hi.", "Count to three, please."], max_new_tokens=3)
        assert len(replies) == 2 and all(isinstance(r, str) for r in replies)


@pytest.mark.parametrize("kwargs, word", [
    (dict(n_virtual_tokens=0), "n_virtual_tokens"), (dict(n_virtual_tokens=2.5), "n_virtual_tokens"),
    (dict(n_virtual_tokens=4, init="zeros"), "init"), (dict(n_virtual_tokens=4, init="text"), "init_text"),
    (dict(n_virtual_tokens=4, init="text", init_text="hi"), "tokenizer"),
    (dict(n_virtual_tokens=4, init_text="hi"), "init_text"),
    (dict(n_virtual_tokens=4, init="vocab"), "vocab_ids"),
    (dict(n_virtual_tokens=4, init="vocab", vocab_ids=[]), "vocab_ids"),
    (dict(n_virtual_tokens=4, init="vocab", vocab_ids=[10**9]), "vocab_ids"),
    (dict(n_virtual_tokens=4, vocab_ids=[1]), "vocab_ids"),
    (dict(n_virtual_tokens=4, init="labels", label_words=["yes"]), "tokenizer"),
    (dict(n_virtual_tokens=1, init="labels", label_words=["yes", "no"], tok=True), "label_words"),
    (dict(n_virtual_tokens=4, init="labels", label_words="yes", tok=True), "label_words"),
    (dict(n_virtual_tokens=4, init="labels", label_words=["yes"], tok=True), "vocab_ids"),
    (dict(n_virtual_tokens=4, label_words=["yes"]), "label_words"),
    (dict(n_virtual_tokens=4, trainable=["nope"]), "trainable"),
])
def test_prompt_errors(llama, kwargs, word):
    kwargs = dict(kwargs)
    if kwargs.pop("tok", False):
        kwargs["tokenizer"] = llama[1]
    before = [p.requires_grad for p in llama[0].parameters()]
    with pytest.raises(ValueError, match=word):
        PromptTuning(llama[0], **kwargs)
    assert [p.requires_grad for p in llama[0].parameters()] == before  # a refused call leaves the model as it was


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
