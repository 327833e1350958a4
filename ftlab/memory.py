"""How much memory a training step needs, by part: planning arithmetic for chapters 02, 04 and 10.

    est = estimate_memory(6.74e9, "qlora", "paged_adamw", "bf16", batch=1, seq_len=1024, n_layers=32,
                          hidden=4096, intermediate=11008, vocab_size=32000, lora_params=20e6)
    est.gib()      # {"weights": ..., "grads": ..., "optimizer": ..., "activations": ..., "total": ...}

Chapter 02 counts the activations of a real model with saved_tensors_hooks and checks the formula
against them; chapter 10 uses it to choose a method for a given GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
