"""Transfer learning on a pretrained encoder (chapter 01): what to freeze, when to unfreeze, how not to forget.

    model = MeanPoolClassifier.from_encoder(encoder, seed=0)   # MiniLM + mean pooling + a linear head
    groups = layer_groups(model)                 # [head, block 5, ..., block 0, embeddings]: top-down
    freeze_to(model, 1)                          # frozen features: only the head trains
    x = pooled_features(model, rows, collate)    # the frozen features, computed once
    model.classifier.load_state_dict(fit_linear_probe(x, labels, l2=1e-3).state_dict())   # LP, then FT: LP-FT
    opt = torch.optim.AdamW(discriminative_lr_groups(model, lr=1e-3))   # ULMFiT: lr / 2.6 per group going down
    unfreeze = GradualUnfreezing(model, steps_per_stage=steps_per_epoch)
    history = train(model, rows, cfg, collate=collate, callbacks=[unfreeze])
    mixed = replay_mix(domain_b_rows, domain_a_rows, fraction=0.2)   # a little old data against forgetting
    found = lr_range_test(model, rows, collate)                      # loss vs exponentially growing LR
    classifier_accuracy(model, held_out, collate)

`ftlab.train.train(..., callbacks=[...])` calls `callback.on_step_begin(step, model)` before every
optimizer step; `GradualUnfreezing` is such a callback.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Callable, Sequence

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

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

    Tied weights are one parameter, listed once under its first name. A decoder whose output layer
    shares the input embedding matrix (SmolLM2, tiny-llama as causal LMs) therefore has its output head
    in the *embeddings* group, the last to unfreeze: untie it, or move it to the head group yourself,
    if the output layer should train from the start.
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


# --- discriminative learning rates (ULMFiT) -------------------------------------------------------------

def discriminative_lr_groups(model: nn.Module, lr: float, factor: float = 2.6,
                             weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups, one per layer group, with lr / factor**i for the i-th group from the top.

    ULMFiT (Howard and Ruder 2018) gives the top layer the rate `lr` and each layer below it the rate of
    the layer above divided by 2.6, so the most general, lowest layers move least. Every parameter is
    included, frozen or not, so a callback such as `GradualUnfreezing` can switch groups on later; pass
    `torch.optim.AdamW(discriminative_lr_groups(model, lr))` to `ftlab.train.train(optimizer=...)`, whose
    schedule then scales every group's rate by the same factor. Each dict carries the group's "name".
    """
    lr = number("lr", lr, above=0)
    factor = number("factor", factor, low=1, hint="(each group's rate is the one above divided by it)")
    weight_decay = number("weight_decay", weight_decay, low=0)
    return [{"params": params, "lr": lr / factor**i, "weight_decay": weight_decay, "name": name}
            for i, (name, params) in enumerate(layer_groups(model))]


# --- mean pooling, the frozen-features baseline, and LP-FT ----------------------------------------------

