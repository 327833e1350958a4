"""LoRA from scratch: a frozen linear layer plus a trainable low-rank update.

    y = W x + b + (alpha / r) * B (A (dropout(x)))        A: (r, in), B: (out, r), B starts at zero

    model = add_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)   # in place; everything else frozen
    sd = lora_state_dict(model)                                     # only what training changed
    load_lora_state_dict(model, sd)                                 # swap adapters on one base
    model = merge_lora(model)                                       # W <- W + (alpha/r) B A; plain nn.Linear again

The numerics follow peft 0.21 operation for operation (same init, same order of the additions), so a
model built here and a peft model holding the same weights give bit-identical outputs and gradients
(chapter 03 asserts it; `ftlab.compare.peft.copy_lora_from_peft` moves the weights).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Iterable

import torch
from torch import nn

from ftlab.checks import number, positive_int
from ftlab.tuners.targeting import matches, named_modules_to_train

ALL_LINEAR = "all-linear"
# Classification heads that "all-linear" leaves alone (the same convention as peft): they are new,
# full-rank and small, so they are trained directly (pass them in `trainable=`) rather than adapted.
HEAD_NAMES = ("score", "classifier")


def _features(base: nn.Module) -> tuple[int, int]:
    try:
        n_in, n_out = int(base.in_features), int(base.out_features)
    except (AttributeError, TypeError, ValueError):
        raise TypeError(f"base must be an nn.Linear (or a layer with integer in_features/out_features, such as a "
                        f"4-bit linear), got {type(base).__name__}") from None
    return n_in, n_out


class LoRALinear(nn.Module):
    """A frozen `base` layer plus the low-rank update `scaling * lora_B(lora_A(dropout(x)))`.

    `scaling` is alpha / r, or alpha / sqrt(r) with rsLoRA (`use_rslora=True`). `lora_A` is initialised
    like nn.Linear's own weights (Kaiming-uniform, a = sqrt(5)) and `lora_B` with zeros, so a fresh
    layer computes exactly what `base` computes. `base` may be any layer with `in_features` and
    `out_features` (chapter 04 wraps a 4-bit linear); the LoRA weights then use `dtype` (default: the
    base weight's dtype when it is floating point, else float32).
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False,
                 dtype: torch.dtype | None = None):
        super().__init__()
        n_in, n_out = _features(base)
        r, alpha = positive_int("r", r, "(the rank)"), number("alpha", alpha, above=0)
        dropout = number("dropout", dropout, low=0, below=1)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        weight = getattr(base, "weight", None)
        if dtype is None:
            dtype = weight.dtype if isinstance(weight, torch.Tensor) and weight.is_floating_point() else torch.float32
        dev = weight.device if isinstance(weight, torch.Tensor) else None
        self.in_features, self.out_features = n_in, n_out
        self.r, self.alpha, self.use_rslora = r, float(alpha), bool(use_rslora)
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.lora_A = nn.Linear(n_in, r, bias=False, device=dev, dtype=dtype)
        self.lora_B = nn.Linear(r, n_out, bias=False, device=dev, dtype=dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True
        self._original_weight: torch.Tensor | None = None
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ Kaiming-uniform(a=sqrt(5)) (nn.Linear's default, and peft's), B = 0: the update starts at zero."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged or not self.enabled:
            return result
        out_dtype = result.dtype
        x = x.to(self.lora_A.weight.dtype)  # a no-op in float32; matters when the base is quantized
        result = result + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling
        return result.to(out_dtype)

    def delta_weight(self) -> torch.Tensor:
        """Delta W = scaling * B A, shaped like the base weight (out, in)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def _base_weight(self) -> torch.Tensor:
        weight = getattr(self.base, "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise TypeError(f"cannot merge into a {type(self.base).__name__}: its weight is not a floating-point "
                            "tensor (dequantize the base first)")
        return weight

    @torch.no_grad()
    def merge(self, keep_original: bool = False) -> None:
        """W <- W + scaling * B A, in place; forward then skips the LoRA branch.

        Undoing it by subtraction (`unmerge`) gives W back up to float rounding (about one unit in the
        last place); `keep_original=True` keeps a copy of W so that `unmerge` restores it bit for bit.
        """
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; call unmerge() first")
        weight = self._base_weight()
        self._original_weight = weight.detach().clone() if keep_original else None
        weight.data += self.delta_weight().to(weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scaling * B A (or the kept copy of W, if `merge(keep_original=True)`)."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged; nothing to unmerge")
        weight = self._base_weight()
        if self._original_weight is not None:
            weight.data.copy_(self._original_weight)
            self._original_weight = None
        else:
            weight.data -= self.delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return (f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:.4g}, rslora={self.use_rslora}, "
                f"merged={self.merged}")


# --- injecting LoRA into a model ---------------------------------------------------------------------

def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, LoRALinear):
        return False
    if isinstance(module, nn.Linear):
        return True
    return all(isinstance(getattr(module, name, None), int) for name in ("in_features", "out_features"))


def _excluded_heads(model: nn.Module) -> set[str]:
    """The output layer (lm_head) and classification heads, which 'all-linear' skips (as peft does)."""
    skip = set()
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    heads = [out] if out is not None else [getattr(model, n, None) for n in HEAD_NAMES]
    for name, module in model.named_modules():
        if any(module is h for h in heads if h is not None):
            skip.add(name)
    return skip


def find_targets(model: nn.Module, target_modules: list[str] | str) -> list[str]:
    """Full names of the linear layers `add_lora` would wrap."""
    linear = [n for n, m in model.named_modules() if n and _is_linear(m)]
    # Never descend into an existing LoRA layer (its base, lora_A and lora_B are linear too).
    inside = {f"{n}." for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    linear = [n for n in linear if not any(n.startswith(p) for p in inside)]
    if isinstance(target_modules, str):
        if target_modules != ALL_LINEAR:
            raise ValueError(f"target_modules must be a list of module names or {ALL_LINEAR!r}, got {target_modules!r}")
        skip = _excluded_heads(model)
        return [n for n in linear if n not in skip]
    if not isinstance(target_modules, (list, tuple, set)) or not target_modules or \
            not all(isinstance(k, str) and k for k in target_modules):
        raise ValueError(f"target_modules must be a non-empty list of module names (e.g. ['q_proj', 'v_proj']) or "
                         f"{ALL_LINEAR!r}, got {target_modules!r}")
    adapted = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    again = [k for k in target_modules if any(matches(n, [k]) for n in adapted)]
    if again:
        example = next(n for n in adapted if matches(n, again))
        raise ValueError(f"target_modules {again} already have LoRA (e.g. {example}); a layer is adapted once: "
                         "to change its rank or alpha, start again from the base model")
    found = [n for n in linear if matches(n, target_modules)]
    missing = [k for k in target_modules if not any(matches(n, [k]) for n in found)]
    if missing:
        sample = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ValueError(f"target_modules {missing} match no linear layer of {type(model).__name__}; "
                         f"its linear layers are named {sample}")
    return found


def add_lora(model: nn.Module, target_modules: list[str] | str, r: int, alpha: float, dropout: float = 0.0,
             use_rslora: bool = False, trainable: list[str] | None = None,
             layer_cls: type[LoRALinear] | None = None) -> nn.Module:
    """Wrap the target linear layers in LoRALinear, freeze everything else; returns `model` (changed in place).

    `target_modules`: names matched like peft (`"q_proj"` matches `model.layers.0.self_attn.q_proj`),
    or "all-linear" (every linear layer except the output layer / classification head).
    `trainable`: modules trained in full beside the adapters (peft's `modules_to_save`, e.g. a new
    classification head `["classifier"]`); their weights go into `lora_state_dict` too.
    `layer_cls`: a subclass of LoRALinear to wrap with (the lab plugs in the learner's layer).
    Called again on an adapted model, it adds adapters to other layers; the earlier adapters and `trainable`
    modules keep training (as when peft injects into a model that has LoRA). A layer that already has LoRA is
    refused. A rank above min(in, out) of a layer gets a warning: B A cannot have a higher rank than that,
    so the extra ranks add parameters and no expressiveness.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layer_cls = layer_cls or LoRALinear
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, LoRALinear)):
        raise TypeError(f"layer_cls must be LoRALinear or a subclass of it, got {layer_cls!r}")
    targets = find_targets(model, target_modules)
    keep = set(named_modules_to_train(model, trainable)) | set(getattr(model, "lora_trainable_modules", []))
    keep = sorted(n for n in keep if not any(n.startswith(k + ".") for k in keep))  # outermost only
    clash = [t for t in targets if any(t == k or t.startswith(k + ".") for k in keep)]
    if clash:
        raise ValueError(f"{clash} are both LoRA targets and trainable in full; choose one")
    _warn_if_rank_too_high(model, targets, positive_int("r", r, "(the rank)"))
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        model.set_submodule(name, layer_cls(model.get_submodule(name), r, alpha, dropout, use_rslora))
    for layer in lora_layers(model).values():  # this call's adapters and every earlier one
        for p in (layer.lora_A.weight, layer.lora_B.weight):
            p.requires_grad_(True)
    for name in keep:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    model.lora_trainable_modules = keep
    return model


