import pytest
import torch

from ftlab import losses, models
from ftlab.data import pad_batch
from ftlab.losses import IGNORE_INDEX


def test_matches_transformers_loss_on_a_padded_batch():
    model, tok = models.load("tiny-llama")
    batch = pad_batch([{"input_ids": tok("a longer example sentence")["input_ids"]},
                       {"input_ids": tok("short")["input_ids"]}], tok.pad_token_id)
    out = model(**batch)
    # Same formula, computed by transformers: float32 summation order differs, hence the tolerance.
    torch.testing.assert_close(losses.causal_lm_loss(out.logits, batch["labels"]), out.loss, rtol=1e-6, atol=1e-6)


def test_sum_over_count_is_mean_and_masked_tokens_do_not_count():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, -100, -100], [-100, 4, 5, 6, 0]])
    assert losses.count_targets(labels) == 2 + 4 and isinstance(losses.count_targets(labels), int)
    total = losses.causal_lm_loss(logits, labels, reduction="sum")
    torch.testing.assert_close(total / 6, losses.causal_lm_loss(logits, labels))
    changed = logits.clone()
    changed[0, 3:] = 100.0  # positions whose next label is -100 (or past the end) must not matter
    torch.testing.assert_close(losses.causal_lm_loss(changed, labels), losses.causal_lm_loss(logits, labels))
    with pytest.raises(ValueError, match="reduction='max'"):
        losses.causal_lm_loss(logits, labels, reduction="max")


def test_classification_targets_are_rows():
    model, tok = models.load("tiny-bert", task="classification")
    batch = {**tok(["a b c", "d"], padding=True, return_tensors="pt"), "labels": torch.tensor([0, 1])}
    assert losses.count_targets(batch["labels"]) == 2
    assert losses.count_targets(torch.tensor([[5, 6, IGNORE_INDEX], [7, 8, 9]])) == 1 + 2
    loss = losses.summed_loss(model, batch) / 2
    torch.testing.assert_close(loss, model(**batch).loss, rtol=1e-6, atol=1e-6)


def test_example_losses_add_up_to_the_mean_loss_and_score_each_row_alone():
    from ftlab.data import CausalLMCollator, ClassificationCollator

    lm, tok = models.load("tiny-llama")
    rows = [{"text": t} for t in ("one two three four", "five", "six seven", "eight nine ten", "eleven")]
    collate = CausalLMCollator(tok, 16)
    per = losses.example_losses(lm, rows, collate, batch_size=2)
    assert per.shape == (5, 2) and per.dtype == torch.float64
    torch.testing.assert_close(per[:, 0].sum() / per[:, 1].sum(),
                               torch.tensor(losses.mean_loss(lm, rows, collate, batch_size=2), dtype=torch.float64))
    for i, row in enumerate(rows):  # padding inside a batch does not leak into a row's loss
        alone = collate([row])
        torch.testing.assert_close(per[i, 0].float(), losses.summed_loss(lm, alone), rtol=1e-5, atol=1e-5)
        assert per[i, 1] == losses.count_targets(alone["labels"])

    enc, enc_tok = models.load("tiny-bert", task="classification")
    labelled = [{"text": t, "label": i % 2} for i, t in enumerate(("a b", "c", "d e f"))]
    per = losses.example_losses(enc, labelled, ClassificationCollator(enc_tok, 16), batch_size=2)
    assert per[:, 1].tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(per[:, 0].mean(), torch.tensor(losses.mean_loss(
        enc, labelled, ClassificationCollator(enc_tok, 16), batch_size=2), dtype=torch.float64))
