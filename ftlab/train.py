"""The training loop every chapter uses, and what it takes to train on small hardware.

    cfg = TrainConfig(steps=100, batch_size=16, micro_batch_size=4, lr=3e-4, warmup_steps=10, eval_every=20)
    history = train(model, rows, cfg, collate=CausalLMCollator(tok, 128), eval_dataset=held_out)
    plt.plot(history["step"], history["loss"])

Pieces, in the order chapter 02 builds them:
  accumulate      backward over micro-batches, weighted by target tokens (= one big batch)
  train           AdamW, warmup schedule, clipping, bf16/fp16 autocast, gradient checkpointing, eval, tqdm
  save/load_checkpoint   model, optimizer, scheduler, RNG, data position and step; resume is bit-exact on CPU
  estimate_memory        bytes of weights, gradients, optimizer state, activations, quantization constants

A batch is a dict of tensors with `labels`: 2-D labels are next-token targets of a causal LM (-100 =
ignored), 1-D labels are the classes of a sequence-classification model.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from ftlab.data import IGNORE_INDEX
from ftlab.losses import causal_lm_loss

# --- 1. token-weighted gradient accumulation -----------------------------------------------------


def count_targets(batch: dict) -> int:
    """N_m: how many targets a batch has (causal LM: labels after the one-step shift; classification: rows)."""
    labels = batch["labels"]
    return int((labels[:, 1:] if labels.dim() == 2 else labels).ne(IGNORE_INDEX).sum())


def summed_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """S_m = sum over the batch's targets of -log p(target): a sum, so micro-batches can be added up."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    if batch["labels"].dim() == 2:
        return causal_lm_loss(logits, batch["labels"], reduction="sum")
    return F.cross_entropy(logits.float(), batch["labels"], ignore_index=IGNORE_INDEX, reduction="sum")


def accumulate(model: torch.nn.Module, micro_batches: list[dict], loss_fn: Callable = summed_loss, *,
               dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> float:
    """Backward over micro-batches so that `.grad` += the gradient of the whole batch's mean token loss.

        L = S / N = (1/N) * sum_m S_m,   N = sum_m N_m     =>     grad L = sum_m grad(S_m / N)

    Returns L. Averaging per-micro-batch means, (1/M) sum_m S_m / N_m, is a different loss unless
    every N_m is equal. `dtype` runs the forward under autocast; `scaler` scales fp16 losses.
    """
    device = next(model.parameters()).device
    n_total = sum(count_targets(mb) for mb in micro_batches)  # N
    if n_total == 0:
        raise ValueError("these micro-batches have no target tokens (every label is -100)")
    total = 0.0
    for mb in micro_batches:
        mb = {k: v.to(device) for k, v in mb.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model, mb) / n_total  # S_m / N
        (scaler.scale(loss) if scaler is not None else loss).backward()  # .grad += grad(S_m / N)
        total += loss.item()
    return total


# --- 2. the training loop ------------------------------------------------------------------------


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps
    batch_size: int = 8  # examples per optimizer step
    micro_batch_size: int | None = None  # examples per forward/backward (None: the whole batch at once)
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.0  # AdamW's decoupled decay
    warmup_steps: int = 0  # linear ramp from 0 to lr
    schedule: str = "linear"  # after warmup: "linear" (to 0 at the last step), "cosine" or "constant"
    max_grad_norm: float | None = 1.0  # clip the global gradient norm (None: measure it, never clip)
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler, CUDA only)
    gradient_checkpointing: bool = False  # keep only layer inputs; recompute the rest in backward
    eval_every: int = 0  # optimizer steps between evaluations (0: only after the last step)
    eval_batch_size: int = 16
    shuffle: bool = True  # a fresh permutation of the data each epoch, drawn from `seed`
    seed: int = 0
    save_every: int = 0  # write a checkpoint to output_dir/step-<n> every n steps (0: never)
    output_dir: str | None = None
    progress: bool = True  # tqdm bar


