import pytest
import torch

from ftlab import losses, models
from ftlab.data import pad_batch


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
    assert losses.count_targets(labels).item() == 2 + 4
    total = losses.causal_lm_loss(logits, labels, reduction="sum")
    torch.testing.assert_close(total / 6, losses.causal_lm_loss(logits, labels))
    changed = logits.clone()
    changed[0, 3:] = 100.0  # positions whose next label is -100 (or past the end) must not matter
    torch.testing.assert_close(losses.causal_lm_loss(changed, labels), losses.causal_lm_loss(logits, labels))
    with pytest.raises(ValueError, match="reduction='max'"):
        losses.causal_lm_loss(logits, labels, reduction="max")