def _warn_if_rank_too_high(model: nn.Module, targets: list[str], r: int) -> None:
    narrow = {n: min(_features(model.get_submodule(n))) for n in targets}
    over = {n: w for n, w in narrow.items() if r > w}
    if over:
        name, width = min(over.items(), key=lambda kv: kv[1])
        warnings.warn(f"r={r} exceeds min(in_features, out_features) of {len(over)} target layer(s) "
                      f"(e.g. {name}: {width}). B A has rank at most {width} there, so the extra ranks add "
                      f"parameters without adding expressiveness; r={width} already allows a full-rank update",
                      UserWarning, stacklevel=3)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear of `model` by full name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _strip_to_base(model: nn.Module, name: str) -> None:
    model.set_submodule(name, model.get_submodule(name).base)


def merge_lora(model: nn.Module, unload: bool = True) -> nn.Module:
    """Fold every adapter into its base weight. `unload=True` (like peft's merge_and_unload) also puts
    the plain base layers back, so inference costs exactly what the original model cost; `unload=False`
    keeps the wrappers (merged) so that `unmerge_lora` can take the adapters out again."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layers to merge (call add_lora first)")
    for name, layer in layers.items():
        if not layer.merged:
            layer.merge()
        if unload:
            _strip_to_base(model, name)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Subtract every merged adapter from its base weight again."""
    for layer in lora_layers(model).values():
        if layer.merged:
            layer.unmerge()
    return model


