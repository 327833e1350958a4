"""Adaptive tests: an ability estimate per topic, and 5 questions chosen around it.

Ability model: IRT 1PL (Rasch), P(correct) = sigmoid(theta - b), with each item's difficulty
b fixed by the bank (difficulty 1..5 -> b = -2..+2 logits). Why 1PL with fixed b, and not 2PL or
Elo: each learner's progress lives in their own local store, so there is no population of
responses to calibrate item discriminations (2PL) or to move item ratings (Elo's other half);
the bank's authored difficulties are the only item information we have, and 1PL uses exactly
that. Elo's update rule, theta += K (x - p), is a single noisy gradient step on this same
likelihood; instead we refit the MAP estimate from the full answer history after every answer,
which does not depend on answer order, is reproducible from the store, and accepts fractional
scores (free-text answers hit a fraction of their key points).

Two levels, so that a topic seen once is not judged on one answer:
    overall theta_g ~ N(0, 1.5^2)          fitted to all answers
    topic theta_t  ~ N(theta_g, 1.0^2)     fitted to the answers on items tagged t
An item's ability is the mean theta of its topics (theta_g for a topic with no answers).

Choosing the next question: the Rasch item information p(1-p) peaks where b = theta, so we pick
the unasked item whose b is nearest the learner's ability on its topics, plus a penalty for a
difficulty level the test already used (spreads the 5 over levels) and for items the learner has
seen before (fresh questions first), with a small seeded jitter to break ties.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

PRIOR_SD_OVERALL = 1.5
PRIOR_SD_TOPIC = 1.0
SPREAD = 1.25  # logits of penalty per earlier question at the same difficulty level in this test
FRESH = 0.5  # logits of penalty per earlier answer to the same item (any session)
JITTER = 0.2  # seeded tie-breaking noise, in logits
TEST_LENGTH = 5


class Response(NamedTuple):
    """What the ability model needs from one answer (the store's Answer rows have these fields too)."""

    item_id: str
    topics: tuple[str, ...]
    difficulty: int
    score: float  # 1 correct, 0 wrong, a fraction for free text


def logit_difficulty(difficulty: int) -> float:
    return difficulty - 3.0


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def map_theta(responses, prior_mean: float, prior_sd: float) -> float:
    """MAP ability under Rasch with a normal prior: Newton's method on a concave log-posterior."""
    theta = prior_mean
    for _ in range(50):
        ps = [sigmoid(theta - logit_difficulty(r.difficulty)) for r in responses]
        grad = sum(r.score - p for r, p in zip(responses, ps)) - (theta - prior_mean) / prior_sd**2
        hess = -sum(p * (1 - p) for p in ps) - 1 / prior_sd**2
        step = grad / hess
        theta -= step
        if abs(step) < 1e-9:
            break
    return theta


@dataclass(frozen=True)
class Ability:
    overall: float
    topics: dict[str, float] = field(default_factory=dict)
    answered: Counter = field(default_factory=Counter)  # answers per topic

    def of(self, topics) -> float:
        return sum(self.topics.get(t, self.overall) for t in topics) / len(topics)

    @staticmethod
    def mastery(theta: float) -> float:
        """P(correct) on a middle (difficulty 3) item: the 0..1 number shown to learners."""
        return sigmoid(theta)

    def weakest(self, n: int = 3) -> list[str]:
        """Topics with answers, lowest estimate first."""
        return sorted(self.topics, key=lambda t: (self.topics[t], t))[:n]


def estimate(responses) -> Ability:
    responses = list(responses)
    overall = map_theta(responses, 0.0, PRIOR_SD_OVERALL)
    by_topic: dict[str, list] = {}
    for r in responses:
        for t in r.topics:
            by_topic.setdefault(t, []).append(r)
    topics = {t: map_theta(rs, overall, PRIOR_SD_TOPIC) for t, rs in sorted(by_topic.items())}
    return Ability(overall, topics, Counter({t: len(rs) for t, rs in by_topic.items()}))


class AdaptiveTest:
    """Up to `length` distinct items from `pool`, each chosen from the ability after the previous answer.

        test = AdaptiveTest(items, history=store.answers(), seed=1)
        while not test.done:
            item = test.next_item()
            test.record(item, score)
    """

    def __init__(self, pool, history=(), length: int = TEST_LENGTH, seed: int | None = None):
        self.pool = sorted(pool, key=lambda i: i.id)  # a fixed order, so the seed alone decides ties
        self.length = min(length, len(self.pool))
        self.responses = [Response(r.item_id, tuple(r.topics), r.difficulty, r.score) for r in history]
        self.seen = Counter(r.item_id for r in self.responses)
        self.rng = random.Random(seed)
        self.asked: list = []  # items of this test, in order
        self.scores: list[float] = []
        self.ability = estimate(self.responses)
        self.trace = [self.ability.overall]  # overall estimate before the test and after each answer

    @property
    def done(self) -> bool:
        return len(self.scores) >= self.length

    def cost(self, item, jitter: float) -> float:
        level_uses = sum(a.difficulty == item.difficulty for a in self.asked)
        distance = abs(logit_difficulty(item.difficulty) - self.ability.of(item.topics))
        return distance + SPREAD * level_uses + FRESH * self.seen[item.id] + JITTER * jitter

    def next_item(self):
        """The next question (the same one again if the current one is not answered yet)."""
        if len(self.asked) > len(self.scores):
            return self.asked[-1]
        if self.done:
            raise StopIteration("the test is over")
        candidates = [i for i in self.pool if i not in self.asked]
        jitters = [self.rng.random() for _ in candidates]  # drawn for every candidate: stable under a seed
        item = min(zip(candidates, jitters), key=lambda cj: self.cost(*cj))[0]
        self.asked.append(item)
        return item

    def record(self, item, score: float) -> Ability:
        if not self.asked or item is not self.asked[-1] or len(self.scores) == len(self.asked):
            raise ValueError(f"{item.id!r} is not the question waiting for an answer")
        self.scores.append(score)
        self.responses.append(Response(item.id, tuple(item.topics), item.difficulty, score))
        self.seen[item.id] += 1
        self.ability = estimate(self.responses)
        self.trace.append(self.ability.overall)
        return self.ability


class FixedTest(AdaptiveTest):
    """The same bookkeeping (ability after each answer) over a list of items in a given order: daily, review."""

    def __init__(self, items, history=()):
        super().__init__(items, history, length=len(items), seed=0)
        self.order = list(items)

    def next_item(self):
        if len(self.asked) > len(self.scores):
            return self.asked[-1]
        if self.done:
            raise StopIteration("the test is over")
        self.asked.append(self.order[len(self.asked)])
        return self.asked[-1]
