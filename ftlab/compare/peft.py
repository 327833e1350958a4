"""peft beside ours: build the same adapter on both sides, move weights between them, compare one step.

    ours, theirs = lora_pair(base, ["q_proj", "v_proj"], r=8, alpha=16)     # chapter 03
    ours, theirs = prompt_pair(base, "prefix", n_virtual_tokens=8)          # chapter 05
    result = parity(ours, theirs, batch)    # max |difference| of logits, loss and every trained gradient
    assert result["exact"]

`weight_pairs(ours, theirs)` lists (name, our tensor, peft's tensor) for every trained tensor, checked to
match in shape (and, for LoRA, in rank and scaling), so a mismatch fails loudly instead of hiding in a
tolerance. The copy functions move weights along those pairs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ftlab.tuners import lora
from ftlab.tuners.prefix import PrefixTuning
from ftlab.tuners.prompt import PromptTuning

WeightPairs = list[tuple[str, torch.Tensor, torch.Tensor]]  # (name, our tensor, peft's tensor)

# --- LoRA (chapters 03, 04, 06, 08, 09) ------------------------------------------------------------------

def _peft_inner(peft_model):
    """The transformers model inside a peft model (PeftModel -> LoraModel -> model)."""
    inner = getattr(getattr(peft_model, "base_model", None), "model", None)
    if inner is None:
        raise TypeError(f"peft_model must be a peft PeftModel (from get_peft_model), got {type(peft_model).__name__}")
    return inner


def lora_weight_pairs(ours, peft_model, adapter: str = "default") -> WeightPairs:
    """(name, our tensor, peft tensor) for every LoRA A/B weight and fully trained module, checked to match."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

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
    pairs = lora_weight_pairs(ours, peft_model, adapter)
    for _, mine, theirs in pairs:
        mine.copy_(theirs)
    return len(pairs)


@torch.no_grad()
def copy_lora_to_peft(ours, peft_model, adapter: str = "default") -> int:
    """The reverse of copy_lora_from_peft: our LoRA weights into the peft model."""
    pairs = lora_weight_pairs(ours, peft_model, adapter)
    for _, mine, theirs in pairs:
        theirs.copy_(mine)
    return len(pairs)


def lora_pair(base, target_modules, r: int = 8, alpha: float = 16, use_rslora: bool = False,
              trainable: list[str] | None = None, task_type: str = "CAUSAL_LM", seed: int = 0, b_std: float = 0.02):
    """(ours, peft_model) adapting copies of one `base` the same way, with identical LoRA weights.

    peft's freshly initialised A is kept and its B (zeros at init) is filled with N(0, b_std^2), both
    drawn from `seed` (the same seed gives the same pair), because with B = 0 every gradient of A is
    exactly zero on both sides and a parity check of it would prove nothing. The weights are then
    copied into ours (copy_lora_from_peft).
    """
    from peft import LoraConfig, get_peft_model

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


# --- prompt and prefix tuning (chapter 05) ----------------------------------------------------------------

def _peft_encoder(peft_model, adapter: str, kind: str):
    encoders = getattr(peft_model, "prompt_encoder", None)
    if encoders is None or adapter not in encoders:
        raise TypeError(f"peft_model must be a peft model built with {kind}Config (adapter {adapter!r})")
    return encoders[adapter], peft_model.peft_config[adapter]


@torch.no_grad()
def copy_prompt_from_peft(ours: PromptTuning, peft_model, adapter: str = "default") -> None:
    """peft's virtual-token embeddings (PromptTuningConfig) into our soft prompt."""
    if not isinstance(ours, PromptTuning):
        raise TypeError(f"ours must be a PromptTuning, got {type(ours).__name__}")
    encoder, config = _peft_encoder(peft_model, adapter, "PromptTuning")
    weight = encoder.embedding.weight
    if config.num_transformer_submodules != 1 or weight.shape != ours.prompt.shape:
        raise ValueError(f"peft's prompt has shape {tuple(weight.shape)}, ours {tuple(ours.prompt.shape)}")
    ours.prompt.copy_(weight)


@torch.no_grad()
def copy_prefix_from_peft(ours: PrefixTuning, peft_model, adapter: str = "default") -> None:
    """peft's prefix (PrefixTuningConfig): the embedding, and with prefix_projection the MLP, into ours."""
    if not isinstance(ours, PrefixTuning):
        raise TypeError(f"ours must be a PrefixTuning, got {type(ours).__name__}")
    encoder, config = _peft_encoder(peft_model, adapter, "PrefixTuning")
    if bool(config.prefix_projection) != ours.reparameterize:
        raise ValueError(f"peft has prefix_projection={config.prefix_projection}, ours reparameterize="
                         f"{ours.reparameterize}: build both the same way")
    pairs = [(ours.embedding.weight, encoder.embedding.weight)]
    if ours.mlp is not None:
        pairs += [(a, b) for a, b in zip(ours.mlp.parameters(), encoder.transform.parameters())]
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"shape {tuple(a.shape)} (ours) vs {tuple(b.shape)} (peft): different n, hidden or model")
    for a, b in pairs:
        a.copy_(b)


