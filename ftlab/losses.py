"""The loss convention every chapter shares: which positions are targets, and the token-weighted sums.

    S = summed_loss(model, batch)          # sum over the batch's targets of -log p(target)
    N = count_targets(batch["labels"])     # how many targets that sum covers
    L = mean_loss(model, rows, collate)    # sum_m S_m / sum_m N_m over a whole dataset

Labels equal to IGNORE_INDEX are read but never learned (prompt tokens, padding). 2-D labels are a
causal LM's next-token targets (shifted by one inside the loss), 1-D labels a classifier's classes.

A loss function takes (model, batch) and returns S, or a dict {"loss": S, name: sum, ...} whose other
entries are numbers to log, summed over the same targets as S (`split_loss` tells the two apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import torch
import torch.nn.functional as F

from ftlab.runtime import eval_mode

IGNORE_INDEX = -100  # label value that cross-entropy skips (PyTorch's and transformers' convention)


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


def count_targets(labels: torch.Tensor) -> int:
    """N: how many targets `labels` asks for (2-D causal-LM labels: after the one-step shift; 1-D classes: rows)."""
    return int((labels[:, 1:] if labels.dim() == 2 else labels).ne(IGNORE_INDEX).sum())


def split_loss(out) -> tuple[torch.Tensor, dict]:
    """A loss function's result as (S, {name: sum}): S alone has nothing to report."""
    if not isinstance(out, Mapping):
        return out, {}
    if "loss" not in out:
        raise ValueError(f"a loss function that returns a dict must put S under 'loss'; got keys {sorted(out)}")
    return out["loss"], {k: v for k, v in out.items() if k != "loss"}


def summed_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """S = sum over the batch's targets of -log p(target): a sum, so micro-batches can be added up.

    Logits longer than 2-D labels (prompt tuning puts n virtual tokens first) get n ignored label
    positions in front, so the last virtual token predicts the first real one, as in peft.
    """
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    if labels.dim() == 1:
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    extra = logits.shape[1] - labels.shape[1]
    if extra < 0:
        raise ValueError(f"logits cover {logits.shape[1]} positions but labels {labels.shape[1]}")
    return causal_lm_loss(logits, F.pad(labels, (extra, 0), value=IGNORE_INDEX), reduction="sum")


@torch.no_grad()
def mean_loss(model: torch.nn.Module, dataset, collate: Callable, batch_size: int = 16,
              loss_fn: Callable = summed_loss, dtype: torch.dtype | None = None) -> float:
    """Mean loss per target over `dataset`: sum_m S_m / sum_m N_m, weighted like training, in eval mode."""
    device = next(model.parameters()).device
    total, n = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                total += split_loss(loss_fn(model, batch))[0].item()
            n += count_targets(batch["labels"])
    return total / n


@torch.no_grad()
def example_losses(model: torch.nn.Module, dataset, collate: Callable, batch_size: int = 16) -> torch.Tensor:
    """(len(dataset), 2) float64: each example's summed loss S_i and its target count N_i, in eval mode.

    The columns add up to `mean_loss`'s numerator and denominator. Paired tests (`ftlab.stats`) resample
    these rows, so two models scored on the same examples are compared example by example.
    """
    device = next(model.parameters()).device
    rows = []
    with eval_mode(model):
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            labels = batch["labels"]
            if labels.dim() == 1:
                summed = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
                counts = labels.ne(IGNORE_INDEX)
            else:  # as summed_loss: extra leading logits (virtual tokens) get ignored labels
                labels = F.pad(labels, (logits.shape[1] - labels.shape[1], 0), value=IGNORE_INDEX)
                targets = labels[:, 1:]
                summed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1),
                                         ignore_index=IGNORE_INDEX, reduction="none").view(targets.shape).sum(1)
                counts = targets.ne(IGNORE_INDEX).sum(1)
            rows.append(torch.stack([summed.double(), counts.double()], dim=1).cpu())
    return torch.cat(rows)
