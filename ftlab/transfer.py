"""Transfer learning on a pretrained encoder (chapter 01): what to freeze, when to unfreeze, how not to forget.

    groups = layer_groups(model)                 # [head, block 5, ..., block 0, embeddings]: top-down
    freeze_to(model, 1)                          # frozen features: only the head trains
    unfreeze = GradualUnfreezing(model, steps_per_stage=steps_per_epoch)
    history = train(model, rows, cfg, collate=collate, callbacks=[unfreeze])
    mixed = replay_mix(domain_b_rows, domain_a_rows, fraction=0.2)   # a little old data against forgetting
    found = lr_range_test(model, rows, collate)                      # loss vs exponentially growing LR
    classifier_accuracy(model, held_out, collate)

`ftlab.train.train(..., callbacks=[...])` calls `callback.on_step_begin(step, model)` before every
optimizer step; `GradualUnfreezing` is such a callback.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import torch
from torch import nn

from ftlab import evaluation
from ftlab.checks import number, whole
from ftlab.losses import summed_loss
from ftlab.runtime import eval_mode
from ftlab.train import accumulate, batch_indices

# --- layer groups, top-down ---------------------------------------------------------------------------

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|blocks)\.(\d+)\.")


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The model's parameters as groups, from the output down: head, block L-1, ..., block 0, embeddings.

    A parameter inside a numbered block (`encoder.layer.3.` for BERT, `layers.3.` for Llama) joins that
    block; one whose name contains "embed" joins the embeddings; everything else (classifier, pooler,
    final norm) is the head. Gradual unfreezing walks this list from the front.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    head, embeddings, blocks = [], [], {}
    for name, p in model.named_parameters():
        block = _BLOCK.search(name)
        if block:
            blocks.setdefault(int(block[1]), []).append(p)
        elif "embed" in name:
            embeddings.append(p)
        else:
            head.append(p)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no numbered blocks (expected names like 'encoder.layer.0.' "
                         "or 'layers.0.'): cannot group it for unfreezing")
    groups = [("head", head)] + [(f"block {i}", blocks[i]) for i in sorted(blocks, reverse=True)]
    return groups + ([("embeddings", embeddings)] if embeddings else [])


def freeze_to(model: nn.Module, n_groups: int) -> int:
    """Make the top `n_groups` layer groups trainable and freeze the rest; returns the trainable count.

    n_groups=1: frozen features + a trained head; n_groups=len(layer_groups(model)): full fine-tuning.
    """
    groups = layer_groups(model)
    n_groups = whole("n_groups", n_groups, low=0, high=len(groups), hint="(the model's layer groups)")
    set_trainable_groups(groups, n_groups)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_trainable_groups(groups: list[tuple[str, list[nn.Parameter]]], k: int) -> int:
    """Group i of `groups` (top-down, from `layer_groups`) trains exactly when i < k; returns how many
    parameter elements the first k groups hold."""
    k = whole("k", k, low=0)
    for i, (_, params) in enumerate(groups):
        for p in params:
            p.requires_grad_(i < k)
    return sum(p.numel() for _, params in groups[:k] for p in params)


# --- gradual unfreezing as a training callback ----------------------------------------------------------

def unfrozen_groups(step: int, steps_per_stage: int, n_groups: int, start: int = 1) -> int:
    """How many groups (from the top) train at optimizer step `step` (0-based).

    Stage s = step // steps_per_stage trains start + s groups, capped at n_groups: with one stage per
    epoch, epoch 1 trains the head only, epoch 2 adds the top block, and so on down to the embeddings.
    """
    step, steps_per_stage = whole("step", step, low=0), whole("steps_per_stage", steps_per_stage, low=1)
    n_groups, start = whole("n_groups", n_groups, low=1), whole("start", start, low=1)
    return min(n_groups, start + step // steps_per_stage)


class Callback:
    """What `ftlab.train.train(callbacks=...)` calls. `params()` lists the parameters it may switch on."""

    def params(self, model: nn.Module) -> list[nn.Parameter]:
        return []

    def on_step_begin(self, step: int, model: nn.Module) -> None:
        pass


class GradualUnfreezing(Callback):
    """Unfreeze one layer group per stage, top-down (ULMFiT): head first, then the top block, and so on.

    `steps_per_stage` is usually the number of steps in one epoch. `log` keeps (step, trainable
    parameters) every time the set changes, so the schedule can be plotted and checked.
    """

    def __init__(self, model: nn.Module, steps_per_stage: int, start: int = 1):
        unfrozen_groups(0, steps_per_stage, 1, start)  # validates the arguments
        self.groups = layer_groups(model)
        self.steps_per_stage, self.start = steps_per_stage, start
        self.log: list[tuple[int, int]] = []
        self._current: int | None = None

    def params(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for _, ps in self.groups for p in ps]

    def on_step_begin(self, step: int, model: nn.Module) -> None:
        k = unfrozen_groups(step, self.steps_per_stage, len(self.groups), self.start)
        if k != self._current:
            set_trainable_groups(self.groups, k)
            self._current = k
            self.log.append((step, sum(p.numel() for p in model.parameters() if p.requires_grad)))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.groups]


# --- forgetting: replay a little of the old data -------------------------------------------------------

def replay_mix(new_rows: Sequence, old_rows: Sequence, fraction: float, seed: int = 0) -> list:
    """The new task's rows plus round(fraction * len(new_rows)) rows of the old task, shuffled.

    The old rows are drawn without replacement; both draws use a torch.Generator seeded with `seed`
    (first a permutation of old_rows, whose first n are kept; then a permutation of the mix).
    """
    fraction = number("fraction", fraction, low=0, high=1, hint="(old rows per new row)")
    if len(new_rows) == 0:
        raise ValueError("new_rows is empty: there is nothing to train on")
    n_old = round(fraction * len(new_rows))
    if n_old > len(old_rows):
        raise ValueError(f"fraction={fraction} needs {n_old} old rows but old_rows has only {len(old_rows)}")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(old_rows), generator=g)[:n_old].tolist()
    mixed = list(new_rows) + [old_rows[i] for i in pick]
    order = torch.randperm(len(mixed), generator=g).tolist()
    return [mixed[i] for i in order]


# --- evaluation --------------------------------------------------------------------------------------

@torch.no_grad()
def predict(model: nn.Module, rows: Sequence[dict], collate: Callable, batch_size: int = 32) -> torch.Tensor:
    """Predicted class of every row (argmax of the logits), in eval mode; the model's mode is restored."""
    if len(rows) == 0:
        raise ValueError("rows is empty")
    device = next(model.parameters()).device
    # Batches of similar length waste less compute on padding; the answer comes back in row order.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].get("text", "")) if isinstance(rows[i], dict) else 0)
    preds = torch.empty(len(rows), dtype=torch.long)
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            idx = order[i:i + batch_size]
            batch = collate([rows[j] for j in idx])
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            preds[idx] = model(**inputs).logits.argmax(-1).cpu()
    return preds