# Fields that may change between a run and its resumption without changing the numbers it computes.
_FREE_ON_RESUME = {"eval_every", "eval_batch_size", "save_every", "output_dir", "progress"}
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def lr_factor(step: int, warmup: int, total: int, schedule: str = "linear") -> float:
    """eta_t / eta: t/W during warmup, then 1 - p (linear), (1 + cos(pi p))/2 (cosine) or 1, p = (t-W)/(T-W)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule={schedule!r}: use 'linear', 'cosine' or 'constant'")


def batch_indices(step: int, batch_size: int, n: int, seed: int = 0, shuffle: bool = True) -> list[int]:
    """The dataset rows of optimizer step `step`: positions step*B .. step*B+B-1 of an endless stream of
    epochs, epoch e being a permutation drawn from seed+e. A pure function of the step, so resuming only
    needs the step number to find its place in the data."""
    rows, orders = [], {}
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = (torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)) if shuffle
                             else torch.arange(n))
        rows.append(int(orders[epoch][i]))
    return rows


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, collate: Callable, batch_size: int = 16,
             loss_fn: Callable = summed_loss, dtype: torch.dtype | None = None) -> float:
    """Mean loss per target over `dataset`: sum_m S_m / sum_m N_m, weighted like training."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            total += loss_fn(model, batch).item()
        n += count_targets(batch)
    model.train(was_training)
    return total / n


def train(model: torch.nn.Module, dataset, config: TrainConfig, *, collate: Callable = torch.utils.data.default_collate,
          eval_dataset=None, optimizer: torch.optim.Optimizer | None = None, loss_fn: Callable = summed_loss,
          resume_from: str | Path | None = None, callbacks: Sequence = ()) -> dict[str, list]:
    """Train for `config.steps` optimizer steps and return the history (lists, ready to plot).

    Each step: B rows -> micro-batches of `micro_batch_size` -> accumulate (token-weighted) ->
    clip -> optimizer step -> schedule step. `dataset` is any sequence of rows; `collate` turns a
    list of rows into a dict of tensors with `labels`. `resume_from` is a directory written by a
    run with `save_every`: training continues from its step and gives the uninterrupted run's numbers.
    `callbacks`: objects with `on_step_begin(step, model)`, called before each step's first forward pass
    (chapter 01's gradual unfreezing); their optional `params(model)` are made trainable before the
    optimizer is built, so the optimizer holds them while the callback switches them on and off. The
    history then gains "trainable": the trainable parameter count at each step.
    """
    cfg = config
    if cfg.precision not in _AUTOCAST:
        raise ValueError(f"precision={cfg.precision!r}: use one of {', '.join(_AUTOCAST)}")
    device = next(model.parameters()).device
    if cfg.save_every and not cfg.output_dir:
        raise ValueError("save_every needs an output_dir to write checkpoints to")
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 training needs a CUDA GPU (its GradScaler guards fp16's narrow range); on CPU use bf16")
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    _prepare_callbacks(model, callbacks, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer or torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, warmup=cfg.warmup_steps, total=cfg.steps, schedule=cfg.schedule))
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    dtype, micro = _AUTOCAST[cfg.precision], cfg.micro_batch_size or cfg.batch_size
    history = {"step": [], "loss": [], "lr": [], "grad_norm": [], "eval_step": [], "eval_loss": []}
    start = 0
    if resume_from is not None:
        start, history = load_checkpoint(resume_from, model, optimizer, scheduler, cfg, scaler)
    if callbacks:
        history.setdefault("trainable", [])

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", disable=not cfg.progress)
    for step in bar:
        for cb in callbacks:
            cb.on_step_begin(step, model)
        if callbacks:
            history["trainable"].append(sum(p.numel() for p in model.parameters() if p.requires_grad))
        rows = [dataset[i] for i in batch_indices(step, cfg.batch_size, len(dataset), cfg.seed, cfg.shuffle)]
        lr = scheduler.get_last_lr()[0]
        loss = accumulate(model, [collate(rows[i:i + micro]) for i in range(0, len(rows), micro)], loss_fn,
                          dtype=dtype, scaler=scaler)
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
        # g <- g * min(1, c / ||g||), ||g|| over all parameters at once; returns ||g|| before clipping
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
        if scaler is not None:
            scaler.step(optimizer)  # skipped when the gradient overflowed
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for key, value in (("step", step + 1), ("loss", loss), ("lr", lr), ("grad_norm", norm.item())):
            history[key].append(value)
        bar.set_postfix(loss=f"{loss:.4f}")
        last = step + 1 == cfg.steps
        if eval_dataset is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last):
            history["eval_step"].append(step + 1)
            history["eval_loss"].append(evaluate(model, eval_dataset, collate, cfg.eval_batch_size, loss_fn, dtype))
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(Path(cfg.output_dir) / f"step-{step + 1}", model, optimizer, scheduler, cfg,
                            step + 1, history, scaler)
    model.eval()
    return history