def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's token vectors over its real (mask = 1) positions: (B, T, d) -> (B, d).

        e = sum_t m_t h_t / sum_t m_t

    This is how MiniLM (all-MiniLM-L6-v2) was trained to embed a sentence, so it is the fair way to read
    features out of it; a row with no real token raises instead of dividing by zero.
    """
    if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(f"need hidden (B, T, d) and attention_mask (B, T), got {tuple(hidden.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    counts = m.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("attention_mask has a row without any real token: its mean is undefined")
    return (hidden * m).sum(1) / counts


class MeanPoolClassifier(transformers.BertPreTrainedModel):
    """A BERT encoder, mean pooling over the real tokens, dropout and one linear layer (2d + 2 weights for
    two classes). It saves and loads like any transformers model (`save_pretrained`, `from_pretrained`),
    and its config's `id2label` names the classes when it is served.

    transformers' own `BertForSequenceClassification` reads the `[CLS]` position through BERT's pooler,
    a dense layer that the sentence-embedding training of MiniLM never tuned; this head reads the vector
    MiniLM was trained to produce.
    """

    def __init__(self, config: transformers.BertConfig):
        super().__init__(config)
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder: nn.Module, num_labels: int = 2, seed: int = 0,
                     labels: Sequence[str] | None = None) -> "MeanPoolClassifier":
        """A classifier on a copy of `encoder`'s weights (a `BertModel`), its head drawn from `seed`.

        `labels` names the classes (label i is labels[i]) for the saved config; the caller's random stream
        is left where it was.
        """
        if not isinstance(encoder, transformers.BertModel):
            raise TypeError(f"encoder must be a transformers BertModel (models.load(name, task='base')), "
                            f"got {type(encoder).__name__}")
        num_labels = whole("num_labels", num_labels, low=2)
        names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
        if len(names) != num_labels:
            raise ValueError(f"labels has {len(names)} names for num_labels={num_labels}")
        config = copy.deepcopy(encoder.config)
        config.num_labels = num_labels
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
        missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)
        if missing or any(not k.startswith("pooler.") for k in unexpected):
            raise ValueError(f"encoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        param = next(encoder.parameters())
        return model.to(device=param.device, dtype=param.dtype).eval()

    def features(self, input_ids=None, attention_mask=None, token_type_ids=None, *, inputs_embeds=None,
                 past_key_values=None, position_ids=None, pool_mask=None) -> torch.Tensor:
        """The mean-pooled sentence vectors (B, d) the head reads (before dropout).

        `attention_mask` says what the encoder attends to. With keys and values already in `past_key_values`
        (prefix tuning puts its n virtual tokens there) it covers those n positions first and the T input
        positions after, as everywhere in transformers. The mean covers `pool_mask` (B, T), by default the
        mask's last T columns: the input positions whose vectors the encoder returns. Prompt tuning passes
        its real tokens only, so its soft prompt steers the sentence's vectors without being averaged in.
        """
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           inputs_embeds=inputs_embeds, past_key_values=past_key_values,
                           position_ids=position_ids).last_hidden_state
        if pool_mask is None:
            pool_mask = (attention_mask[:, -hidden.shape[1]:] if attention_mask is not None
                         else torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device))
        return mean_pool(hidden, pool_mask)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, *, inputs_embeds=None,
                past_key_values=None, position_ids=None, pool_mask=None, **ignored):
        """Logits (and the mean cross-entropy with `labels`). The keywords that wrappers pass reach the encoder
        (`inputs_embeds` from prompt tuning, `past_key_values` from prefix tuning; see `features`); others
        that peft's or Trainer's calls add (`return_dict`, `output_attentions`, ...) are accepted and unused."""
        logits = self.classifier(self.dropout(self.features(
            input_ids, attention_mask, token_type_ids, inputs_embeds=inputs_embeds, past_key_values=past_key_values,
            position_ids=position_ids, pool_mask=pool_mask)))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@torch.no_grad()
def pooled_features(model: MeanPoolClassifier, rows: Sequence[dict], collate: Callable,
                    batch_size: int = 64) -> torch.Tensor:
    """The frozen features of every row, (len(rows), d) on the CPU in row order, computed in eval mode.

    A linear probe trains on these once instead of running the encoder at every step.
    """
    if len(rows) == 0:
        raise ValueError("rows is empty")
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].get("text", "")))  # less padding per batch
    out = torch.empty(len(rows), model.config.hidden_size)
    with eval_mode(model):
        for i in range(0, len(rows), batch_size):
            idx = order[i:i + batch_size]
            batch = collate([rows[j] for j in idx])
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            out[idx] = model.features(**inputs).float().cpu()
    return out


def fit_linear_probe(features: torch.Tensor, labels, num_labels: int = 2, l2: float = 1e-3,
                     max_iter: int = 500) -> nn.Linear:
    """Multinomial logistic regression on fixed features, as an `nn.Linear(d, num_labels)`.

    Minimises the mean cross-entropy + (l2 / 2) * ||W||^2 (the bias is not penalised) with L-BFGS over
    the whole set at once: the problem is convex, so the answer does not depend on a seed or a learning
    rate. This is scikit-learn's LogisticRegression with C = 1 / (n * l2) for three or more classes; with
    two classes scikit-learn keeps one weight vector w = W[1] - W[0] and C = 2 / (n * l2) gives the same
    probabilities.
    """
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    if x.dim() != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"need features (n, d) and n labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    num_labels = whole("num_labels", num_labels, low=2)
    if int(y.min()) < 0 or int(y.max()) >= num_labels:
        raise ValueError(f"labels must lie in 0..{num_labels - 1}, got {int(y.min())}..{int(y.max())}")
    l2 = number("l2", l2, above=0, hint="(the L2 penalty keeps the optimum finite on separable data)")
    max_iter = whole("max_iter", max_iter, low=1)
    w = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    head = nn.Linear(x.shape[1], num_labels)
    with torch.no_grad():
        head.weight.copy_(w.detach())
        head.bias.copy_(b.detach())
    return head


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
                  max_grad_norm: float | None = 1.0, seed: int = 0, loss_fn: Callable = summed_loss,
                  fused: bool | None = None) -> dict:
    """Train with an exponentially growing learning rate and record the loss (Smith 2015, "LR range test").

        eta_t = min_lr * (max_lr / min_lr) ** (t / (steps - 1))

    The loss is smoothed with an exponential moving average (weight `beta` on the past, bias-corrected);
    the test stops early once the smoothed loss exceeds `diverge` times its best value. The model's
    weights are restored afterwards, so the test leaves it exactly as it found it.
    Returns lrs, losses, smoothed, "steepest" (the LR where the smoothed loss falls fastest per unit of
    log LR) and "min_over_10" (a tenth of the LR at the smoothed minimum): two common picks.
    `fused=True` asks torch for its fused AdamW (the same update in one pass per tensor: much faster on a CPU).
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
    optimizer = torch.optim.AdamW(params, lr=min_lr, weight_decay=0.0, fused=fused)
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
