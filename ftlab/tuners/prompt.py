"""Prompt tuning (Lester et al. 2021) from scratch: n trainable vectors read before the input embeddings.

    prompt tuning   n vectors P in R^{n x d} placed before the input embeddings:  [P; E(x)]

    model = PromptTuning(base, n_virtual_tokens=8, init="text", init_text="Classify:", tokenizer=tok)
    out = model(input_ids=..., attention_mask=..., labels=...)     # same call as the base model

Every weight of the model stays frozen. The layout (and so the numbers) follows peft 0.21's
PromptTuningConfig: `ftlab.compare.peft.copy_prompt_from_peft` moves peft's weights into ours, and both
then compute the same outputs and gradients. The logits, like peft's, cover the virtual positions too
(n + T of them for T tokens); `ftlab.losses.summed_loss` pads the labels to match.
Prefix tuning, which puts the virtual tokens inside every attention layer instead, is `prefix.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ftlab.losses import IGNORE_INDEX
from ftlab.tuners.virtual_tokens import VirtualTokens, batch_shape, extend_mask

PROMPT_INITS = ("random", "text", "vocab")


def prepend_prompt(prompts: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                   labels: torch.Tensor | None = None):
    """Put (batch, n, d) soft-prompt vectors before (batch, T, d) token embeddings.

    Returns (embeddings (batch, n + T, d), attention mask with n ones in front, labels): 2-D (causal-LM)
    labels get n IGNORE_INDEX positions in front, 1-D (class) labels and None pass through.
    """
    batch, n = prompts.shape[:2]
    embeds = torch.cat([prompts.to(inputs_embeds.dtype), inputs_embeds], dim=1)
    mask = extend_mask(attention_mask, n, batch, inputs_embeds.shape[1], inputs_embeds.device)
    if labels is not None and labels.dim() == 2:
        labels = F.pad(labels, (n, 0), value=IGNORE_INDEX)
    return embeds, mask, labels


class PromptTuning(VirtualTokens):
    """A frozen model reading n trainable embedding vectors before every input (a "soft prompt").

    init: "random" draws N(0, s^2) with s the standard deviation of the model's word embeddings (peft's
    RANDOM uses N(0, 1), far larger than real embeddings; copy weights for parity either way);
    "text" starts from the embeddings of `init_text`'s tokens (repeated or cut to n, like peft's TEXT;
    needs `tokenizer`); "vocab" from the embeddings of n random vocabulary tokens (peft's SAMPLE_VOCAB).
    `trainable`: modules of `model` trained in full beside the prompt (a new head, e.g. ["classifier"]).
    """

    def __init__(self, model: nn.Module, n_virtual_tokens: int, init: str = "random", init_text: str | None = None,
                 *, tokenizer=None, trainable: list[str] | None = None, seed: int = 0):
        if init not in PROMPT_INITS:
            raise ValueError(f"init={init!r}: choose one of {', '.join(PROMPT_INITS)}")
        if init == "text" and (not isinstance(init_text, str) or not init_text.strip()):
            raise ValueError("init='text' needs init_text, a non-empty string")
        if init == "text" and tokenizer is None:
            raise ValueError("init='text' needs tokenizer= to turn init_text into tokens")
        if init != "text" and init_text is not None:
            raise ValueError(f"init_text is only used with init='text' (init={init!r})")
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise TypeError(f"model's input embeddings must be an nn.Embedding, got {type(embeddings).__name__}")
        super().__init__(model, n_virtual_tokens, trainable)  # checks n, then freezes the model
        n, self.init = self.n_virtual_tokens, init
        table = embeddings.weight.detach()
        g = torch.Generator().manual_seed(seed)
        if init == "random":
            values = torch.randn(n, table.shape[1], generator=g) * table.float().std().item()
        else:
            if init == "text":
                ids = tokenizer(init_text)["input_ids"]
                ids = (ids * (n // len(ids) + 1))[:n]
            else:
                ids = torch.randint(0, table.shape[0], (n,), generator=g).tolist()
            values = table[torch.tensor(ids, device=table.device)].float().cpu()
            self.init_token_ids = ids
        # The prompt trains in float32 whatever the model's dtype (it is tiny; peft does the same).
        self.prompt = nn.Parameter(values.to(table.device))

    def prompt_embeddings(self, batch_size: int) -> torch.Tensor:
        """The soft prompt repeated for each row: (batch, n, d)."""
        return self.prompt.unsqueeze(0).expand(batch_size, -1, -1)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, token_type_ids=None,
                **kwargs):
        batch, _, _ = batch_shape(input_ids, inputs_embeds)
        if inputs_embeds is None:
            inputs_embeds = self.model.get_input_embeddings()(input_ids)
        embeds, mask, labels = prepend_prompt(self.prompt_embeddings(batch), inputs_embeds, attention_mask, labels)
        if token_type_ids is not None:  # encoders: the prompt is segment 0
            kwargs["token_type_ids"] = F.pad(token_type_ids, (self.n_virtual_tokens, 0), value=0)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Greedy/sampled generation with the soft prompt (returns the new tokens only)."""
        tokens = self.model.get_input_embeddings()(input_ids)
        embeds, mask, _ = prepend_prompt(self.prompt_embeddings(input_ids.shape[0]), tokens, attention_mask)
        return self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)


def prompt_param_count(n_virtual_tokens: int, hidden: int) -> int:
    """Prompt tuning trains n x d numbers."""
    return n_virtual_tokens * hidden