def set_lora_enabled(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every LoRA branch on or off (off = the frozen base model, with no copy of it)."""
    for layer in lora_layers(model).values():
        layer.enabled = bool(enabled)
    return model


def _state_names(model: nn.Module) -> list[str]:
    names = []
    for n, layer in lora_layers(model).items():
        names += [f"{n}.lora_A.weight", f"{n}.lora_B.weight"]
    for n in getattr(model, "lora_trainable_modules", []):
        names += [f"{n}.{p}" for p, _ in model.get_submodule(n).named_parameters()]
    return names


def lora_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The adapter: LoRA A and B of every layer, plus the fully trained modules (`trainable=`), as copies."""
    names = _state_names(model)
    if not names:
        raise ValueError("model has no LoRA layers (call add_lora first)")
    params = dict(model.named_parameters(remove_duplicate=False))
    return OrderedDict((n, params[n].detach().clone()) for n in names)


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> nn.Module:
    """Copy an adapter saved by `lora_state_dict` into `model` (same targets and ranks); returns `model`."""
    if not isinstance(sd, dict):
        raise TypeError(f"sd must be a dict of tensors from lora_state_dict, got {type(sd).__name__}")
    merged = [n for n, layer in lora_layers(model).items() if layer.merged]
    if merged:
        raise RuntimeError(f"unmerge before loading another adapter: {merged[:3]} are merged into their base")
    expected = _state_names(model)
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyError(f"sd does not fit this model: missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                       f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    params = dict(model.named_parameters(remove_duplicate=False))
    for n in expected:
        if not isinstance(sd[n], torch.Tensor):
            raise TypeError(f"sd[{n!r}] is a {type(sd[n]).__name__}, not a tensor")
        if params[n].shape != sd[n].shape:
            raise ValueError(f"sd[{n!r}] has shape {tuple(sd[n].shape)}, the model expects {tuple(params[n].shape)} "
                             "(a different rank?)")
        if sd[n].is_floating_point() and not torch.isfinite(sd[n]).all():
            # NaN in an adapter may not even show in the logits (CPU attention turns NaN queries into numbers)
            raise ValueError(f"sd[{n!r}] contains NaN or infinity: this adapter is broken (diverged training?)")
    for n in expected:
        params[n].copy_(sd[n])
    return model


def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameter elements (a shared tensor counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_param_count(shapes: Iterable[tuple[int, int]], r: int) -> int:
    """r * (in + out) per adapted (out, in) weight: what LoRA trains instead of in * out."""
    return sum(r * (n_in + n_out) for n_out, n_in in shapes)
