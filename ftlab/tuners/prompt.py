"""Prompt tuning (Lester et al. 2021) from scratch: n trainable vectors read before the input embeddings.

    prompt tuning   n vectors P in R^{n x d} placed before the input embeddings:  [P; E(x)]

    model = PromptTuning(base, n_virtual_tokens=8, init="text", init_text="Classify:", tokenizer=tok)
    common = frequent_token_ids(tok, texts, k=5000)                # Lester et al.'s sampling pool
    model = PromptTuning(base, 8, init="labels", label_words=["negative", "positive"], tokenizer=tok,
                         vocab_ids=common)                        # label words first, common tokens after
    out = model(input_ids=..., attention_mask=..., labels=...)     # same call as the base model

Every weight of the model stays frozen. The layout (and so the numbers) follows peft 0.21's
PromptTuningConfig: `ftlab.compare.peft.copy_prompt_from_peft` moves peft's weights into ours, and both
then compute the same outputs and gradients. The logits, like peft's, cover the virtual positions too
(n + T of them for T tokens); `ftlab.losses.summed_loss` pads the labels to match.
Prefix tuning, which puts the virtual tokens inside every attention layer instead, is `prefix.py`.
"""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ftlab.checks import positive_int
from ftlab.losses import IGNORE_INDEX
from ftlab.tuners.virtual_tokens import VirtualTokens, batch_shape, extend_mask

PROMPT_INITS = ("random", "text", "vocab", "labels")


