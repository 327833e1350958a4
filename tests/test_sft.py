"""Instruction tuning (ftlab.sft): the loss mask, evaluation helpers, and parity with TRL's SFTTrainer."""


import pytest
import torch

from ftlab import compare, data, evaluation, losses, models, sft, train
from ftlab.losses import IGNORE_INDEX


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny-llama")


def test_mask_prompt_worked_example():
    assert sft.mask_prompt([5, 6, 7], [5, 6, 7, 8, 9]) == [-100, -100, -100, 8, 9]
    with pytest.raises(ValueError, match="prefix"):
        sft.mask_prompt([5, 6], [5, 7, 8])


def test_mask_prompt_agrees_with_encode_chat(tiny):
    tok = tiny[1]
    for r in data.load("instructions", "train", n=5):
        full = data.encode_chat(tok, r["prompt"], r["response"])
        prompt = data.encode_chat(tok, r["prompt"])["input_ids"]
        labels = sft.mask_prompt(prompt, full["input_ids"])
        assert labels == full["labels"]
        assert tok.decode([t for t in labels if t != IGNORE_INDEX]).startswith(r["response"] + tok.eos_token)


@pytest.mark.parametrize("reply, answer, hit", [
    ("101 plus 491 is 592.", "592", True), ("It is 5920.", "592", False), ("About 592.5 of them", "592", False),
    ("The time is 10:30 pm.", "10:30 pm", True), ("the time is 10:30  pm", "10:30 pm", True),
    ("Here it is: silver_muffin", "silver_muffin", True), ("PUMPKIN TIGER", "Pumpkin Tiger", False),
    ("Sorted: 8, 62, 160", "8, 62, 160, 175", False), ("It costs $24.99.", "$24.99", True),
])
def test_answer_found_case_sensitively(reply, answer, hit):
    assert evaluation.contains_answer(reply, answer, case_sensitive=True) is hit


def test_exact_match_by_task_and_errors():
    rows = [{"task": "a", "answer": "1"}, {"task": "a", "answer": "2"}, {"task": "b", "answer": "3"}]
    assert sft.exact_match_by_task(rows, ["1", "x", "3"]) == {"a": 0.5, "b": 1.0, "all": 2 / 3}
    with pytest.raises(ValueError, match="replies"):
        sft.exact_match_by_task(rows, ["1"])
    with pytest.raises(ValueError, match="answer"):
        sft.exact_match_by_task([{"task": "a", "answer": " "}], ["x"])