def _prepare_callbacks(model: torch.nn.Module, callbacks: Sequence, optimizer) -> None:
    """Check the callbacks and make the parameters they manage trainable, so the optimizer sees them."""
    for cb in callbacks:
        if not callable(getattr(cb, "on_step_begin", None)):
            raise TypeError(f"callbacks must have an on_step_begin(step, model) method, got {type(cb).__name__}")
        managed = list(getattr(cb, "params", lambda m: [])(model))
        if optimizer is not None:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if any(id(p) not in held for p in managed):
                raise ValueError(f"the optimizer passed to train() lacks parameters that {type(cb).__name__} "
                                 "unfreezes; let train() build it, or build it over those parameters")
        for p in managed:
            p.requires_grad_(True)


# --- 3. checkpoint and bit-exact resume ----------------------------------------------------------

FORMAT = "ftlab-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: missing, truncated, or written for another model/config."""


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    config: TrainConfig, step: int, history: dict, scaler=None) -> Path:
    """Write everything the next step depends on. Tensors go to safetensors, the rest to state.json,
    which is written last and lists every file's size. The folder appears atomically (rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    save_model(model, str(tmp / "model.safetensors"))  # handles tied weights
    opt = optimizer.state_dict()
    save_file({f"{i}.{k}": v.contiguous() for i, s in opt["state"].items() for k, v in s.items()
               if isinstance(v, torch.Tensor)}, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())} if torch.cuda.is_available() else {})
    save_file(rng, str(tmp / "rng.safetensors"))
    np_state = np.random.get_state()
    state = {
        "format": FORMAT, "step": step, "examples_seen": step * config.batch_size, "config": asdict(config),
        "history": history, "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "optimizer_groups": opt["param_groups"],
        "optimizer_scalars": {i: {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)}
                              for i, s in opt["state"].items()},
        "python_rng": random.getstate(),
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "files": {f.name: f.stat().st_size for f in sorted(tmp.iterdir())},
    }
    (tmp / "state.json").write_text(json.dumps(state))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    config: TrainConfig, scaler=None) -> tuple[int, dict]:
    """Restore a checkpoint in place; returns (step, history). Raises CheckpointError, never guesses."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no state.json: not a checkpoint, or its save never finished") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'state.json'} is not valid JSON (truncated?): {e}") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {state.get('format')!r}, expected {FORMAT!r}")
    for name, size in state["files"].items():
        actual = (path / name).stat().st_size if (path / name).exists() else None
        if actual != size:
            raise CheckpointError(f"{path / name}: {'missing' if actual is None else f'{actual} bytes'}, the "
                                  f"checkpoint recorded {size} bytes: it was truncated or overwritten")
    changed = {k: (v, getattr(config, k)) for k, v in state["config"].items()
               if k not in _FREE_ON_RESUME and getattr(config, k) != v}
    if changed:
        raise CheckpointError(f"{path} was written with a different config; resuming would not reproduce the run: "
                              + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changed.items()))
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path} does not match this model: missing {sorted(missing)[:5]}, "
                                  f"unexpected {sorted(unexpected)[:5]}")
        tensors = load_file(str(path / "optimizer.safetensors"))
        opt_state = {int(i): dict(s) for i, s in state["optimizer_scalars"].items()}
        for key, value in tensors.items():
            i, name = key.split(".", 1)
            opt_state.setdefault(int(i), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer_groups"]})
        rng = load_file(str(path / "rng.safetensors"))
    except (RuntimeError, ValueError, SafetensorError) as e:  # shape mismatches, wrong parameter groups
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path} does not match this model or optimizer: {e}") from None
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(rng["torch"])
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        torch.cuda.set_rng_state(rng[f"cuda{i}"], i)
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy_rng"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return state["step"], state["history"]


