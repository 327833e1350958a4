"""The training loop every chapter uses, and what it takes to train on small hardware.

    cfg = TrainConfig(steps=100, batch_size=16, micro_batch_size=4, lr=3e-4, warmup_steps=10, eval_every=20)
    history = train(model, rows, cfg, collate=CausalLMCollator(tok, 128), eval_dataset=held_out)
    plt.plot(history["step"], history["loss"])

Pieces, in the order chapter 02 builds them:
  accumulate      backward over micro-batches, weighted by target tokens (= one big batch)
  train           AdamW, warmup schedule, clipping, bf16/fp16 autocast, gradient checkpointing, eval, tqdm
  save/load_checkpoint   model, optimizer, scheduler, RNG, data position and step; resume is bit-exact on CPU
(Whether a run fits in memory at all is `ftlab.memory.estimate_memory`, planning arithmetic.)

A batch is a dict of tensors with `labels`: 2-D labels are next-token targets of a causal LM (-100 =
ignored), 1-D labels are the classes of a sequence-classification model. The losses and target
counts are `ftlab.losses`'.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model
from tqdm.auto import tqdm

from ftlab.checks import number, whole
from ftlab.losses import count_targets, mean_loss, split_loss, summed_loss

# --- 1. token-weighted gradient accumulation -----------------------------------------------------


def accumulate(model: torch.nn.Module, micro_batches: list[dict], loss_fn: Callable = summed_loss, *,
               dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
               token_count: Callable[[int], float] | None = None) -> float | dict:
    """Backward over micro-batches so that `.grad` += the gradient of the whole batch's mean token loss.

        L = S / N = (1/N) * sum_m S_m,   N = sum_m N_m     =>     grad L = sum_m grad(S_m / N)

    Returns L. Averaging per-micro-batch means, (1/M) sum_m S_m / N_m, is a different loss unless
    every N_m is equal. `dtype` runs the forward under autocast; `scaler` scales fp16 losses.
    A `loss_fn` that returns {"loss": S_m, name: M_m, ...} (numbers summed over the same targets) gets
    {"loss": L, name: sum_m M_m / N, ...} back: each number weighted exactly like the loss.
    `token_count(n)` maps this process's target count n to the divisor. Data parallel training needs it: each
    rank holds only its share of the batch, and DDP averages the ranks' gradients, so a rank divides by
    N_global / W (`ftlab.compare.dist.global_token_count`); the returned L is then this rank's share times W.
    """
    device = next(model.parameters()).device
    n_local = sum(count_targets(mb["labels"]) for mb in micro_batches)
    n_total = n_local if token_count is None else token_count(n_local)  # N
    if not n_total > 0:
        raise ValueError(f"these micro-batches have no target tokens (every label is -100): N = {n_total}")
    total, reported = 0.0, {}
    for mb in micro_batches:
        mb = {k: v.to(device) for k, v in mb.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = loss_fn(model, mb)
            summed, numbers = split_loss(out)
            loss = summed / n_total  # S_m / N
        (scaler.scale(loss) if scaler is not None else loss).backward()  # .grad += grad(S_m / N)
        total += loss.item()
        for name, value in numbers.items():
            reported[name] = reported.get(name, 0.0) + float(value) / n_total
    return {"loss": total, **reported} if isinstance(out, Mapping) else total


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

    def __post_init__(self):
        """Refuse values that would fail late, obscurely, or silently train wrong (a negative max_grad_norm
        flips every gradient). Whole numbers become int, the rest float, so checkpoints compare them exactly.
        A value of the wrong type raises TypeError (bool, 3.0 for steps, "3e-4" for lr), one out of range ValueError."""
        for name, low in (("steps", 1), ("batch_size", 1), ("eval_batch_size", 1), ("warmup_steps", 0),
                          ("eval_every", 0), ("save_every", 0), ("seed", 0)):
            setattr(self, name, whole(f"TrainConfig.{name}", getattr(self, name), low))
        if self.micro_batch_size is not None:  # 0 used to mean "the whole batch"; None says that
            self.micro_batch_size = whole("TrainConfig.micro_batch_size", self.micro_batch_size, 1,
                                          hint="(None: the whole batch at once)")
        self.lr = number("TrainConfig.lr", self.lr, above=0)
        self.weight_decay = number("TrainConfig.weight_decay", self.weight_decay, low=0)
        if self.max_grad_norm is not None:  # 0 would mean "never clip" by accident; None says that
            self.max_grad_norm = number("TrainConfig.max_grad_norm", self.max_grad_norm, above=0,
                                        hint="(None: measure the norm, never clip)")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"TrainConfig.schedule={self.schedule!r}: use 'linear', 'cosine' or 'constant'")
        if self.precision not in _AUTOCAST:
            raise ValueError(f"TrainConfig.precision={self.precision!r}: use one of {', '.join(_AUTOCAST)}")
        for name in ("gradient_checkpointing", "shuffle", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.output_dir is not None:
            if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
                raise TypeError(f"TrainConfig.output_dir must be a folder path or None, got {self.output_dir!r}")
            self.output_dir = os.fspath(self.output_dir)  # state.json stores the config as JSON
        if self.save_every and not self.output_dir:
            raise ValueError("TrainConfig.save_every needs an output_dir to write checkpoints to")


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


def train(model: torch.nn.Module, dataset, config: TrainConfig, *, collate: Callable = torch.utils.data.default_collate,
          eval_dataset=None, optimizer: torch.optim.Optimizer | None = None, loss_fn: Callable = summed_loss,
          resume_from: str | Path | None = None, callbacks: Sequence = (),
          token_count: Callable[[int], float] | None = None) -> dict[str, list]:
    """Train for `config.steps` optimizer steps and return the history (lists, ready to plot).

    Each step: B rows -> micro-batches of `micro_batch_size` -> accumulate (token-weighted) ->
    clip -> optimizer step -> schedule step. `dataset` is any sequence of rows; `collate` turns a
    list of rows into a dict of tensors with `labels`. `resume_from` is a directory written by a
    run with `save_every`: training continues from its step and gives the uninterrupted run's numbers.
    `callbacks`: objects with `on_step_begin(step, model)`, called before each step's first forward pass
    (chapter 01's gradual unfreezing); their optional `params(model)` are made trainable before the
    optimizer is built, so the optimizer holds them while the callback switches them on and off. The
    history then gains "trainable": the trainable parameter count at each step.
    A `loss_fn` may report numbers of its own (DPO's rewards/*): it returns {"loss": S, name: sum, ...},
    each number summed over the same targets as S, and the history gains `name`: per step, the sum over
    the batch divided by N, as for the loss (see `accumulate`; the same names every step).
    `token_count` is passed to `accumulate`: data parallel runs give the global target count there (chapter 02).
    """
    cfg = dataclasses.replace(config)  # validates again: fields may have been assigned since construction
    for arg, rows in (("dataset", dataset), ("eval_dataset", eval_dataset)):
        if rows is not None and len(rows) == 0:
            raise ValueError(f"{arg} is empty: there is nothing to {'train on' if arg == 'dataset' else 'evaluate'}")
    device = next(model.parameters()).device
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
    start, fingerprint = 0, None
    if resume_from is not None:
        fingerprint = dataset_fingerprint(dataset, cfg)
        start, history = load_checkpoint(resume_from, model, optimizer, scheduler, cfg, scaler, data=fingerprint)
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
        if fingerprint is None:  # step 0: from the rows just read, so the data is read no more than training does
            fingerprint = dataset_fingerprint(dataset, cfg, rows)
        lr = scheduler.get_last_lr()[0]
        out = accumulate(model, [collate(rows[i:i + micro]) for i in range(0, len(rows), micro)], loss_fn,
                         dtype=dtype, scaler=scaler, token_count=token_count)
        loss, reported = split_loss(out)
        clash = set(reported) & {"step", "lr", "grad_norm", "eval_step", "eval_loss", "trainable"}
        if clash:
            raise ValueError(f"loss_fn reported {sorted(clash)}, which train() logs itself: give them other names")
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
        for key, value in reported.items():
            history.setdefault(key, []).append(value)
        bar.set_postfix(loss=f"{loss:.4f}")
        last = step + 1 == cfg.steps
        if eval_dataset is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last):
            history["eval_step"].append(step + 1)
            history["eval_loss"].append(mean_loss(model, eval_dataset, collate, cfg.eval_batch_size, loss_fn, dtype))
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(Path(cfg.output_dir) / f"step-{step + 1}", model, optimizer, scheduler, cfg,
                            step + 1, history, scaler, data=fingerprint)
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
                    config: TrainConfig, step: int, history: dict, scaler=None, *, data: dict | None = None) -> Path:
    """Write everything the next step depends on. Tensors go to safetensors, the rest to state.json,
    which is written last and lists every file's size. `data` is `dataset_fingerprint(...)`, so a resume
    on other data is refused.

    Saving over an existing checkpoint never leaves `path` without a complete one, even after a kill or a
    power cut: the new folder is written and synced under a temporary name, the old one is renamed aside
    (`.NAME.old`), the new one renamed into place, and only then the old one deleted. A kill between the
    two renames leaves the old checkpoint aside; `recover_checkpoint` (run by every save and load) puts
    it back and deletes what killed saves left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    save_model(model, str(tmp / "model.safetensors"))  # handles tied weights
    opt = optimizer.state_dict()
    save_file({f"{i}.{k}": v.contiguous() for i, s in opt["state"].items() for k, v in s.items()
               if isinstance(v, torch.Tensor)}, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    np_state = np.random.get_state()
    state = {
        "format": FORMAT, "step": step, "examples_seen": step * config.batch_size, "config": asdict(config),
        "history": history, "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "optimizer_class": type(optimizer).__name__,
        "optimizer_groups": opt["param_groups"],
        "optimizer_scalars": {i: {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)}
                              for i, s in opt["state"].items()},
        "python_rng": random.getstate(),
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "files": {f.name: f.stat().st_size for f in sorted(tmp.iterdir())},
        "dataset": data,
    }
    (tmp / "state.json").write_text(json.dumps(state))
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)  # the folder's entries, so a power cut cannot leave a renamed folder with missing files
    old = _aside(path)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync(path.parent)  # both renames reach the disk before the old copy goes
    shutil.rmtree(old, ignore_errors=True)
    return path


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's contents to the disk (folders only where the OS allows opening them)."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_checkpoint(path: str | Path) -> None:
    """Undo what a save killed halfway left at `path`: put the old checkpoint back if only it survived (killed
    between the two renames), and delete the temporary folders and old copies of killed saves."""
    path = Path(path)
    old = _aside(path)
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if path.parent.is_dir():
        temp = re.compile(re.escape(f".{path.name}.tmp-") + r"[a-z0-9_]{8}")  # mkdtemp's 8 random characters
        for orphan in path.parent.iterdir():
            if temp.fullmatch(orphan.name):
                shutil.rmtree(orphan, ignore_errors=True)


# --- what a resume must match ---

def dataset_fingerprint(dataset, config: TrainConfig, first_batch: list | None = None) -> dict:
    """{"rows": len(dataset), "sample": {index: hash}} over the rows of the run's first batch (up to 8), which
    every checkpoint of the run has trained on; `first_batch` passes those rows when already read.
    "sample" is None when a row holds something that cannot be hashed reliably (only the length is compared)."""
    n = len(dataset)
    index = batch_indices(0, config.batch_size, n, config.seed, config.shuffle)[:8]
    rows = first_batch[:8] if first_batch is not None else [dataset[i] for i in index]
    try:
        sample = {str(i): _row_hash(row) for i, row in zip(index, rows)}
    except TypeError:
        sample = None
    return {"rows": n, "sample": sample}


def _row_hash(row) -> str:
    h = hashlib.sha256()

    def feed(x) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode() + np.ascontiguousarray(x).tobytes())
        elif isinstance(x, Mapping):
            h.update(b"{")
            for k in sorted(x, key=str):
                feed(k)
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        elif x is None or isinstance(x, (str, bytes, bool, numbers.Number)):
            h.update(f"{type(x).__name__}:{x!r};".encode())
        else:  # an object's repr may hold its memory address: a hash of it would differ in every process
            raise TypeError(f"cannot fingerprint a {type(x).__name__}")

    feed(row)
    return h.hexdigest()[:16]


