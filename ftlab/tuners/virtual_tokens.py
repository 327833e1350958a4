"""What prompt tuning and prefix tuning share: a frozen model behind n trainable "virtual tokens".

    class PromptTuning(VirtualTokens): ...      # tuners/prompt.py
    class PrefixTuning(VirtualTokens): ...      # tuners/prefix.py

The wrapper freezes the model (except `trainable` modules such as a new classification head), passes
`config` and `get_input_embeddings` through so that generation utilities and collators treat it as the
model, and widens the attention mask so every real token sees the n virtual ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ftlab.checks import positive_int
from ftlab.tuners.targeting import named_modules_to_train


class VirtualTokens(nn.Module):
    """Base of PromptTuning and PrefixTuning: `model` frozen except `trainable`, n virtual tokens."""

    def __init__(self, model: nn.Module, n_virtual_tokens: int, trainable: list[str] | None):
        super().__init__()
        self.model, self.n_virtual_tokens = model, positive_int("n_virtual_tokens", n_virtual_tokens)
        self.trainable_modules = named_modules_to_train(model, trainable)  # matched like peft: equal or '.name'
        model.requires_grad_(False)
        for name in self.trainable_modules:
            model.get_submodule(name).requires_grad_(True)

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()


def batch_shape(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> tuple[int, int, torch.device]:
    """(batch, tokens, device) of whichever of input_ids / inputs_embeds was given (exactly one must be)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    x = input_ids if input_ids is not None else inputs_embeds
    return x.shape[0], x.shape[1], x.device


def extend_mask(attention_mask: torch.Tensor | None, n: int, batch: int, seq_len: int,
                device: torch.device) -> torch.Tensor:
    """[1 ... 1 (n virtual tokens); attention_mask]: the virtual tokens are always visible.
    A missing attention_mask means every real token is visible too."""
    if attention_mask is None:
        attention_mask = torch.ones(batch, seq_len, dtype=torch.long, device=device)
    return torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
