"""Token-level losses shared by the chapters (and the references their labs are graded against)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ftlab.data import IGNORE_INDEX


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over target tokens only.

    Position t predicts token t+1, so logits drop their last step and labels their first:
        L = -(1/N) * sum_{t: y_{t+1} != -100} log softmax(z_t)[y_{t+1}],   N = number of target tokens
    `reduction="sum"` returns the numerator (what token-weighted gradient accumulation adds up).
    """
    shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1)).float()
    shift_labels = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum'")
    return total / count_targets(labels)


def count_targets(labels: torch.Tensor) -> torch.Tensor:
    """How many tokens a causal-LM batch asks the model to predict (labels after the shift)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()
