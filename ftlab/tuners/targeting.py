"""How the tuners pick modules by name: peft's rule, shared by LoRA, adapters, prompts and 4-bit layers."""

from __future__ import annotations

from typing import Iterable

from torch import nn


def matches(name: str, keys: Iterable[str]) -> bool:
    """peft's rule: a module matches a key when its full name equals it or ends with '.' + key."""
    return any(name == k or name.endswith("." + k) for k in keys)


def named_modules_to_train(model: nn.Module, trainable: list[str] | None) -> list[str]:
    """The full names of the modules `trainable` asks to train in full; an unknown name is an error."""
    trainable = list(trainable or [])
    if not all(isinstance(k, str) and k for k in trainable):
        raise ValueError(f"trainable must be a list of module names, got {trainable!r}")
    keep = [n for n, _ in model.named_modules() if n and matches(n, trainable)]
    missing = [k for k in trainable if not any(matches(n, [k]) for n in keep)]
    if missing:
        raise ValueError(f"trainable modules {missing} are not in {type(model).__name__}")
    return keep
