"""ftlab.rlhf.judge: best-of-N by exact subset averaging, its KL, sampling, and the gold judges."""

import itertools
import math

import pytest
import torch

from ftlab import data, models
from ftlab.rlhf import judge


def brute_force_best_of_n(proxy, gold, n):
    # average, over every n-subset of a prompt's samples, the gold value of the subset's top proxy score
    out = []
    for p, g in zip(proxy.tolist(), gold.tolist()):
        picks = [g[max(subset, key=lambda i: (p[i], -i))] for subset in itertools.combinations(range(len(p)), n)]
        out.append(sum(picks) / len(picks))
    return torch.tensor(out, dtype=torch.float64)


def test_best_of_n_equals_the_average_over_all_subsets():
    g = torch.Generator().manual_seed(0)
    proxy, gold = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    proxy[0, 3] = proxy[0, 5]  # a tie: the earlier sample wins
    for n in range(1, 8):
        torch.testing.assert_close(judge.best_of_n(proxy, gold, n), brute_force_best_of_n(proxy, gold, n))
    torch.testing.assert_close(judge.best_of_n(proxy, gold, 1), gold.double().mean(1))
    top = gold.double().gather(1, proxy.argmax(1, keepdim=True))[:, 0]
    torch.testing.assert_close(judge.best_of_n(proxy, gold, 7), top)


def test_best_of_n_bad_input_is_named():
    with pytest.raises(ValueError, match="only 3 samples"):
        judge.best_of_n(torch.zeros(2, 3), torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="proxy"):
        judge.best_of_n(torch.zeros(2, 3), torch.zeros(2, 4), 1)
    with pytest.raises(ValueError, match="n"):
        judge.best_of_n(torch.zeros(2, 3), torch.zeros(2, 3), 0)


def test_best_of_n_kl():
    assert judge.best_of_n_kl(1) == 0.0
    assert judge.best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    kls = [judge.best_of_n_kl(n) for n in range(1, 20)]
    assert all(b > a for a, b in zip(kls, kls[1:]))
    with pytest.raises(ValueError, match="n"):
        judge.best_of_n_kl(0)


def test_answer_hits():
    rows = [{"answer": "42"}, {"answer": "BANANA"}]
    hits = judge.answer_hits(rows, [["It is 42.", "It is 420."], ["banana", "Here: BANANA"]])
    assert hits.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="rows"):
        judge.answer_hits(rows, [["42"]])


def test_sample_replies_is_seeded_and_leaves_the_callers_stream():
    model, tok = models.load("tiny-llama")
    prompts = ["Add 2 and 3.", "Name a colour.", "Spell cat."]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = judge.sample_replies(model, tok, prompts, n=3, max_new_tokens=5, seed=1, batch_size=2)
    assert torch.rand(1).item() == before.item()
    assert len(a) == 3 and all(len(r) == 3 for r in a)
    assert a == judge.sample_replies(model, tok, prompts, n=3, max_new_tokens=5, seed=1, batch_size=2)
    assert a != judge.sample_replies(model, tok, prompts, n=3, max_new_tokens=5, seed=2, batch_size=2)
    with pytest.raises(ValueError, match="temperature"):
        judge.sample_replies(model, tok, prompts, n=1, temperature=0)


def test_sentiment_judge_ranks_held_out_review_pairs():
    sentiment = judge.SentimentJudge.fit()
    pairs = data.load("reviews", "test")
    chosen = sentiment.positive([r["chosen"] for r in pairs])
    rejected = sentiment.positive([r["rejected"] for r in pairs])
    assert (chosen > rejected).float().mean().item() > 0.9  # chance would be 0.5
    with pytest.raises(ValueError, match="both labels"):
        judge.SentimentJudge.fit([{"text": "good", "label": 1}])
    with pytest.raises(TypeError, match="list"):
        sentiment.positive("one string")
