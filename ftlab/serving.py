"""Serving many LoRA adapters from one frozen base, with different adapters in one batch (chapter 09).

    server = MultiAdapterModel(lora_model, {"movies": sd_movies, "electronics": sd_electronics})
    logits = server(["movies", "electronics", "__base__"], **batch).logits    # one forward, three adapters

Swapping adapters (`tuners.lora.load_lora_state_dict`) serves one adapter at a time: requests for other
tasks wait, or the server runs one forward per adapter. Here every adapted layer keeps all adapters
stacked, A: (n, r, in) and B: (n, out, r), and each row gathers its own pair:

    y_i = W x_i + s * B[a_i] (A[a_i] x_i)        a_i = the adapter of request i; slot 0 = "__base__" (A = B = 0)

which is what S-LoRA / Punica / vLLM do with fused kernels; here two batched matmuls (torch.bmm). Modules
trained in full beside the adapters (a classification head) keep one copy per adapter; each row goes
through its adapter's copy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ftlab.tuners import lora

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class MultiLoRALinear(nn.Module):
    """A frozen base layer plus one LoRA update per row, gathered from stacked adapters by `self.ids`."""

    def __init__(self, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float):
        super().__init__()
        if lora_A.dim() != 3 or lora_B.dim() != 3 or lora_A.shape[:2] != (lora_B.shape[0], lora_B.shape[2]):
            raise ValueError(f"lora_A must be (n, r, in) and lora_B (n, out, r); got {tuple(lora_A.shape)} and "
                             f"{tuple(lora_B.shape)}")
        self.base = base
        self.register_buffer("lora_A", lora_A)
        self.register_buffer("lora_B", lora_B)
        self.scaling = scaling
        self.ids: torch.Tensor | None = None  # adapter slot of each row, set by MultiAdapterModel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.ids is None:
            raise RuntimeError("no adapter ids set: call the layer through MultiAdapterModel(adapter_names, ...)")
        rows = x.reshape(x.shape[0], -1, x.shape[-1]).to(self.lora_A.dtype)  # (b, tokens, in)
        h = torch.bmm(rows, self.lora_A[self.ids].transpose(1, 2))  # A[a_i] x: (b, tokens, r)
        delta = torch.bmm(h, self.lora_B[self.ids].transpose(1, 2)) * self.scaling  # s B[a_i] A[a_i] x
        return result + delta.reshape(result.shape).to(result.dtype)


class RowwiseModules(nn.Module):
    """One copy of a fully trained module per adapter; row i goes through copy ids[i]."""

    def __init__(self, copies: list[nn.Module]):
        super().__init__()
        self.copies = nn.ModuleList(copies)
        self.ids: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ids is None:
            raise RuntimeError("no adapter ids set: call the module through MultiAdapterModel(adapter_names, ...)")
        out = None
        for slot in torch.unique(self.ids).tolist():
            rows = (self.ids == slot).nonzero().squeeze(1)
            y = self.copies[slot](x[rows])
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out[rows] = y
        return out


def _stack(name: str, layer: lora.LoRALinear, adapters: dict[str, dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of every adapter for one layer, slot 0 being zeros (the base model)."""
    a_list, b_list = [torch.zeros_like(layer.lora_A.weight)], [torch.zeros_like(layer.lora_B.weight)]
    for adapter, sd in adapters.items():
        for key, template, out in ((f"{name}.lora_A.weight", layer.lora_A.weight, a_list),
                                   (f"{name}.lora_B.weight", layer.lora_B.weight, b_list)):
            if key not in sd:
                raise KeyError(f"adapter {adapter!r} has no {key!r}: it was trained on other layers")
            if sd[key].shape != template.shape:
                raise ValueError(f"adapter {adapter!r}: {key} has shape {tuple(sd[key].shape)}, the model's layer "
                                 f"{tuple(template.shape)} (every adapter needs the same targets and rank)")
            out.append(sd[key].to(template))
    return torch.stack(a_list), torch.stack(b_list)


def _module_copies(name: str, module: nn.Module, adapters: dict[str, dict]) -> list[nn.Module]:
    """The base module, then one copy per adapter holding that adapter's trained weights."""
    copies = [module]
    for adapter, sd in adapters.items():
        own = copy.deepcopy(module)
        state = {p: sd[f"{name}.{p}"] for p, _ in own.named_parameters() if f"{name}.{p}" in sd}
        if len(state) != len(list(own.parameters())):
            raise KeyError(f"adapter {adapter!r} lacks weights of the fully trained module {name!r}")
        own.load_state_dict(state, strict=False)
        copies.append(own)
    return copies


class MultiAdapterModel(nn.Module):
    """One frozen base serving several adapters at once; `forward(adapter_names, **inputs)`, one name per row.

    `lora_model` gives the layout (which layers carry LoRA, which modules are trained in full) and the base
    slot: "__base__" rows skip every LoRA update and use `lora_model`'s own fully trained modules as they
    are, so pass a model fresh from `add_lora` (its head untouched) for "__base__" to mean the base model.
    """

    def __init__(self, lora_model: nn.Module, adapters: dict[str, dict[str, torch.Tensor]]):
        super().__init__()
        layers = lora.lora_layers(lora_model)
        if not layers:
            raise ValueError("lora_model has no LoRA layers: build it with tuners.lora.add_lora, as the adapters were")
        if not adapters or BASE in adapters:
            raise ValueError(f"adapters must be a non-empty dict of lora_state_dicts, not named {BASE!r}")
        self.names = [BASE, *adapters]
        self.model = copy.deepcopy(lora_model).eval()
        self.routed: list[nn.Module] = []
        for name, layer in layers.items():
            multi = MultiLoRALinear(self.model.get_submodule(name).base, *_stack(name, layer, adapters), layer.scaling)
            self.model.set_submodule(name, multi)
            self.routed.append(multi)
        for name in getattr(lora_model, "lora_trainable_modules", []):
            rowwise = RowwiseModules(_module_copies(name, self.model.get_submodule(name), adapters))
            self.model.set_submodule(name, rowwise)
            self.routed.append(rowwise)

    def slots(self, adapter_names: list[str]) -> torch.Tensor:
        unknown = sorted({a for a in adapter_names if a not in self.names})
        if unknown:
            raise KeyError(f"adapter_names has unknown adapters {unknown}; this server holds {self.names}")
        return torch.tensor([self.names.index(a) for a in adapter_names], device=next(self.model.parameters()).device)

    def forward(self, adapter_names: list[str], **inputs):
        n_rows = len(next(iter(inputs.values())))
        if len(adapter_names) != n_rows:
            raise ValueError(f"adapter_names has {len(adapter_names)} entries for a batch of {n_rows} rows")
        ids = self.slots(list(adapter_names))
        for module in self.routed:
            module.ids = ids
        try:
            return self.model(**inputs)
        finally:
            for module in self.routed:
                module.ids = None

    def adapter_bytes(self) -> int:
        """Bytes of the stacked adapters and per-adapter module copies (the base slot's zeros included)."""
        return sum(t.numel() * t.element_size() for m in self.routed
                   for t in ([m.lora_A, m.lora_B] if isinstance(m, MultiLoRALinear) else m.copies.parameters()))
