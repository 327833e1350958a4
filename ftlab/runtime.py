"""Where the course runs: profile, device, seeds, timers and memory probes.

Every notebook asks this module how big to go instead of keeping its own `if` ladder:

    from ftlab import runtime
    P = runtime.profile()          # FTLAB_PROFILE=ci|cpu|gpu, default gpu if CUDA else cpu
    model, tok = models.load(P.causal_lm)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

PROFILE_NAMES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    """Sizes a notebook uses. `ci` must keep a notebook well under two minutes on 2 CPU cores."""

    name: str
    causal_lm: str  # decoder model for LoRA, QLoRA, SFT, reward model, PPO, DPO
    encoder: str  # encoder model for classification, adapters, forgetting
    train_steps: int  # optimizer steps of a typical training run
    batch_size: int  # examples per optimizer step
    micro_batch_size: int  # examples per forward/backward (gradient accumulation below that)
    seq_len: int  # max tokens per example
    eval_every: int  # optimizer steps between evaluations
    n_train: int  # training examples drawn from a course dataset
    n_eval: int  # held-out examples used for evaluation
    bench_repeats: int  # alternating repetitions in benchmarks
    seeds: int = 3  # training seeds per method in a comparison (mean +- spread, paired tests per seed)
    rl_seeds: int = 3  # seeds per method in chapter 08's RL and DPO-family comparisons (a whole RL run each)
    costly_seeds: int = 3  # seeds where every seed retrains every method (chapters 01 and 05): fewer on a laptop
    suggested_hub_model: str | None = None  # a larger model to try when online (never loaded by default)

    @property
    def accumulation_steps(self) -> int:
        return max(1, self.batch_size // self.micro_batch_size)


PROFILES = {
    "ci": Profile("ci", causal_lm="tiny-llama", encoder="tiny-bert", train_steps=12, batch_size=8,
                  micro_batch_size=4, seq_len=64, eval_every=6, n_train=96, n_eval=48, bench_repeats=3,
                  seeds=2, rl_seeds=2, costly_seeds=2),
    "cpu": Profile("cpu", causal_lm="smollm2-135m", encoder="minilm", train_steps=40, batch_size=8,
                   micro_batch_size=4, seq_len=128, eval_every=20, n_train=400, n_eval=200, bench_repeats=5,
                   rl_seeds=1, costly_seeds=2),  # what fits a chapter's 5 minutes; the gpu profile runs 3
    "gpu": Profile("gpu", causal_lm="smollm2-135m", encoder="minilm", train_steps=300, batch_size=32,
                   micro_batch_size=16, seq_len=256, eval_every=50, n_train=4000, n_eval=500, bench_repeats=10,
                   suggested_hub_model="Qwen/Qwen2.5-0.5B-Instruct"),
}


def profile_name() -> str:
    """The active profile's name: $FTLAB_PROFILE if set, else `gpu` with CUDA, else `cpu`."""
    name = os.environ.get("FTLAB_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"FTLAB_PROFILE={name!r} is not a profile; choose one of {', '.join(PROFILE_NAMES)}")
    return name


def profile(name: str | None = None, **overrides) -> Profile:
    """The active (or named) profile; keyword overrides return a modified copy."""
    name = name or profile_name()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def device() -> torch.device:
    """$FTLAB_DEVICE if set (e.g. `cpu`, `cuda:1`, `mps`), else CUDA when present, else CPU."""
    forced = os.environ.get("FTLAB_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def home() -> Path:
    """The course's writable cache and progress folder: $FTLAB_HOME, default ~/.cache/ftlab."""
    path = Path(os.environ.get("FTLAB_HOME") or Path.home() / ".cache" / "ftlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). `deterministic` also asks torch for deterministic kernels."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional for the runtime itself
        pass
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run the block with `model` in eval mode (dropout off), then put back the mode it was in, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _sync(dev: torch.device | str | None) -> None:
    if dev is not None and torch.device(dev).type == "cuda":
        torch.cuda.synchronize(dev)


class Timer:
    """Wall-clock seconds of a block; synchronizes CUDA so GPU work is counted.

        with Timer() as t:
            step()
        t.seconds
    """

    def __init__(self, dev: torch.device | str | None = None):
        self.device = torch.device(dev) if dev is not None else device()
        self.seconds = float("nan")

    def __enter__(self) -> "Timer":
        _sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self._start


@contextlib.contextmanager
def _quiet_c_stderr():
    """Silence C-level stderr (the CPU profiler prints start/stop lines there)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


class AllocationLog:
    """torch's profiler logging every allocation and free on `device` (cpu or cuda) inside a block; `events`
    then holds the allocator's "[memory]" records for that device in time order, each {"ts": microseconds,
    "args": {"Bytes": change, "Total Allocated": running total, ...}}. PeakMemory (CPU) and
    memory.Timeline read it."""

    DEVICE_TYPE = {"cpu": 0, "cuda": 1}  # the profiler's "Device Type" codes

    def __init__(self, dev: torch.device | str = "cpu"):
        self.device = torch.device(dev)
        if self.device.type not in self.DEVICE_TYPE:
            raise ValueError(f"device={str(dev)!r}: the profiler logs allocations on cpu and cuda only")
        self.events: list[dict] = []

    def __enter__(self) -> "AllocationLog":
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=activities, profile_memory=True)
        with _quiet_c_stderr():
            self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        with _quiet_c_stderr():
            self._prof.__exit__(*exc)
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            self._prof.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text())["traceEvents"]
        kind = self.DEVICE_TYPE[self.device.type]
        mine = (e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == kind
                and (kind == 0 or e["args"].get("Device Id", 0) == (self.device.index or 0)))
        self.events = sorted(mine, key=lambda e: e["ts"])


class PeakMemory:
    """Peak tensor memory allocated inside a block, in bytes, above what was live at its start.

    CUDA: the caching allocator's own peak counter. CPU: torch's CPU allocator reports every
    allocation and free to the profiler with a running total, and the peak of that running total
    is the figure we want (activations, gradients, optimizer state: everything torch allocated).
    Memory held by Python objects or libraries outside torch is not counted on either device.

        with PeakMemory() as m:
            step()
        m.peak_bytes, m.peak_mib
    """

    def __init__(self, dev: torch.device | str | None = None):
        self.device = torch.device(dev) if dev is not None else device()
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._log = AllocationLog("cpu").__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._log.__exit__(*exc)
        mem = [e["args"] for e in self._log.events]
        if not mem:
            self.peak_bytes = 0
            return
        start_total = mem[0]["Total Allocated"] - mem[0]["Bytes"]
        self.peak_bytes = max(0, max(a["Total Allocated"] for a in mem) - start_total)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def describe() -> str:
    """One line for the top of a notebook: profile, device, torch version, threads."""
    p, d = profile(), device()
    extra = f" ({torch.cuda.get_device_name(d)})" if d.type == "cuda" else f", {torch.get_num_threads()} threads"
    return f"profile={p.name} device={d}{extra} torch={torch.__version__}"
