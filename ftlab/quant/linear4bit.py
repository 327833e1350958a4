"""A frozen 4-bit linear layer (NF4 weights, dequantized on the fly) and model-wide quantization.

    layer = Linear4bit(nn.Linear(576, 576), blocksize=64, double_quant=True, compute_dtype=torch.bfloat16)
    model = quantize_model(model, skip=["lm_head"])          # every other nn.Linear -> Linear4bit, in place
    model = add_lora(model, "all-linear", r=16, alpha=32)      # ftlab.tuners.lora on top: that is QLoRA

Forward: x -> compute dtype; W = dequantize(NF4 codes, absmax) in the compute dtype; y = x W^T + b; y -> x's
dtype. That is bitsandbytes' `Linear4bit` on CPU, step for step, so the two give bit-identical outputs
(chapter 04 asserts it). The backward pass does not keep the dequantized W alive between forward and
backward (it would cost as much memory as a 16-bit weight per layer); like bitsandbytes it saves only
the 4-bit codes and dequantizes again to compute dL/dx = dL/dy W. The weights get no gradient: they are
frozen by construction (buffers, not parameters); only what sits on top (LoRA) trains.
"""

from __future__ import annotations

import torch
from torch import nn

from ftlab.quant.nf4 import (
    DoubleQuantized,
    NF4Tensor,
    bits_per_parameter,
    dequantize_nf4,
    double_dequantize,
    double_quantize,
    quantize_nf4,
)
from ftlab.tuners.targeting import matches

__all__ = ["Linear4bit", "quantize_model", "dequantize_model", "linear4bit_layers", "quantized_nbytes"]


class _Dequantize4bitLinear(torch.autograd.Function):
    """y = x W^T + b with W rebuilt from 4-bit codes in forward and again in backward (nothing large saved)."""

    @staticmethod
    def forward(ctx, x, layer: "Linear4bit", bias):
        weight = layer.dequantized_weight(x.dtype)
        ctx.layer = layer
        ctx.bias_dtype = None if bias is None else bias.dtype
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(grad_out, ctx.layer.dequantized_weight().to(grad_out.dtype))
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0, dtype=ctx.bias_dtype)
        return grad_x, None, grad_bias


class Linear4bit(nn.Module):
    """A frozen nn.Linear whose weight is stored as NF4 (4.5 or ~4.13 bits per weight)."""

    def __init__(self, base: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                 compute_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"compute_dtype={compute_dtype} must be torch.float32, torch.bfloat16 or torch.float16")
        weight = base.weight.detach()
        q = quantize_nf4(weight, blocksize)  # validates blocksize and the weight
        self.in_features, self.out_features = base.in_features, base.out_features
        self.blocksize, self.double_quant, self.compute_dtype = blocksize, bool(double_quant), compute_dtype
        self.weight_dtype = weight.dtype
        self.register_buffer("packed", q.packed)
        if self.double_quant:
            dq = double_quantize(q.absmax)
            self.register_buffer("absmax_codes", dq.codes)
            self.register_buffer("absmax2", dq.absmax2)
            self.register_buffer("absmax_offset", dq.offset.reshape(()))
            self.register_buffer("absmax_code", dq.code)
            self.dq_blocksize = dq.blocksize
        else:
            self.register_buffer("absmax", q.absmax)
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)

    # --- the stored weight ---

    def scales(self) -> torch.Tensor:
        """The float32 absmax of every block (rebuilt from 8 bits when double-quantized)."""
        if not self.double_quant:
            return self.absmax
        return double_dequantize(self.double_quantized_scales())

    def double_quantized_scales(self) -> DoubleQuantized:
        if not self.double_quant:
            raise ValueError("this layer was built with double_quant=False: its scales are plain float32")
        return DoubleQuantized(self.absmax_codes, self.absmax2, self.absmax_offset, self.dq_blocksize,
                               self.absmax_code)

    def nf4(self, dtype: torch.dtype | None = None) -> NF4Tensor:
        """The weight as an NF4Tensor (scales already rebuilt); `dtype` is what dequantizing returns."""
        return NF4Tensor(self.packed, self.scales(), torch.Size((self.out_features, self.in_features)),
                         dtype or self.weight_dtype, self.blocksize)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W (out, in) rebuilt from the codes: codebook[code] * absmax in float32, then cast to `dtype`."""
        return dequantize_nf4(self.nf4(dtype))

    @property
    def weight(self) -> torch.Tensor:
        """The packed uint8 codes, as bitsandbytes' `Linear4bit.weight` is. Not a float tensor on purpose:
        code that would edit a float weight in place (merging an adapter) must fail loudly rather than
        edit a temporary copy; use `dequantized_weight()` to read W."""
        return self.packed

    @property
    def nbytes(self) -> int:
        """Bytes the weight occupies (codes + scales); the bias is not counted."""
        n = self.packed.numel()
        if self.double_quant:
            return n + self.absmax_codes.numel() + 4 * self.absmax2.numel() + 4
        return n + 4 * self.absmax.numel()

    def bits_per_parameter(self) -> float:
        """Measured storage per weight (compare `nf4.bits_per_parameter` for the formula)."""
        return 8 * self.nbytes / (self.in_features * self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return _Dequantize4bitLinear.apply(x, self, bias).to(in_dtype)

    def extra_repr(self) -> str:
        bits = bits_per_parameter(self.blocksize, self.double_quant)
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 blocksize={self.blocksize}, double_quant={self.double_quant} ({bits:.3f} bits/weight), "
                f"compute_dtype={self.compute_dtype}")


def quantizable_linears(model: nn.Module, skip: list[str] | tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Names of the nn.Linear layers of `model` that 4-bit quantization replaces: all but those matching `skip`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(skip, str) or not all(isinstance(k, str) for k in skip):
        raise ValueError(f"skip must be a list of module names such as ['lm_head'], got {skip!r}")
    names = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear) and not matches(n, skip)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer left to quantize (skip={list(skip)})")
    return names


def quantize_model(model: nn.Module, skip: list[str] | tuple[str, ...] = ("lm_head",), blocksize: int = 64,
                   double_quant: bool = True, compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Replace every nn.Linear of `model` (except names matching `skip`) with a Linear4bit; in place.

    The output layer is skipped by default, as QLoRA and bitsandbytes do: its errors land directly on the
    logits, and it is often tied to the input embeddings, which stay unquantized. It is not always small:
    in SmolLM2-135M the tied 49152 x 576 matrix holds about a fifth of the parameters.
    """
    for name in quantizable_linears(model, skip):
        model.set_submodule(name, Linear4bit(model.get_submodule(name), blocksize, double_quant, compute_dtype))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def linear4bit_layers(model: nn.Module) -> dict[str, Linear4bit]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Linear4bit)}


def quantized_nbytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the 4-bit weights and of everything else (parameters and buffers in their own dtype)."""
    layers = linear4bit_layers(model)
    four_bit = sum(m.nbytes for m in layers.values())
    inside = {id(t) for m in layers.values() for t in list(m.buffers())}
    seen, other = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in inside or id(t) in seen:
            continue
        seen.add(id(t))
        other += t.numel() * t.element_size()
    return {"four_bit": four_bit, "other": other, "total": four_bit + other}


@torch.no_grad()
def dequantize_model(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Every Linear4bit back to an nn.Linear holding its dequantized weight (in place)."""
    for name, layer in linear4bit_layers(model).items():
        w = layer.dequantized_weight(dtype)
        lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device=w.device,
                        dtype=w.dtype)
        lin.weight.copy_(w)
        if layer.bias is not None:
            lin.bias.copy_(layer.bias)
        model.set_submodule(name, lin)
    return model
