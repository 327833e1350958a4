"""Adaptive selection under the 1PL model: distinct, spread, moves with the answers, reproducible."""

import math

import pytest

from ftlab.quiz import bank
from ftlab.quiz.adaptive import AdaptiveTest, Response, estimate, map_theta, sigmoid


def make_items(per_level=4, topics=("a", "b")):
    """A synthetic bank: `per_level` items at every difficulty, topics alternating."""
    items = []
    for d in range(1, 6):
        for k in range(per_level):
            items.append(bank.NumericItem(id=f"d{d}-{k}", chapter="05", kind="numeric",
                                          topics=[topics[k % len(topics)]], difficulty=d, prompt="p", explanation="e",
                                          see="chapters/05_x.ipynb#A",
                                          value=1, tolerance=0, unit="u"))
    return items


def run(test, answer):
    """Answer a whole test with answer(item, k) -> score; return the difficulties asked."""
    while not test.done:
        item = test.next_item()
        test.record(item, answer(item, len(test.scores)))
    return [i.difficulty for i in test.asked]


def test_five_distinct_questions_with_spread_difficulty():
    for seed in range(20):
        test = AdaptiveTest(make_items(), seed=seed)
        levels = run(test, lambda item, k: float(k % 2 == 0))
        assert len(test.asked) == 5 and len({i.id for i in test.asked}) == 5
        assert len(set(levels)) >= 3, levels


def test_next_question_harder_after_correct_easier_after_wrong():
    for seed in range(10):
        right = AdaptiveTest(make_items(), seed=seed)
        wrong = AdaptiveTest(make_items(), seed=seed)
        up, down = run(right, lambda i, k: 1.0), run(wrong, lambda i, k: 0.0)
        assert up[0] == down[0] == 3  # no history: start at the middle
        assert up[1] > up[0] and down[1] < down[0]
        assert sum(up[1:]) > sum(down[1:])
        assert all(b > a for a, b in zip(right.trace, right.trace[1:]))  # ability rises after each correct answer
        assert all(b < a for a, b in zip(wrong.trace, wrong.trace[1:]))


def test_same_seed_same_test_and_seeds_differ():
    def sequence(seed):
        test = AdaptiveTest(make_items(), seed=seed)
        run(test, lambda i, k: float(k != 2))
        return [i.id for i in test.asked]

    assert sequence(7) == sequence(7)
    assert len({tuple(sequence(s)) for s in range(10)}) > 1


def test_history_is_used_and_fresh_items_come_first():
    items = make_items()
    history = [Response(i.id, tuple(i.topics), i.difficulty, 1.0) for i in items if i.difficulty <= 3]
    test = AdaptiveTest(items, history=history, seed=0)
    assert test.ability.overall > 1
    first = test.next_item()
    assert first.difficulty >= 4 and first.id not in {r.item_id for r in history}


def test_never_repeats_and_stops_at_pool_size():
    items = make_items(per_level=1)[:3]
    test = AdaptiveTest(items, length=5, seed=0)
    run(test, lambda i, k: 1.0)
    assert sorted(i.id for i in test.asked) == sorted(i.id for i in items)
    with pytest.raises(StopIteration):
        test.next_item()


def test_record_refuses_an_item_not_asked():
    items = make_items()
    test = AdaptiveTest(items, seed=0)
    asked = test.next_item()
    with pytest.raises(ValueError):
        test.record(next(i for i in items if i is not asked), 1.0)


def test_map_estimate_matches_posterior_mode():
    """Check Newton's answer against a brute-force grid search of the log-posterior."""
    responses = [Response("x", ("t",), d, s) for d, s in [(1, 1), (2, 1), (3, 0.5), (4, 0), (5, 1)]]

    def log_post(theta):
        ll = sum(r.score * math.log(sigmoid(theta - (r.difficulty - 3)))
                 + (1 - r.score) * math.log(1 - sigmoid(theta - (r.difficulty - 3))) for r in responses)
        return ll - theta**2 / (2 * 1.5**2)

    grid = max((k / 1000 for k in range(-4000, 4001)), key=log_post)
    assert map_theta(responses, 0.0, 1.5) == pytest.approx(grid, abs=1e-3)


def test_topic_estimates_shrink_to_overall_and_ignore_order():
    rs = [Response(f"i{k}", ("a",), 3, 1.0) for k in range(4)] + [Response("j", ("b",), 3, 0.0)]
    ab = estimate(rs)
    assert ab.topics["a"] > ab.overall > ab.topics["b"]
    assert ab.of(["never-seen"]) == ab.overall
    assert ab.weakest(1) == ["b"]
    assert estimate(rs[::-1]).topics == pytest.approx(ab.topics)
