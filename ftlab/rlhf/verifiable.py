"""A checkable reward: a rule in place of a learned reward model, in a sequence classifier's layout.

Chapter 08 needs a task where "the policy learned" is a number, not a feeling. A rule gives one:
a review counts as positive when it holds a word from POSITIVE and none from NEGATIVE.

    rule = KeywordReward(tok)                                     # the default word lists
    rule.verdicts(["A great film.", "Dull and slow.", "It is a film."])   # tensor([1., -1., 0.])
    ppo.sequence_scores(rule, query_responses, pad_id, context_length)   # like any reward model
    trl_trainer(..., reward_model=rule, ...)                      # and like one for TRL's PPOTrainer

The rule reads tokens, so that it can run where a reward model runs: a word is found where the
tokens of one of its spellings (" great", "great", " Great", "Great") appear in a row. Per position
the backbone keeps two flags, "a positive word so far" and "a negative word so far" (a running
maximum), and the head turns them into the verdict

    r = pos * (1 - neg) - neg          +1: positive words only, -1: any negative word, 0: neither

so the score at a response's last token is the verdict on everything up to it. The rule is
deliberately simple, and so it can be gamed ("not great" counts as positive; so does praise of
something other than what was asked): the chapter's run without the KL penalty shows where that leads.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

POSITIVE = ("good", "great", "excellent", "amazing", "wonderful", "fantastic", "brilliant", "superb", "perfect",
            "outstanding", "love", "loved", "lovely", "enjoyable", "enjoyed", "fun", "delightful", "beautiful",
            "impressive", "best", "masterpiece", "recommend", "gripping", "charming", "stunning", "clever",
            "reliable", "sturdy", "favorite")
NEGATIVE = ("bad", "poor", "terrible", "awful", "boring", "dull", "disappointing", "disappointed", "worst",
            "waste", "weak", "hate", "hated", "broken", "useless", "annoying", "frustrating", "cheap", "tedious",
            "fails", "failed", "unfortunately", "slow", "mess")


def spellings(tokenizer, words) -> list[list[int]]:
    """The token sequences of each word as it may appear: " w", "w", " W", "W" (duplicates dropped)."""
    out = set()
    for word in words:
        if not isinstance(word, str) or not word.strip() or " " in word.strip():
            raise ValueError(f"word {word!r}: the rule takes single words without spaces")
        word = word.strip()
        for s in (" " + word, word, " " + word.capitalize(), word.capitalize()):
            out.add(tuple(tokenizer.encode(s, add_special_tokens=False)))
    return [list(ids) for ids in sorted(out)]


class KeywordFlags(nn.Module):
    """The backbone: per position, [positive word so far, negative word so far] as 0/1 floats, (B, L, 2).

    A word is found at position t when its tokens end there (matched over every window of its length).
    """

    def __init__(self, positive: list[list[int]], negative: list[list[int]]):
        super().__init__()
        by_length: dict[int, list[list[int]]] = {}
        for flag, seqs in enumerate((positive, negative)):
            for ids in seqs:
                by_length.setdefault(len(ids), []).append([flag] + ids)
        for length, rows in by_length.items():  # patterns_<length>: (n, 1 + length), column 0 = which flag
            self.register_buffer(f"patterns_{length}", torch.tensor(rows))
        self.lengths = sorted(by_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **unused):
        # unused: position_ids, return_dict, use_cache, output_hidden_states (what TRL and ppo pass a backbone)
        if attention_mask is not None:
            input_ids = input_ids.masked_fill(attention_mask == 0, -1)  # padding matches no word
        found = torch.zeros(*input_ids.shape, 2, device=input_ids.device)
        for length in self.lengths:
            if length > input_ids.shape[1]:
                continue
            table = getattr(self, f"patterns_{length}")
            windows = input_ids.unfold(1, length, 1)  # (B, L - length + 1, length)
            hits = (windows.unsqueeze(2) == table[:, 1:]).all(-1)  # (B, W, n): window equals pattern
            for flag in (0, 1):
                found[:, length - 1:, flag] += hits[..., table[:, 0] == flag].any(-1).float()  # at its last token
        so_far = found.clamp(max=1).cummax(dim=1).values  # 1 from the first matching word onwards
        return BaseModelOutput(last_hidden_state=so_far, hidden_states=(so_far,))


class Verdict(nn.Module):
    """The head: r = pos * (1 - neg) - neg, per position, (B, L, 1)."""

    def forward(self, flags: torch.Tensor) -> torch.Tensor:
        pos, neg = flags.unbind(-1)
        return (pos * (1 - neg) - neg).unsqueeze(-1)


class KeywordReward(nn.Module):
    """+1 for a text with a POSITIVE word and no NEGATIVE one, -1 with a NEGATIVE word, 0 otherwise.

    Laid out like transformers' sequence classifiers (a backbone under `base_model_prefix`, a `score`
    head applied at every position), so `ppo` and TRL's `get_reward` use it as they use a reward model.
    """

    base_model_prefix = "flags"

    def __init__(self, tokenizer, positive=POSITIVE, negative=NEGATIVE):
        super().__init__()
        positive_ids, negative_ids = spellings(tokenizer, positive), spellings(tokenizer, negative)  # checks each word
        shared = {w.strip().lower() for w in positive} & {w.strip().lower() for w in negative}
        if shared:
            raise ValueError(f"words {sorted(shared)} are in both the positive and the negative list")
        self.tokenizer = tokenizer
        self.flags = KeywordFlags(positive_ids, negative_ids)
        self.score = Verdict()

    @torch.no_grad()
    def verdicts(self, texts: list[str]) -> torch.Tensor:
        """The rule's verdict on each text (no chat template, no prompt): (N,) of -1, 0, +1."""
        out = []
        for text in texts:
            ids = torch.tensor([self.tokenizer.encode(text, add_special_tokens=False) or [0]],
                               device=next(self.flags.buffers()).device)
            out.append(self.score(self.flags(ids).last_hidden_state)[0, -1, 0])
        return torch.stack(out).cpu() if out else torch.zeros(0)
