"""bitsandbytes beside ours (chapter 04): the same model quantized to NF4 by the library's own loading path.

    theirs = load_with_bitsandbytes(base, compute_dtype=torch.bfloat16)   # bnb Linear4bit layers
"""

from __future__ import annotations

import torch
from torch import nn


def load_with_bitsandbytes(model: nn.Module, blocksize: int = 64, double_quant: bool = True,
                           compute_dtype: torch.dtype = torch.bfloat16,
                           skip: list[str] | tuple[str, ...] = ("lm_head",)):
    """The library's way to the same 4-bit model: save `model`, reload it through transformers with
    `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", ...)` (bitsandbytes' Linear4bit
    layers). Works on CPU with bitsandbytes 0.50. Returns the reloaded model in eval mode on `model`'s device.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 runs no-grad inference through a fused bf16 kernel (it
    repacks the weights on the first such call), which rounds differently from its own dequantize-then-
    matmul path, the one its training and GPU forwards compute. We switch that kernel off, so the model
    computes the same on every machine and can be compared with ours exactly.
    """
    import tempfile

    import transformers

    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_blocksize=blocksize, llm_int8_skip_modules=list(skip))
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(
            tmp, quantization_config=config, dtype=next(model.parameters()).dtype, device_map=str(device))
    for module in reloaded.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return reloaded.eval()
