"""Is the difference between two methods real? Paired tests for comparisons on one test set, and seeds.

    r = mcnemar(correct_a, correct_b)                 # exact two-sided p-value from the discordant items
    ci = paired_bootstrap(accuracy, preds_a, preds_b, labels)   # CI of metric(a) - metric(b), items resampled
    s = seed_summary([0.81, 0.83, 0.80])              # mean +- sample std: "0.8133 +- 0.015 (3 seeds)"

Two models scored on the *same* items are paired: most items are right (or wrong) for both, and only the
items where they disagree carry information. McNemar's test looks at exactly those: b items only A gets
right, c items only B gets right. If the models were equally good, each disagreement would go either way
with probability 1/2, so b ~ Binomial(b + c, 1/2) and the exact two-sided p-value is

    p = min(1, 2 * P[X <= min(b, c)]),   X ~ Binomial(b + c, 1/2)      (p = 1 when b + c = 0)

The paired bootstrap resamples test items (the same indices for both models) and reports the percentile
interval of metric(A) - metric(B): an interval that excludes 0 says the ranking would survive another
draw of the test set. Neither test covers the other source of noise, training randomness: that needs
several seeds, summarised by `seed_summary` (and, per seed, the paired tests above).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ftlab.checks import number, positive_int, whole


@dataclass(frozen=True)
class McNemarResult:
    """only_a: items A gets right and B wrong (b); only_b: the reverse (c); pvalue: exact, two-sided."""

    only_a: int
    only_b: int
    pvalue: float


def _binary(name: str, values) -> list[int]:
    out = [int(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    if any(v not in (0, 1) for v in out):
        raise ValueError(f"{name} must hold 0/1 (or False/True) per item, got values {sorted(set(out))[:5]}")
    return out


def mcnemar(correct_a: Sequence, correct_b: Sequence) -> McNemarResult:
    """Exact McNemar test: did A and B, scored on the same items, get different shares right?

    correct_a[i] / correct_b[i]: 1 if model A / B got item i right. Returns the discordant counts and the
    exact two-sided p-value (binomial, not the chi-squared approximation, which is poor for small b + c).
    """
    a, b = _binary("correct_a", correct_a), _binary("correct_b", correct_b)
    if len(a) != len(b) or not a:
        raise ValueError(f"correct_a and correct_b must score the same non-empty set of items, "
                         f"got {len(a)} and {len(b)} entries")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # P[X <= k], exact in rationals up to the division
    return McNemarResult(only_a, only_b, min(1.0, 2 * tail))


@dataclass(frozen=True)
class BootstrapResult:
    """difference: metric(A) - metric(B) on the test set as given; [low, high]: the percentile interval."""

    difference: float
    low: float
    high: float
    confidence: float
    n_resamples: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.difference:+.4f} ({self.confidence:.0%} CI {self.low:+.4f} to {self.high:+.4f})"


def paired_bootstrap(metric: Callable, preds_a: Sequence, preds_b: Sequence, labels: Sequence | None = None, *,
                     n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Percentile bootstrap interval of metric(preds_a, labels) - metric(preds_b, labels), resampling items.

    Every resample draws n item indices with replacement and scores *both* models on those same items,
    so the interval reflects the paired difference, not two independent ones. `metric(preds, labels)` is
    any function of the per-item values (accuracy, macro-F1, mean exact match...); with labels=None it is
    called as metric(preds), for per-item scores such as losses or 0/1 hits.
    """
    n_resamples = positive_int("n_resamples", n_resamples)
    confidence = number("confidence", confidence, above=0, below=1)
    seed = whole("seed", seed, low=0)
    a, b = torch.as_tensor(preds_a), torch.as_tensor(preds_b)
    y = None if labels is None else torch.as_tensor(labels)
    if len(a) != len(b) or len(a) == 0 or (y is not None and len(y) != len(a)):
        raise ValueError(f"preds_a, preds_b (and labels) must cover the same non-empty items, got {len(a)}, "
                         f"{len(b)}" + ("" if y is None else f" and {len(y)}") + " entries")

    def score(preds, idx=None):
        p = preds if idx is None else preds[idx]
        return float(metric(p) if y is None else metric(p, y if idx is None else y[idx]))

    g = torch.Generator().manual_seed(seed)
    diffs = []
    for _ in range(n_resamples):
        idx = torch.randint(0, len(a), (len(a),), generator=g)
        diffs.append(score(a, idx) - score(b, idx))
    q = torch.quantile(torch.tensor(diffs, dtype=torch.float64),
                       torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64))
    return BootstrapResult(score(a) - score(b), q[0].item(), q[1].item(), confidence, n_resamples)


@dataclass(frozen=True)
class SeedSummary:
    """A result over seeds: mean, sample standard deviation (n - 1), the number of seeds and the values."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.4g} +- {self.std:.2g} ({self.n} seed{'s' if self.n != 1 else ''})"


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean and spread of one result over training seeds (std is 0 for one seed: say so, not "no noise")."""
    vals = tuple(float(v) for v in values)
    if not vals or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"values must be one or more finite numbers (one per seed), got {list(values)!r}")
    return SeedSummary(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), vals)
