"""ftlab.stats against scipy and textbook cases: exact McNemar, the paired bootstrap, seed summaries."""

import random

import pytest
import scipy.stats
import torch

from ftlab import evaluation, stats


def test_mcnemar_textbook_case():
    # 1 item only A gets right, 7 only B: p = 2 * P[X <= 1], X ~ Bin(8, 1/2) = 2 * 9/256
    a = [1] * 20 + [1] + [0] * 7 + [0] * 5
    b = [1] * 20 + [0] + [1] * 7 + [0] * 5
    r = stats.mcnemar(a, b)
    assert (r.only_a, r.only_b) == (1, 7)
    assert r.pvalue == pytest.approx(18 / 256, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_equals_scipy_binomtest(seed):
    rng = random.Random(seed)
    n = rng.choice([10, 60, 400, 3000])
    a = [rng.random() < 0.7 for _ in range(n)]
    b = [rng.random() < 0.6 + 0.1 * seed / 5 for _ in range(n)]
    r = stats.mcnemar(a, b)
    discordant = r.only_a + r.only_b
    want = scipy.stats.binomtest(r.only_a, discordant, 0.5).pvalue if discordant else 1.0
    assert r.pvalue == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_mcnemar_no_disagreement_and_bad_input():
    assert stats.mcnemar([1, 0, 1], [1, 0, 1]).pvalue == 1.0
    assert stats.mcnemar(torch.tensor([True, False]), torch.tensor([False, True])).pvalue == 1.0
    with pytest.raises(ValueError, match="correct_a and correct_b"):
        stats.mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="correct_b must hold 0/1"):
        stats.mcnemar([1, 0], [2, 0])


def test_paired_bootstrap_matches_scipy_percentile_interval():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (300,), generator=g)
    preds_a = torch.where(torch.rand(300, generator=g) < 0.9, labels, 1 - labels)
    preds_b = torch.where(torch.rand(300, generator=g) < 0.7, labels, 1 - labels)
    ours = stats.paired_bootstrap(evaluation.accuracy, preds_a, preds_b, labels, n_resamples=20000, seed=1)
    ref = scipy.stats.bootstrap((preds_a.numpy(), preds_b.numpy(), labels.numpy()),
                                lambda a, b, y, axis: (a == y).mean(axis) - (b == y).mean(axis), paired=True,
                                vectorized=True, n_resamples=20000, method="percentile", random_state=2)
    observed = (preds_a == labels).double().mean() - (preds_b == labels).double().mean()
    assert ours.difference == pytest.approx(observed.item())
    # two Monte Carlo estimates of the same quantiles: they agree to well under one item's worth (1/300)
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.004)
    assert ours.excludes_zero()


def test_paired_bootstrap_sees_no_difference_between_equal_models_and_is_seeded():
    scores = torch.rand(200, generator=torch.Generator().manual_seed(3))
    same = stats.paired_bootstrap(lambda s: s.mean(), scores, scores.clone())
    assert same.difference == 0 and same.low == 0 and same.high == 0 and not same.excludes_zero()
    other = scores.roll(1)
    assert stats.paired_bootstrap(lambda s: s.mean(), scores, other, seed=5) == \
        stats.paired_bootstrap(lambda s: s.mean(), scores, other, seed=5)
    with pytest.raises(ValueError, match="same non-empty items"):
        stats.paired_bootstrap(lambda s: s.mean(), scores, scores[:10])
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_bootstrap(lambda s: s.mean(), scores, other, confidence=95)


def test_seed_summary():
    s = stats.seed_summary([0.8, 0.9, 1.0])
    assert (s.mean, s.n) == (pytest.approx(0.9), 3)
    assert s.std == pytest.approx(0.1)  # sample standard deviation (n - 1)
    assert str(s) == "0.9 +- 0.1 (3 seeds)"
    assert stats.seed_summary([0.5]).std == 0.0
    with pytest.raises(ValueError, match="one per seed"):
        stats.seed_summary([])
    with pytest.raises(ValueError, match="one per seed"):
        stats.seed_summary([0.5, float("nan")])
