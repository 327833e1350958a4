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

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


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


# --- LoRA parity: move adapter weights between ftlab.tuners.lora and peft (chapter 03) -------------

def _peft_inner(peft_model):
    """The transformers model inside a peft model (PeftModel -> LoraModel -> model)."""
    inner = getattr(getattr(peft_model, "base_model", None), "model", None)
    if inner is None:
        raise TypeError(f"peft_model must be a peft PeftModel (from get_peft_model), got {type(peft_model).__name__}")
    return inner


def _lora_pairs(ours, peft_model, adapter: str):
    """(name, our tensor, peft tensor) for every LoRA A/B weight and fully trained module, checked to match."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    from ftlab.tuners import lora

    inner = _peft_inner(peft_model)
    theirs = {n for n, m in inner.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}
    mine = lora.lora_layers(ours)
    if set(mine) != theirs:
        only_ours, only_peft = sorted(set(mine) - theirs), sorted(theirs - set(mine))
        raise ValueError(f"the two models adapt different layers: only ours {only_ours[:3]}, only peft {only_peft[:3]}")
    pairs = []
    for name, layer in mine.items():
        other = inner.get_submodule(name)
        if other.r[adapter] != layer.r or abs(other.scaling[adapter] - layer.scaling) > 1e-12 * abs(layer.scaling):
            raise ValueError(f"{name}: ours has r={layer.r}, scaling={layer.scaling}; peft has r={other.r[adapter]}, "
                             f"scaling={other.scaling[adapter]} (alpha or rsLoRA differ)")
        pairs += [(f"{name}.lora_A.weight", layer.lora_A.weight, other.lora_A[adapter].weight),
                  (f"{name}.lora_B.weight", layer.lora_B.weight, other.lora_B[adapter].weight)]
    saved = {n: m for n, m in inner.named_modules()
             if isinstance(m, ModulesToSaveWrapper) and adapter in m.modules_to_save}
    mine_saved = list(getattr(ours, "lora_trainable_modules", []))
    if set(mine_saved) != set(saved):
        raise ValueError(f"fully trained modules differ: ours {sorted(mine_saved)}, "
                         f"peft's modules_to_save {sorted(saved)}")
    for name in mine_saved:
        ours_params = dict(ours.get_submodule(name).named_parameters())
        peft_params = dict(saved[name].modules_to_save[adapter].named_parameters())
        if set(ours_params) != set(peft_params):
            raise ValueError(f"{name}: parameters {sorted(ours_params)} vs {sorted(peft_params)}")
        pairs += [(f"{name}.{p}", ours_params[p], peft_params[p]) for p in ours_params]
    for name, a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape {tuple(a.shape)} (ours) vs {tuple(b.shape)} (peft)")
    return pairs


@torch.no_grad()
def copy_lora_from_peft(ours, peft_model, adapter: str = "default") -> int:
    """Copy peft's LoRA weights (and modules_to_save) into our LoRA model; returns how many tensors moved.

    Both models must adapt the same layers with the same rank and scaling (checked, so an alpha/r
    mismatch fails loudly instead of hiding in a tolerance). Base weights are not touched: build both
    models from copies of one base model.
    """
    pairs = _lora_pairs(ours, peft_model, adapter)
    for _, mine, theirs in pairs:
        mine.copy_(theirs)
    return len(pairs)


@torch.no_grad()
def copy_lora_to_peft(ours, peft_model, adapter: str = "default") -> int:
    """The reverse of copy_lora_from_peft: our LoRA weights into the peft model."""
    pairs = _lora_pairs(ours, peft_model, adapter)
    for _, mine, theirs in pairs:
        theirs.copy_(mine)
    return len(pairs)


def lora_grad_pairs(ours, peft_model, adapter: str = "default"):
    """(name, our .grad, peft's .grad) for every LoRA / fully trained weight, after a backward on each."""
    return [(n, a.grad, b.grad) for n, a, b in _lora_pairs(ours, peft_model, adapter)]


def lora_pair(base, target_modules, r: int = 8, alpha: float = 16, use_rslora: bool = False,
              trainable: list[str] | None = None, task_type: str = "CAUSAL_LM", seed: int = 0, b_std: float = 0.02):
    """(ours, peft_model) adapting copies of one `base` the same way, with identical LoRA weights.

    peft's freshly initialised A is kept and its B (zeros at init) is filled with N(0, b_std^2), both
    drawn from `seed` (the same seed gives the same pair), because with B = 0 every gradient of A is
    exactly zero on both sides and a parity check of it would prove nothing. The weights are then
    copied into ours (copy_lora_from_peft).
    """
    import copy

    from peft import LoraConfig, get_peft_model

    from ftlab.tuners import lora

    ours = lora.add_lora(copy.deepcopy(base), target_modules, r=r, alpha=alpha, use_rslora=use_rslora,
                         trainable=trainable)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, use_rslora=use_rslora,
                        lora_dropout=0.0, task_type=task_type, modules_to_save=list(trainable) if trainable else None)
    with torch.random.fork_rng(devices=[]):  # the same pair for the same seed, without touching the caller's RNG
        torch.manual_seed(seed)
        theirs = get_peft_model(copy.deepcopy(base), config)
        with torch.no_grad():
            for name, p in theirs.named_parameters():
                if ".lora_B." in name:
                    p.copy_(torch.randn(p.shape) * b_std)
    copy_lora_from_peft(ours, theirs)
    return ours, theirs


def lora_parity(ours, peft_model, batch: dict, adapter: str = "default") -> dict:
    """One forward and backward of both models on `batch` (which must hold `labels`): max |difference|.

    Returns logits_max_abs, loss_abs, grad_max_abs (over every LoRA / fully trained weight),
    n_grads, grad_max_abs_value (the largest gradient, for scale) and `exact` (all differences zero).
    """
    if "labels" not in batch:
        raise ValueError("batch must contain 'labels' so that both models compute a loss to differentiate")
    outs = []
    for model in (ours, peft_model):
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        outs.append(out)
    grads = lora_grad_pairs(ours, peft_model, adapter)
    missing = [n for n, a, b in grads if a is None or b is None]
    if missing:
        raise RuntimeError(f"no gradient reached {missing[:3]}: are the adapters in the computation?")
    result = {
        "logits_max_abs": (outs[0].logits - outs[1].logits).abs().max().item(),
        "loss_abs": (outs[0].loss - outs[1].loss).abs().item(),
        "grad_max_abs": max((a - b).abs().max().item() for _, a, b in grads),
        "grad_max_abs_value": max(a.abs().max().item() for _, a, _ in grads),
        "n_grads": len(grads),
    }
    result["exact"] = result["logits_max_abs"] == 0 and result["grad_max_abs"] == 0 and result["loss_abs"] == 0
    for model in (ours, peft_model):
        model.zero_grad(set_to_none=True)
    return result
