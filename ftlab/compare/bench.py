"""Side-by-side measurement of our implementation and the library's.

    t = time_pair(lambda: ours_step(), lambda: lib_step(), repeats=5)   # alternating, one process
    m = memory_pair(lambda: ours_step(), lambda: lib_step())
    write_result("train_loop", {"time": t, "memory": m})

CPU timings on shared machines swing 2-5x from minute to minute, so the two sides are never
timed in separate phases: they alternate (ours, theirs, theirs, ours, ...), so slow drifts hit both
sides alike. The ratio is the ratio of the two medians, the numbers printed beside it; the per-pair
ratios show how much noise there is.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from ftlab import runtime

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def time_pair(ours: Callable[[], object], theirs: Callable[[], object], repeats: int = 5, warmup: int = 1,
              dev: torch.device | str | None = None) -> dict:
    """Seconds per call of each side, alternating. `ratio` = ours_median_s / theirs_median_s, so it agrees
    with the two medians printed beside it; `pair_ratios` (ours_i / theirs_i per pair) show how far the
    machine's noise moves it. (The median of the pair ratios can disagree with the medians, even on which
    side is faster, when the timings are noise.)"""
    for _ in range(warmup):
        ours(), theirs()
    t_ours, t_theirs = [], []
    for i in range(repeats):
        # Alternate who goes first too, so neither side always runs on a warmer cache.
        order = [(ours, t_ours), (theirs, t_theirs)] if i % 2 == 0 else [(theirs, t_theirs), (ours, t_ours)]
        for fn, times in order:
            with runtime.Timer(dev) as t:
                fn()
            times.append(t.seconds)
    ours_median, theirs_median = statistics.median(t_ours), statistics.median(t_theirs)
    return {"ours_s": t_ours, "theirs_s": t_theirs, "ours_median_s": ours_median, "theirs_median_s": theirs_median,
            "ratio": ours_median / theirs_median, "pair_ratios": [a / b for a, b in zip(t_ours, t_theirs)]}


def memory_pair(ours: Callable[[], object], theirs: Callable[[], object],
                dev: torch.device | str | None = None) -> dict:
    """Peak bytes each side allocates (runtime.PeakMemory); `ratio` = ours / theirs."""
    peaks = []
    for fn in (ours, theirs):
        with runtime.PeakMemory(dev) as m:
            fn()
        peaks.append(m.peak_bytes)
    return {"ours_bytes": peaks[0], "theirs_bytes": peaks[1], "ratio": peaks[0] / max(peaks[1], 1)}


def environment() -> dict:
    """What a benchmark number depends on, stored beside it."""
    dev = runtime.device()
    return {"profile": runtime.profile_name(), "device": str(dev), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_result(name: str, payload: dict, folder: Path = RESULTS) -> Path:
    """Write benchmarks/results/<name>.json (payload + environment) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "environment": environment(), **payload}, indent=2) + "\n")
    return path
