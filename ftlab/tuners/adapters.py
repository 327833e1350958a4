"""Bottleneck adapters from scratch (Houlsby et al. 2019; Pfeiffer et al. 2021).

A small two-layer network with a residual connection, inserted after a sublayer's output projection:

    A(h) = h + W_up f(W_down h + b_down) + b_up        W_down: (m, d), W_up: (d, m), m = d / reduction_factor

    model = add_adapters(model, reduction_factor=16, placement="houlsby", trainable=["classifier"])
    adapter_param_count(hidden=384, n_layers=6, reduction_factor=16, placement="houlsby")   # the formula
    sd = adapter_state_dict(model)                      # only what training changed
    add_adapters(model, name="electronics"); set_active_adapters(model, "electronics")     # many tasks, one base

Placement "houlsby": two adapters per block, after the attention output projection and after the
feed-forward output projection (each before the block's residual add / layer norm), as in Houlsby et
al.'s adapter-bert and AdapterHub's DoubleSeqBnConfig. "pfeiffer": one adapter per block, placed where
AdapterHub's Pfeiffer configuration (SeqBnConfig: original_ln_before, residual_before_ln, original_ln_after)
places it, after the feed-forward block's Add&Norm, with the block's layer norm applied again after it:

    s = dropout(W_out x)       h = LN(s + r)       output = LN(s + A_0(h) + r)       A_0(h) = A(h) - h

(r: the block's residual input, A_0: the adapter without its own skip). Only post-norm blocks (BERT) have
that Add&Norm; pre-norm Llama blocks accept "houlsby" only. W_up and b_up start at zero, so a freshly
adapted model computes exactly what the base computed; W_down starts small (normal, std `init_std`).
Unlike LoRA, the nonlinearity f keeps A out of any weight matrix: adapters cannot be merged, and every
forward pass pays for 2 * d * m extra multiply-adds per token and adapter.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ftlab.checks import number, positive_int
from ftlab.tuners.targeting import named_modules_to_train

PLACEMENTS = ("houlsby", "pfeiffer")
NONLINEARITIES = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
# AdapterHub's Pfeiffer configuration uses ReLU; Houlsby's adapters here keep GELU, the encoder's own activation.
DEFAULT_NONLINEARITY = {"houlsby": "gelu", "pfeiffer": "relu"}
# Per block architecture: (attention output projection, feed-forward output projection), relative to the block.
SITES = {
    "bert": ("attention.output.dense", "output.dense"),  # BertLayer (MiniLM, tiny-bert)
    "llama": ("self_attn.o_proj", "mlp.down_proj"),  # LlamaDecoderLayer (tiny-llama, SmolLM2) and look-alikes
}
# Per block architecture: the feed-forward block's Add&Norm (a module with dense, dropout and LayerNorm whose
# forward is LayerNorm(dropout(dense(x)) + residual)), where Pfeiffer's adapter goes. Pre-norm Llama has none.
ADD_NORMS = {"bert": "output"}
DEFAULT = "default"


class BottleneckAdapter(nn.Module):
    """h -> h + up(f(down(h))): down-projection to `bottleneck`, nonlinearity, up-projection, residual."""

    def __init__(self, hidden: int, bottleneck: int, nonlinearity: str = "gelu", init_std: float = 1e-2,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        hidden, bottleneck = positive_int("hidden", hidden), positive_int("bottleneck", bottleneck)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity={nonlinearity!r}: choose one of {', '.join(NONLINEARITIES)}")
        self.hidden, self.bottleneck, self.nonlinearity = hidden, bottleneck, nonlinearity
        self.init_std = number("init_std", init_std, low=0)
        self.down = nn.Linear(hidden, bottleneck, dtype=dtype, device=device)
        self.act = NONLINEARITIES[nonlinearity]()
        self.up = nn.Linear(bottleneck, hidden, dtype=dtype, device=device)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W_down ~ N(0, init_std^2), b_down = 0; W_up = 0, b_up = 0: the adapter starts as the identity."""
        nn.init.normal_(self.down.weight, std=self.init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """The adapter without its skip connection: up(f(down(h))), in h's dtype."""
        return self.up(self.act(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.branch(h)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, bottleneck={self.bottleneck}, nonlinearity={self.nonlinearity}"


class AdaptedOutput(nn.Module):
    """A frozen output projection followed by one or more named bottleneck adapters.

    `active` is the name of the adapter applied, a list of names applied one after the other
    (AdapterHub calls this composition "Stack"), or None (the plain base layer). Wrapping the projection
    puts the adapter before the block's dropout, LN(dropout(A(W x)) + x); adapter-bert applies it after,
    LN(A(dropout(W x)) + x). The two agree in eval mode and differ only in which path dropout hits in training.
    """

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.active: str | list[str] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)
        for name in self.active_names():
            h = self.adapters[name](h)
        return h

    def active_names(self) -> list[str]:
        """The adapters applied, in order (empty for the plain base layer)."""
        return [] if self.active is None else [self.active] if isinstance(self.active, str) else list(self.active)

    def extra_repr(self) -> str:
        return f"active={self.active!r}"


class AdaptedAddNorm(AdaptedOutput):
    """A frozen BERT feed-forward output (dense, dropout, Add&Norm) with adapters after its Add&Norm.

    This is where AdapterHub's Pfeiffer configuration puts its one adapter per block. The adapter reads
    the normalised output h = LN(s + r), its skip connection carries the sublayer output s from before the
    norm, and the block's layer norm is applied once more with the residual r:

        s = dropout(W x);   h = LN(s + r);   h <- s + A_0(h) for each active adapter;   output = LN(h + r)

    With W_up = 0 and b_up = 0 that is LN(s + r), bit for bit the base block. Stacked adapters each read
    the previous one's output and keep the same skip s, as AdapterHub's Stack does.
    """

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        base = self.base
        s = base.dropout(base.dense(hidden_states))
        h = base.LayerNorm(s + input_tensor)
        names = self.active_names()
        if not names:
            return h
        for name in names:
            h = self.adapters[name].branch(h) + s
        return base.LayerNorm(h + input_tensor)


def _projection(layer: AdaptedOutput) -> nn.Linear:
    """The frozen linear layer whose output an adapter at this site transforms."""
    return layer.base.dense if isinstance(layer, AdaptedAddNorm) else layer.base


def _site_module(block: nn.Module, path: str) -> nn.Module:
    """The module at `path` under `block`, looking through Add&Norm wrappers that adapters put on the way."""
    module = block
    for part in path.split("."):
        module = (module.base if isinstance(module, AdaptedAddNorm) else module).get_submodule(part)
    return module


def _blocks(model: nn.Module) -> list[tuple[str, str]]:
    """(block name, architecture) for every transformer block that has both adapter sites."""
    found = []
    for name, module in model.named_modules():
        for arch, sites in SITES.items():
            try:
                if all(isinstance(_site_module(module, s), (nn.Linear, AdaptedOutput)) for s in sites):
                    found.append((name, arch))
                    break
            except AttributeError:
                continue
    # BertAttention holds "output.dense" too but not "attention.output.dense": only whole blocks match both.
    return found


def adapter_sites(model: nn.Module, placement: str = "houlsby") -> list[str]:
    """Full names of the modules `add_adapters` wraps, block by block: output projections for "houlsby",
    the feed-forward Add&Norm module for "pfeiffer"."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: choose 'houlsby' (after attention and feed-forward) or "
                         f"'pfeiffer' (after the feed-forward Add&Norm only)")
    blocks = _blocks(model)
    if not blocks:
        known = "; ".join(f"{arch}: {a} and {f}" for arch, (a, f) in SITES.items())
        raise ValueError(f"model ({type(model).__name__}) has no transformer block with the submodules adapters "
                         f"attach to ({known})")
    sites = []
    for block, arch in blocks:
        prefix = f"{block}." if block else ""
        if placement == "houlsby":
            sites += [prefix + s for s in SITES[arch]]
        elif arch in ADD_NORMS:
            sites.append(prefix + ADD_NORMS[arch])
        else:
            raise ValueError(f"placement='pfeiffer' goes after the feed-forward Add&Norm of a post-norm block (BERT); "
                             f"{type(model).__name__}'s {arch} blocks normalise before each sublayer and have no such "
                             f"Add&Norm: use placement='houlsby'")
    return sites


def add_adapters(model: nn.Module, reduction_factor: int = 16, placement: str = "houlsby",
                 nonlinearity: str | None = None, *, name: str = DEFAULT, trainable: list[str] | None = None,
                 train_layer_norms: bool = False, init_std: float = 1e-2) -> nn.Module:
    """Insert bottleneck adapters into every block of `model` (in place) and freeze everything else.

    The bottleneck size is m = hidden // reduction_factor. `nonlinearity`: default GELU for "houlsby",
    ReLU for "pfeiffer" (AdapterHub's Pfeiffer configuration). `trainable`: module names trained in full
    beside the adapters (a new classification head, e.g. ["classifier"]). `train_layer_norms`: also train
    every LayerNorm / RMSNorm weight, as Houlsby et al. did. Calling it again with another `name` adds a
    second adapter at the same sites (one base, several tasks; the placement must be the same) and makes it
    the active one. Returns `model`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    number("reduction_factor", reduction_factor, above=0)
    sites = adapter_sites(model, placement)
    nonlinearity = DEFAULT_NONLINEARITY[placement] if nonlinearity is None else nonlinearity
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity={nonlinearity!r}: choose one of {', '.join(NONLINEARITIES)}")
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"name must be a non-empty string without dots, got {name!r}")
    keep = named_modules_to_train(model, trainable)
    existing = adapter_layers(model)
    if any(name in layer.adapters for layer in existing.values()):
        raise ValueError(f"an adapter named {name!r} exists already; pass another name=")
    if existing and set(existing) != set(sites):
        raise ValueError(f"placement={placement!r} puts adapters at other sites than the model's adapters "
                         f"{adapter_names(model)} (e.g. {sorted(existing)[0]}); give every adapter of one model the "
                         f"same placement")

    for p in model.parameters():
        p.requires_grad_(False)
    for site in sites:
        layer = model.get_submodule(site)
        if not isinstance(layer, AdaptedOutput):
            layer = (AdaptedAddNorm if placement == "pfeiffer" else AdaptedOutput)(layer)
            model.set_submodule(site, layer)
        weight = _projection(layer).weight
        hidden = int(_projection(layer).out_features)
        bottleneck = int(hidden // reduction_factor)
        if bottleneck < 1:
            raise ValueError(f"reduction_factor={reduction_factor} leaves no bottleneck for hidden size {hidden}")
        layer.adapters[name] = BottleneckAdapter(hidden, bottleneck, nonlinearity, init_std,
                                                 dtype=weight.dtype if weight.is_floating_point() else torch.float32,
                                                 device=weight.device)
        layer.active = name
    # Only the newest adapter trains; earlier ones (other tasks) stay as they are.
    for layer in adapter_layers(model).values():
        for key, adapter in layer.adapters.items():
            adapter.requires_grad_(key == name)
    for k in keep:
        model.get_submodule(k).requires_grad_(True)
    if train_layer_norms:
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                module.requires_grad_(True)
    model.adapter_trainable_modules = sorted(set(getattr(model, "adapter_trainable_modules", [])) | set(keep))
    return model


def adapter_layers(model: nn.Module) -> dict[str, AdaptedOutput]:
    """Every adapted projection of `model`, by full name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedOutput)}


def adapter_names(model: nn.Module) -> list[str]:
    layers = list(adapter_layers(model).values())
    return list(layers[0].adapters) if layers else []


def set_active_adapters(model: nn.Module, active: str | list[str] | None) -> nn.Module:
    """Choose the adapter every site applies: a name, a list (stacked, in order), or None (the base model)."""
    names = adapter_names(model)
    if not names:
        raise ValueError("model has no adapters (call add_adapters first)")
    wanted = [] if active is None else [active] if isinstance(active, str) else list(active)
    unknown = [a for a in wanted if a not in names]
    if unknown or (active is not None and not wanted):
        raise ValueError(f"active={active!r}: the model's adapters are {names}")
    for layer in adapter_layers(model).values():
        layer.active = active if isinstance(active, str) or active is None else list(active)
    return model


def _state_names(model: nn.Module, name: str) -> list[str]:
    names = []
    for site, layer in adapter_layers(model).items():
        if name not in layer.adapters:
            raise KeyError(f"no adapter named {name!r} at {site}; the model has {list(layer.adapters)}")
        names += [f"{site}.adapters.{name}.{p}" for p, _ in layer.adapters[name].named_parameters()]
    for n in getattr(model, "adapter_trainable_modules", []):
        names += [f"{n}.{p}" for p, _ in model.get_submodule(n).named_parameters()]
    return names


def adapter_state_dict(model: nn.Module, name: str = DEFAULT) -> "OrderedDict[str, torch.Tensor]":
    """Copies of adapter `name`'s weights (every site) plus the fully trained modules (`trainable=`)."""
    if not adapter_layers(model):
        raise ValueError("model has no adapters (call add_adapters first)")
    params = dict(model.named_parameters(remove_duplicate=False))
    return OrderedDict((n, params[n].detach().clone()) for n in _state_names(model, name))


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], name: str = DEFAULT) -> nn.Module:
    """Copy weights saved by `adapter_state_dict` into adapter `name` of `model`; returns `model`."""
    if not isinstance(sd, dict):
        raise TypeError(f"sd must be a dict of tensors from adapter_state_dict, got {type(sd).__name__}")
    expected = _state_names(model, name)
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyError(f"sd does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    params = dict(model.named_parameters(remove_duplicate=False))
    for n in expected:
        if params[n].shape != sd[n].shape:
            raise ValueError(f"sd[{n!r}] has shape {tuple(sd[n].shape)}, the model expects {tuple(params[n].shape)}")
    for n in expected:
        params[n].copy_(sd[n])
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    """Put the plain projections back (every adapter is dropped); returns `model`."""
    for site, layer in adapter_layers(model).items():
        model.set_submodule(site, layer.base)
    return model


def adapter_param_count(hidden: int, n_layers: int, reduction_factor: int = 16, placement: str = "houlsby") -> int:
    """Parameters the adapters add: per adapter 2 d m + d + m (two weights, two biases), m = d // reduction_factor;
    two adapters per block for Houlsby, one for Pfeiffer (which reuses the block's layer norm, adding none)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: choose one of {PLACEMENTS}")
    m = int(hidden // reduction_factor)
    if m < 1:
        raise ValueError(f"reduction_factor={reduction_factor} leaves no bottleneck for hidden={hidden}")
    per_block = 2 if placement == "houlsby" else 1
    return n_layers * per_block * (2 * hidden * m + hidden + m)