def classifier_accuracy(model: nn.Module, rows: Sequence[dict], collate: Callable, batch_size: int = 32) -> float:
    """Fraction of rows whose predicted class equals row["label"]: `evaluation.accuracy` of `predict`."""
    return evaluation.accuracy(predict(model, rows, collate, batch_size), [r["label"] for r in rows])


# --- the learning-rate range test ---------------------------------------------------------------------

def lr_range_test(model: nn.Module, dataset, collate: Callable, min_lr: float = 1e-7, max_lr: float = 1.0,
                  steps: int = 50, batch_size: int = 8, beta: float = 0.7, diverge: float = 4.0,
                  max_grad_norm: float | None = 1.0, seed: int = 0, loss_fn: Callable = summed_loss) -> dict:
    """Train with an exponentially growing learning rate and record the loss (Smith 2015, "LR range test").

        eta_t = min_lr * (max_lr / min_lr) ** (t / (steps - 1))

    The loss is smoothed with an exponential moving average (weight `beta` on the past, bias-corrected);
    the test stops early once the smoothed loss exceeds `diverge` times its best value. The model's
    weights are restored afterwards, so the test leaves it exactly as it found it.
    Returns lrs, losses, smoothed, "steepest" (the LR where the smoothed loss falls fastest per unit of
    log LR) and "min_over_10" (a tenth of the LR at the smoothed minimum): two common picks.
    """
    if not (0 < min_lr < max_lr):
        raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr!r}, max_lr={max_lr!r}")
    steps = whole("steps", steps, low=3)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=min_lr, weight_decay=0.0)
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    was_training = model.training
    model.train()
    try:
        for t in range(steps):
            lr = min_lr * (max_lr / min_lr) ** (t / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = [dataset[i] for i in batch_indices(t, batch_size, len(dataset), seed)]
            loss = accumulate(model, [collate(rows)], loss_fn)
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            avg = beta * avg + (1 - beta) * loss
            smooth = avg / (1 - beta ** (t + 1))
            lrs.append(lr), losses.append(loss), smoothed.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(loss) or smooth > diverge * best:
                break
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    slopes = [(smoothed[i + 1] - smoothed[i]) / math.log(lrs[i + 1] / lrs[i]) for i in range(i_min)]
    steepest = lrs[min(range(len(slopes)), key=slopes.__getitem__)] if slopes else lrs[i_min]
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "steepest": steepest,
            "min_over_10": lrs[i_min] / 10, "stopped_early": len(lrs) < steps}