def test_batched_greedy_generation_equals_one_at_a_time(tiny):
    model, tok = tiny
    prompts = [r["prompt"] for r in data.load("instructions", "test", n=3)]
    batched = sft.generate(model, tok, prompts, max_new_tokens=6)
    single = [sft.generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def test_perplexity_is_exp_of_mean_loss(tiny):
    model, tok = tiny
    texts = [r["text"] for r in data.load("general", "test", n=4)]
    ppl = sft.text_perplexity(model, tok, texts, max_length=64)
    assert 1 < ppl < 2 * tok.vocab_size  # a random model is near the vocabulary size


def _pair(model):
    return compare.peft.lora_pair(model, "all-linear", r=4, alpha=8, b_std=0.02)


def test_trl_tokenizes_and_masks_like_us(tiny, tmp_path):
    model, tok = tiny
    rows = data.load("instructions", "train", n=16)
    cfg = train.TrainConfig(steps=1, batch_size=16, micro_batch_size=4, shuffle=False)
    trainer = compare.trl.sft_trainer(_pair(model)[1], tok, rows, cfg, max_length=128, output_dir=str(tmp_path))
    for r, ex in zip(rows, trainer.train_dataset):
        ours = data.encode_chat(tok, r["prompt"], r["response"], 128)
        assert ex["input_ids"] == ours["input_ids"] and ex["labels"] == ours["labels"]


def test_trl_loss_equals_ours_on_one_batch(tiny, tmp_path):
    model, tok = tiny
    rows = data.load("instructions", "train", n=4)
    ours, theirs = _pair(model)
    cfg = train.TrainConfig(steps=1, batch_size=4, shuffle=False)
    trainer = compare.trl.sft_trainer(theirs, tok, rows, cfg, max_length=128, output_dir=str(tmp_path))
    batch = data.ChatCollator(tok, 128)(rows)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert all(torch.equal(trl_batch[k], batch[k]) for k in ("input_ids", "attention_mask", "labels"))
    trl_loss = trainer.compute_loss(theirs, dict(trl_batch))
    our_loss = losses.summed_loss(ours, batch) / losses.count_targets(batch["labels"])
    # TRL sums the loss in chunks of tokens (its default chunked_nll), we in one call: fp32 reordering only
    torch.testing.assert_close(trl_loss, our_loss, atol=0, rtol=1e-6)


def test_trl_loss_curve_equals_ours(tiny, tmp_path):
    model, tok = tiny
    rows = data.load("instructions", "train", n=24)
    ours, theirs = _pair(model)
    cfg = train.TrainConfig(steps=3, batch_size=8, micro_batch_size=4, lr=2e-3, warmup_steps=1, progress=False)
    history = train.train(ours, rows, cfg, collate=data.ChatCollator(tok, 128))
    trainer = compare.trl.sft_trainer(theirs, tok, rows, cfg, max_length=128, output_dir=str(tmp_path))
    trainer.train()
    # Same weights, rows, order, schedule and clipping; only fp32 summation order differs (TRL's chunked loss,
    # its fused AdamW): 1e-5 relative after three updates.
    trl_losses = torch.tensor(compare.trl.logged_losses(trainer))
    torch.testing.assert_close(trl_losses, torch.tensor(history["loss"]), atol=0, rtol=1e-5)


class _Oracle(torch.nn.Module):
    """Logits that put 10 on the true next token (and 0 elsewhere), except where `wrong(ids, next)` says so.

    Shaped like a Llama model for `reply_scores`: the decoder's hidden state is already the logit vector and
    the output embedding is the identity."""

    def __init__(self, vocab, wrong=None):
        super().__init__()
        self.vocab, self.wrong, self.dummy = vocab, wrong, torch.nn.Parameter(torch.zeros(1))

    def _decode(self, input_ids, attention_mask=None):
        nxt = torch.roll(input_ids, -1, dims=1)
        if self.wrong is not None:
            nxt = torch.where(self.wrong(input_ids, nxt), (nxt + 1) % self.vocab, nxt)
        hidden = torch.zeros(*input_ids.shape, self.vocab).scatter_(2, nxt[..., None], 10.0)
        return type("Out", (), {"last_hidden_state": hidden})()

    def get_decoder(self):
        return self._decode

    def get_output_embeddings(self):
        return torch.nn.Identity()


def test_reply_scores_greedy_match_and_loss(tiny):
    tok = tiny[1]
    rows = data.load("instructions", "test", n=5)
    vocab = len(tok)
    one_token_nll = torch.log1p((vocab - 1) * torch.exp(torch.tensor(-10.0))).item()
    perfect = sft.reply_scores(_Oracle(vocab), tok, rows, 128, batch_size=2)
    assert perfect["match"] == [True] * 5
    assert perfect["nll"] == pytest.approx([one_token_nll] * 5, rel=1e-3)  # fp32 log-softmax over the vocabulary
    # wrong only after the end-of-turn token (the "\n" greedy decoding never writes): still a match, higher loss
    after_eos = sft.reply_scores(_Oracle(vocab, lambda ids, nxt: ids == tok.eos_token_id), tok, rows, 128)
    assert after_eos["match"] == [True] * 5 and all(a > b for a, b in zip(after_eos["nll"], perfect["nll"]))
    # wrong at the end-of-turn token itself: greedy decoding would not stop, so no match
    no_stop = sft.reply_scores(_Oracle(vocab, lambda ids, nxt: nxt == tok.eos_token_id), tok, rows, 128)
    assert no_stop["match"] == [False] * 5


def test_reply_scores_loss_is_the_masked_loss(tiny):
    model, tok = tiny
    rows = data.load("instructions", "test", n=3)
    scores = sft.reply_scores(model, tok, rows, 128)
    for row, nll in zip(rows, scores["nll"]):
        batch = data.ChatCollator(tok, 128)([row])
        with torch.no_grad():
            expected = losses.summed_loss(model, batch) / losses.count_targets(batch["labels"])
        assert nll == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="max_length=3"):
        sft.reply_scores(model, tok, rows, 3)
    with pytest.raises(ValueError, match="empty"):
        sft.reply_scores(model, tok, [], 128)