def peft_prefix_params(peft_model, adapter: str = "default") -> list[torch.Tensor]:
    """peft's prefix parameters in the order of our `PrefixTuning` parameters (embedding, then MLP)."""
    encoder, config = _peft_encoder(peft_model, adapter, "PrefixTuning")
    return [encoder.embedding.weight] + (list(encoder.transform.parameters()) if config.prefix_projection else [])


def own_prefix_params(ours: PrefixTuning) -> list[torch.Tensor]:
    return [ours.embedding.weight] + (list(ours.mlp.parameters()) if ours.mlp is not None else [])


def prompt_pair(base: nn.Module, kind: str, n_virtual_tokens: int, reparameterize: bool = True,
              task_type: str = "CAUSAL_LM"):
    """(ours, peft_model) around the same frozen `base` (shared, not copied), with peft's weights in ours.

    kind "prompt": PromptTuningConfig with SAMPLE_VOCAB init (real token embeddings, so the scale is a
    trained model's); kind "prefix": PrefixTuningConfig(prefix_projection=reparameterize) with peft's own
    random init. Neither method changes `base`'s modules, so both wrappers can share it.
    """
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if kind == "prompt":
        config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual_tokens,
                                    prompt_tuning_init="SAMPLE_VOCAB")
        ours = PromptTuning(base, n_virtual_tokens)
        theirs = get_peft_model(base, config)
        copy_prompt_from_peft(ours, theirs)
    elif kind == "prefix":
        config = PrefixTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual_tokens,
                                    prefix_projection=reparameterize)
        ours = PrefixTuning(base, n_virtual_tokens, reparameterize=reparameterize)
        theirs = get_peft_model(base, config)
        copy_prefix_from_peft(ours, theirs)
    else:
        raise ValueError(f"kind={kind!r}: use 'prompt' or 'prefix'")
    return ours, theirs


def prompt_weight_pairs(ours: nn.Module, peft_model, adapter: str = "default") -> WeightPairs:
    """(name, our parameter, peft's parameter) for every trained tensor of a prompt or prefix pair."""
    if isinstance(ours, PromptTuning):
        encoder, _ = _peft_encoder(peft_model, adapter, "PromptTuning")
        return [("prompt", ours.prompt, encoder.embedding.weight)]
    if isinstance(ours, PrefixTuning):
        names = ["embedding.weight"] + ([f"mlp.{n}" for n, _ in ours.mlp.named_parameters()] if ours.mlp else [])
        return list(zip(names, own_prefix_params(ours), peft_prefix_params(peft_model, adapter)))
    raise TypeError(f"ours must be a PromptTuning or a PrefixTuning, got {type(ours).__name__}")


# --- one parity check for every method ----------------------------------------------------------------------

def weight_pairs(ours: nn.Module, peft_model, adapter: str = "default") -> WeightPairs:
    """(name, our tensor, peft's tensor) for every trained tensor: prompt, prefix or LoRA (+ modules_to_save)."""
    if isinstance(ours, (PromptTuning, PrefixTuning)):
        return prompt_weight_pairs(ours, peft_model, adapter)
    return lora_weight_pairs(ours, peft_model, adapter)


def grad_pairs(ours: nn.Module, peft_model, adapter: str = "default") -> WeightPairs:
    """(name, our .grad, peft's .grad) for every trained tensor, after a backward on each side."""
    return [(n, a.grad, b.grad) for n, a, b in weight_pairs(ours, peft_model, adapter)]


def parity(ours: nn.Module, peft_model, batch: dict, adapter: str = "default") -> dict:
    """One forward and backward of both models on `batch` (which must hold `labels`): max |difference|.

    Returns logits_max_abs, loss_abs, loss (ours), grad_max_abs (over every trained tensor), n_grads,
    grad_max_abs_value (the largest gradient, for scale: with LoRA's B = 0 every A gradient is zero and an
    exact match would prove nothing) and `exact` (all differences zero). Gradients are cleared afterwards.
    """
    if "labels" not in batch:
        raise ValueError("batch must contain 'labels' so that both models compute a loss to differentiate")
    pairs = weight_pairs(ours, peft_model, adapter)

    def clear():
        for _, a, b in pairs:
            a.grad = b.grad = None

    outs = []
    for model in (ours, peft_model):
        clear()  # prompt/prefix pairs share one frozen base, so each side's gradients are read before the next
        out = model(**batch)
        out.loss.backward()
        outs.append((out, [(a if model is ours else b).grad for _, a, b in pairs]))
    (o1, g1), (o2, g2) = outs
    missing = [name for (name, _, _), a, b in zip(pairs, g1, g2) if a is None or b is None]
    if missing:
        raise RuntimeError(f"no gradient reached {missing[:3]}: are the adapters in the computation?")
    result = {"logits_max_abs": (o1.logits - o2.logits).abs().max().item(),
              "loss_abs": (o1.loss - o2.loss).abs().item(), "loss": o1.loss.item(),
              "grad_max_abs": max((a - b).abs().max().item() for a, b in zip(g1, g2)),
              "grad_max_abs_value": max(a.abs().max().item() for a in g1), "n_grads": len(pairs)}
    result["exact"] = result["logits_max_abs"] == 0 and result["loss_abs"] == 0 and result["grad_max_abs"] == 0
    clear()
    return result
