"""How much memory a training step needs, by part: planning arithmetic for chapters 02, 04 and 10.

    est = estimate_memory(6.74e9, "qlora", "paged_adamw", "bf16", batch=1, seq_len=1024, n_layers=32,
                          hidden=4096, intermediate=11008, vocab_size=32000, lora_params=20e6)
    est.gib()      # {"weights": ..., "grads": ..., "optimizer": ..., "activations": ..., "total": ...}

Chapter 02 counts the activations of a real model with saved_tensors_hooks and checks the formula
against them; chapter 10 uses it to choose a method for a given GPU. `Timeline` records the memory a
block allocates over time, to watch a step's activations pile up in forward and drain in backward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ftlab.runtime import AllocationLog

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


class Timeline:
    """Bytes allocated on a device over the time of a block, above what was allocated when it began.

        with Timeline() as tl:
            step()
        plt.plot(tl.seconds, [b / 2**20 for b in tl.bytes])

    torch's profiler logs every allocation and free with the allocator's running total ("Total Allocated"),
    on the CPU and on CUDA alike; the timeline is that total, one point per event. Memory that torch does
    not allocate (Python objects, other libraries) is not in it. The profiler slows the block down: use it
    to look at memory, not to time.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        try:
            self._log = AllocationLog(device)
        except ValueError as e:
            raise ValueError(f"Timeline({e})") from None
        self.device = self._log.device
        self.seconds: list[float] = []
        self.bytes: list[int] = []

    def __enter__(self) -> "Timeline":
        self._log.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._log.__exit__(*exc)
        mem = self._log.events
        if not mem:
            return
        start = mem[0]["args"]["Total Allocated"] - mem[0]["args"]["Bytes"]  # the level before the first event
        self.seconds = [(e["ts"] - mem[0]["ts"]) / 1e6 for e in mem]
        self.bytes = [e["args"]["Total Allocated"] - start for e in mem]

    @property
    def peak_bytes(self) -> int:
        return max(self.bytes, default=0)
