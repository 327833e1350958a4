"""Free-text answers scored against an item's key points with the packaged MiniLM embedder.

Sentence embedding = mean of MiniLM's last hidden states over real (non-padding) tokens,
L2-normalised (the pooling all-MiniLM-L6-v2 was trained with), so a dot product is a cosine.
A key point is *hit* when some sentence of the answer, or a pair of adjacent sentences, or
the whole answer, has cosine >= THRESHOLD with it. The score is the fraction of key points hit.

This measures coverage, not truth: an answer that names the right concept with the wrong
sign ("fp16 has more exponent bits") can still hit. The self-rating that follows, and the
model answer shown beside the hits, are there for that.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

# Calibrated on written answers (tests/test_quiz_scoring.py: CALIBRATION, 24 answers to 6 items):
# per key point, the best cosine of answers that make the point (35) vs answers that do not (61).
# `calibrate` puts the threshold at 0.534 with balanced accuracy 0.92; fitted on one chapter and
# measured on the other it scores 0.87. The test recomputes all of this.
THRESHOLD = 0.53
PASS = 0.5  # an answer that hits at least half the key points counts as correct for ability/scheduling


@functools.lru_cache(maxsize=1)
def _encoder():
    """MiniLM, loaded on first use only (a chapter's quiz cell must not pay for it up front)."""
    from ftlab import models

    model, tokenizer = models.load("minilm")
    return model.eval(), tokenizer


_cache: dict[str, torch.Tensor] = {}  # text -> vector: key points are embedded once per process, not per answer


def embed(texts: list[str]) -> torch.Tensor:
    """(len(texts), 384) unit vectors: mean pooling over the attention mask, then L2 norm."""
    missing = sorted((t for t in dict.fromkeys(texts) if t not in _cache), key=len)
    threads = torch.get_num_threads()
    # A few short sentences through a 22M model: one CPU thread is fastest, and on a busy machine
    # several threads wait on each other (measured 5x slower on 2 shared cores). Restored after.
    torch.set_num_threads(1)
    try:
        for start in range(0, len(missing), 16):  # batches of similar length: little compute wasted on padding
            chunk = missing[start:start + 16]
            model, tokenizer = _encoder()
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**batch.to(model.device)).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            _cache.update(zip(chunk, torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()))
    finally:
        torch.set_num_threads(threads)
    return torch.stack([_cache[t] for t in texts])


def segments(answer: str) -> list[str]:
    """Sentences, adjacent pairs of sentences, and the whole answer: a key point may span two sentences."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?;])\s+|\n+", answer) if len(s.strip()) > 2]
    pairs = [f"{a} {b}" for a, b in zip(sentences, sentences[1:])]
    return list(dict.fromkeys(sentences + pairs + [answer.strip()]))


def similarities(answer: str, key_points: list[str]) -> list[float]:
    """Per key point, the best cosine with any segment of the answer."""
    if not answer.strip():
        return [0.0] * len(key_points)
    segs = segments(answer)
    vectors = embed(key_points + segs)
    sims = vectors[: len(key_points)] @ vectors[len(key_points):].T
    return sims.max(dim=1).values.tolist()


@dataclass(frozen=True)
class FreeTextScore:
    hits: list[str]
    misses: list[str]
    similarity: list[float]  # per key point, in the item's order

    @property
    def score(self) -> float:
        return len(self.hits) / max(1, len(self.hits) + len(self.misses))


def score(answer: str, key_points: list[str], threshold: float = THRESHOLD) -> FreeTextScore:
    sims = similarities(answer, key_points)
    hits = [k for k, s in zip(key_points, sims) if s >= threshold]
    misses = [k for k, s in zip(key_points, sims) if s < threshold]
    return FreeTextScore(hits, misses, [round(s, 4) for s in sims])


def calibrate(positives: list[float], negatives: list[float]) -> tuple[float, float]:
    """The threshold with the best balanced accuracy separating two lists of cosines, and that accuracy.

    Candidates are midpoints between neighbouring observed values, so ties are broken toward
    the middle of the widest gap rather than hugging one class.
    """
    values = sorted(set(positives) | set(negatives))
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])] or values
    def balanced(t):
        return (sum(p >= t for p in positives) / len(positives) + sum(n < t for n in negatives) / len(negatives)) / 2
    best = max(balanced(t) for t in candidates)
    tied = [t for t in candidates if balanced(t) == best]
    return (tied[0] + tied[-1]) / 2, best