def _check_dataset(path: Path, saved: dict | None, now: dict | None) -> None:
    if not saved or not now:  # checkpoints from before the fingerprint, or a caller that passes none
        return
    if saved["rows"] != now["rows"]:
        raise CheckpointError(f"{path} was trained on a dataset of {saved['rows']} rows; this one has {now['rows']}. "
                              "Resuming on other data would not continue that run")
    if saved["sample"] and now["sample"]:
        differ = [i for i, h in saved["sample"].items() if now["sample"].get(i) != h]
        if differ:
            raise CheckpointError(f"{path} was trained on other data: rows {', '.join(differ)} of this dataset "
                                  f"({now['rows']} rows, as before) differ from the ones the checkpoint saw")


# state.json's keys and the types they must have; checked before anything is loaded.
_STATE_FIELDS = {"format": str, "step": int, "config": dict, "history": dict, "scheduler": dict,
                 "scaler": (dict, type(None)), "optimizer_groups": list, "optimizer_scalars": dict,
                 "python_rng": list, "numpy_rng": list, "files": dict}


def _read_state(path: Path) -> dict:
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} is a file; resume_from must be a checkpoint folder (output_dir/step-N)")
    try:
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no state.json: not a checkpoint, or its save never finished") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / 'state.json'} is not valid JSON (truncated?): {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / 'state.json'} holds a JSON {type(state).__name__}, not a checkpoint's object")
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {state.get('format')!r}, expected {FORMAT!r}")
    wrong = [f"{k} ({'missing' if k not in state else type(state[k]).__name__})" for k, kind in _STATE_FIELDS.items()
             if not isinstance(state.get(k), kind) or (kind is int and isinstance(state.get(k), bool))]
    files, groups, data = state.get("files"), state.get("optimizer_groups"), state.get("dataset")
    if isinstance(files, dict) and not all(Path(f).name == f and isinstance(n, int) for f, n in files.items()):
        wrong.append("files (names and byte sizes)")
    if isinstance(groups, list) and not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        wrong.append("optimizer_groups (each a dict with a params list)")
    if data is not None and not (isinstance(data, dict) and isinstance(data.get("rows"), int)
                                 and isinstance(data.get("sample"), (dict, type(None)))):
        wrong.append("dataset")
    if wrong:
        raise CheckpointError(f"{path / 'state.json'} is damaged or not written by ftlab: bad {', '.join(wrong)}")
    return state