# --- 4. memory estimate --------------------------------------------------------------------------

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass
class MemoryEstimate:
    """Bytes per part of a training step's memory."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    quant_constants: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.quant_constants

    def gib(self) -> dict[str, float]:
        return {k: v / 2**30 for k, v in {**asdict(self), "total": self.total}.items()}


def estimate_memory(n_params: float, method: str = "full", optimizer: str = "adamw", dtype: str = "fp32", *,
                    batch: int = 1, seq_len: int = 512, n_layers: int = 0, hidden: int = 0,
                    intermediate: int | None = None, kv_hidden: int | None = None, vocab_size: int = 0,
                    lora_params: float = 0, grad_checkpointing: bool = False, nf4_blocksize: int = 64,
                    double_quant: bool = True, n_unquantized: float = 0) -> MemoryEstimate:
    """Training memory of a Llama-style decoder, by part.

    method "full": every weight trains. Weights and grads in `dtype`; AdamW keeps two fp32 moments (8 B/param;
      "adamw8bit": 2 B + a fp32 absmax per 256 values), plus an fp32 master copy when dtype is 16-bit. Either
      way full fine-tuning with AdamW costs 16 bytes per parameter before activations.
    method "lora": frozen base in `dtype`; the lora_params train in fp32 with their own grads and moments.
    method "qlora": frozen base in NF4 (0.5 B/param) + one absmax per `nf4_blocksize` weights (fp32, or with
      double quantization 8-bit plus an fp32 per 256 absmaxes), LoRA as above. `n_unquantized` of the
      n_params stay in `dtype` (embeddings, norms, lm_head: QLoRA quantizes only the linear layers).
    "paged_adamw" has AdamW's size; its states can page out to CPU RAM under pressure (counted on the GPU here).
    Activations, per token and layer (counted with saved_tensors_hooks in chapter 02):
      8h + 2h_kv + 4i values (norms, q/k/v, attention output, SwiGLU) in `dtype`; with checkpointing only the
      layer input h is kept, plus one layer's worth during its recomputation; the head adds 2V fp32 values
      (logits and log-probabilities for the loss).
    """
    if method not in ("full", "lora", "qlora") or optimizer not in ("adamw", "adamw8bit", "paged_adamw"):
        raise ValueError(f"method={method!r} / optimizer={optimizer!r}: see the docstring for the choices")
    if not 0 <= n_unquantized <= n_params or (n_unquantized and method != "qlora"):
        raise ValueError(f"n_unquantized={n_unquantized} must lie in [0, n_params] and only applies to method='qlora'")
    b = BYTES[dtype]
    trainable = n_params if method == "full" else lora_params
    state_bytes = 2 if optimizer == "adamw8bit" else 8  # two moments, 8-bit or fp32
    optim = trainable * state_bytes + (n_params * 4 if method == "full" and b < 4 else 0)  # + fp32 master copy
    consts = trainable * 2 * 4 / 256 if optimizer == "adamw8bit" else 0.0
    if method == "qlora":
        n_nf4 = n_params - n_unquantized
        weights = n_nf4 * 0.5 + n_unquantized * b + lora_params * 4
        consts += n_nf4 * (1 / nf4_blocksize + 4 / (nf4_blocksize * 256) if double_quant else 4 / nf4_blocksize)
    else:
        weights = n_params * b + (lora_params * 4 if method == "lora" else 0)
    grads = n_params * b if method == "full" else lora_params * 4
    tokens = batch * seq_len
    i, h_kv = intermediate or (8 * hidden) // 3, kv_hidden or hidden
    per_layer = tokens * (8 * hidden + 2 * h_kv + 4 * i) * b
    kept = n_layers * tokens * hidden * b + per_layer if grad_checkpointing else n_layers * per_layer
    return MemoryEstimate(weights, grads, optim, kept + 2 * tokens * vocab_size * 4, consts)
