"""Our implementations beside the libraries': parity harnesses and the timing/memory bench.

    bench.py   time_pair, memory_pair, write_result: alternating timings and peak memory, ours / theirs
    peft.py    LoRA, prompt and prefix tuning against peft: build a pair, copy weights, `parity` on a batch
    trl.py     TRL's SFTTrainer, DPOTrainer and PPOTrainer set up to compute what ftlab computes
    bnb.py     the same 4-bit model through transformers + bitsandbytes
    hf.py      a run through transformers' Trainer on the batches ftlab.train draws
    dist.py    ftlab.train.train under `accelerate launch` on several processes: DDP and FSDP

The method modules (tuners, quant, rlhf, sft, transfer) import none of this: they are the algorithm,
and this package is how the course proves them against the libraries. Submodules load on first use
(`compare.trl` imports TRL, which takes seconds), so `from ftlab import compare` is cheap.
"""

from __future__ import annotations

import importlib

from ftlab.compare.bench import memory_pair, time_pair, write_result

_SUBMODULES = ("bench", "bnb", "dist", "hf", "peft", "trl")
__all__ = ["memory_pair", "time_pair", "write_result", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