def _check_optimizer(path: Path, state: dict, optimizer: torch.optim.Optimizer) -> None:
    saved = state.get("optimizer_class")  # absent in checkpoints written before it was recorded
    if saved is not None and saved != type(optimizer).__name__:
        raise CheckpointError(f"{path} holds optimizer state of {saved}; this run's optimizer is "
                              f"{type(optimizer).__name__}, whose state (momentum buffers, ...) is of another kind: "
                              f"resume with {saved}, or start afresh")
    sizes = [len(g["params"]) for g in state["optimizer_groups"]]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError(f"{path} has optimizer parameter groups of sizes {sizes}, this optimizer "
                              f"{[len(g['params']) for g in optimizer.param_groups]} (other trainable parameters?)")


def _check_model(path: Path, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """What load_state_dict would complain about, found before it writes a single weight."""
    sd = model.state_dict()
    storage = lambda t: (t.device, t.untyped_storage().data_ptr())  # noqa: E731 -- tied weights share it
    stored = {storage(sd[k]) for k in tensors if k in sd}
    missing = sorted(k for k in sd if k not in tensors and storage(sd[k]) not in stored)  # save_model keeps one of tied
    unexpected = sorted(set(tensors) - set(sd))
    shapes = [f"{k}: checkpoint {tuple(t.shape)} vs model {tuple(sd[k].shape)}" for k, t in tensors.items()
              if k in sd and t.shape != sd[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path} does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                              + (f", shapes {shapes[:3]}" if shapes else ""))


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    config: TrainConfig, scaler=None, *, data: dict | None = None) -> tuple[int, dict]:
    """Restore a checkpoint in place; returns (step, history). Raises CheckpointError, never guesses.

    Everything is checked before the first weight is written (state.json, file sizes, config, optimizer class,
    dataset fingerprint `data`, tensor names and shapes), so a refused resume leaves the model as it was."""
    path = Path(path)
    recover_checkpoint(path)
    state = _read_state(path)
    for name, size in state["files"].items():
        actual = (path / name).stat().st_size if (path / name).is_file() else None
        if actual != size:
            raise CheckpointError(f"{path / name}: {'missing' if actual is None else f'{actual} bytes'}, the "
                                  f"checkpoint recorded {size} bytes: it was truncated or overwritten")
    missing = object()
    changed = {k: (v, getattr(config, k, missing)) for k, v in state["config"].items()
               if k not in _FREE_ON_RESUME and getattr(config, k, missing) != v}
    if changed:
        raise CheckpointError(f"{path} was written with a different config; resuming would not reproduce the run: "
                              + ", ".join(f"{k}: checkpoint {a!r} vs now "
                                          f"{'(no such field)' if b is missing else repr(b)}"
                                          for k, (a, b) in changed.items()))
    _check_dataset(path, state.get("dataset"), data)
    try:
        weights = load_file(str(path / "model.safetensors"))
        tensors = load_file(str(path / "optimizer.safetensors"))
        rng = load_file(str(path / "rng.safetensors"))
        version, internal, gauss = state["python_rng"]
        kind, keys, *rest = state["numpy_rng"]
        opt_state = {int(i): dict(s) for i, s in state["optimizer_scalars"].items()}
        for key, value in tensors.items():
            i, name = key.split(".", 1)
            opt_state.setdefault(int(i), {})[name] = value
    except (ValueError, TypeError, SafetensorError) as e:
        raise CheckpointError(f"{path} is damaged: {e}") from None
    _check_model(path, model, weights)
    _check_optimizer(path, state, optimizer)
    # Nothing above changed anything; from here on the checkpoint is known to fit.
    model.load_state_dict(weights, strict=False)  # strict=False: tied weights are stored once
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(rng["torch"])
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        torch.cuda.set_rng_state(rng[f"cuda{i}"], i)
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return state["step"], state["history"]