def frequent_token_ids(tokenizer, texts: Iterable[str], k: int = 5000) -> list[int]:
    """The ids of the k most frequent tokens in `texts` (fewer if fewer occur), most frequent first.

    Special tokens ([CLS], [PAD], <|im_start|>...) are left out, and so is every id that never occurs,
    which is how BERT's never-trained [unusedN] rows stay out of a "vocab" initialisation. Lester et al.
    (2021) drew their vocabulary initialisation from the 5,000 most common tokens of T5's vocabulary.
    Ties are broken by the smaller id, so the result does not depend on the order of `texts`.
    """
    k = positive_int("k", k)
    special = set(tokenizer.all_special_ids)
    counts = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must hold strings, got {type(text).__name__}")
        counts.update(i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i not in special)
    if not counts:
        raise ValueError("texts hold no tokens to count (pass some non-empty strings)")
    return [i for i, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]]


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
    needs `tokenizer`); "vocab" from the embeddings of n tokens drawn from `vocab_ids` (Lester et al.
    drew from the 5,000 most common tokens: `frequent_token_ids`; peft's SAMPLE_VOCAB draws from the whole
    table, untrained rows included); "labels" (Lester et al.'s class-label initialisation) gives virtual
    token i the embedding of `label_words[i]` (the mean over its tokens when it has several) and draws the
    remaining n - len(label_words) from `vocab_ids`. `init_token_ids` records the tokens used ("text",
    "vocab"; for "labels" the tokens of the vocab part). `trainable`: modules of `model` trained in full
    beside the prompt (a new head, e.g. ["classifier"]). A model whose forward takes `pool_mask`
    (`ftlab.transfer.MeanPoolClassifier`) gets one that leaves the virtual positions out of its mean.
    """

    def __init__(self, model: nn.Module, n_virtual_tokens: int, init: str = "random", init_text: str | None = None,
                 *, tokenizer=None, vocab_ids: Sequence[int] | None = None, label_words: Sequence[str] | None = None,
                 trainable: list[str] | None = None, seed: int = 0):
        n_virtual_tokens = positive_int("n_virtual_tokens", n_virtual_tokens)
        if init not in PROMPT_INITS:
            raise ValueError(f"init={init!r}: choose one of {', '.join(PROMPT_INITS)}")
        if init == "text" and (not isinstance(init_text, str) or not init_text.strip()):
            raise ValueError("init='text' needs init_text, a non-empty string")
        if init in ("text", "labels") and tokenizer is None:
            raise ValueError(f"init={init!r} needs tokenizer= to turn words into tokens")
        if init != "text" and init_text is not None:
            raise ValueError(f"init_text is only used with init='text' (init={init!r})")
        if init != "labels" and label_words is not None:
            raise ValueError(f"label_words is only used with init='labels' (init={init!r})")
        if init == "labels" and (isinstance(label_words, str) or not label_words
                                 or not all(isinstance(w, str) and w.strip() for w in label_words)):
            raise ValueError(f"init='labels' needs label_words, a list of non-empty strings, got {label_words!r}")
        n_labels = len(label_words) if init == "labels" else 0
        if init == "labels" and n_labels > n_virtual_tokens:
            raise ValueError(f"label_words has {n_labels} words for n_virtual_tokens={n_virtual_tokens}: "
                             f"one virtual token per label word at most")
        needs_vocab = init == "vocab" or (init == "labels" and n_labels < n_virtual_tokens)
        if needs_vocab and (vocab_ids is None or len(vocab_ids) == 0):
            raise ValueError(f"init={init!r} draws tokens from vocab_ids (e.g. frequent_token_ids(tokenizer, texts)); "
                             f"pass a non-empty list of token ids")
        if not needs_vocab and vocab_ids is not None:
            raise ValueError(f"vocab_ids is only used by init='vocab' and by init='labels' with more virtual tokens "
                             f"than label words (init={init!r})")
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise TypeError(f"model's input embeddings must be an nn.Embedding, got {type(embeddings).__name__}")
        table = embeddings.weight.detach()
        if needs_vocab and not all(0 <= int(i) < table.shape[0] for i in vocab_ids):
            raise ValueError(f"vocab_ids must be token ids in [0, {table.shape[0]}), the model's vocabulary")
        super().__init__(model, n_virtual_tokens, trainable)  # freezes the model
        n, self.init = self.n_virtual_tokens, init
        g = torch.Generator().manual_seed(seed)
        if init == "random":
            values = torch.randn(n, table.shape[1], generator=g) * table.float().std().item()
        else:
            rows = []
            if init == "labels":
                for word in label_words:
                    word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
                    rows.append(table[torch.tensor(word_ids, device=table.device)].float().mean(0).cpu())
            if init == "text":
                ids = tokenizer(init_text)["input_ids"]
                ids = (ids * (n // len(ids) + 1))[:n]
            elif n > len(rows):  # "vocab", or "labels" with more virtual tokens than label words
                pool = torch.as_tensor(list(vocab_ids), dtype=torch.long)
                ids = pool[torch.randint(0, len(pool), (n - len(rows),), generator=g)].tolist()
            else:
                ids = []
            values = torch.stack(rows + list(table[torch.tensor(ids, dtype=torch.long, device=table.device)]
                                             .float().cpu()))
            self.init_token_ids = ids
        # The prompt trains in float32 whatever the model's dtype (it is tiny; peft does the same).
        self.prompt = nn.Parameter(values.to(table.device))
        # A classifier that averages over positions (transfer.MeanPoolClassifier) takes `pool_mask`: the
        # positions its mean covers. Leaving the virtual tokens out, its head averages the sentence's own tokens
        # as with every other method, and the soft prompt acts on them through attention only.
        self.pools_positions = "pool_mask" in inspect.signature(model.forward).parameters

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
        if self.pools_positions:  # average the real tokens only: the prompt acts through attention
            kwargs["pool_mask"] = F.pad(mask[:, self.n_virtual_tokens:], (self.n_virtual_tokens, 0), value=0)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Generation with the soft prompt; returns the prompt's ids followed by the new tokens, as the base
        model's generate does (so `ftlab.sft.generate` serves both)."""
        tokens = self.model.get_input_embeddings()(input_ids)
        embeds, mask, _ = prepend_prompt(self.prompt_embeddings(input_ids.shape[0]), tokens, attention_mask)
        new = self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)  # from embeddings: new ids only
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


def prompt_param_count(n_virtual_tokens: int, hidden: int) -> int:
    """Prompt tuning trains n x d numbers."""
    return n_virtual_tokens * hidden
