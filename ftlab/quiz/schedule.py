"""Spaced review with FSRS, and the daily challenge.

Every answered item is an FSRS card. The store keeps only the answer log; a card is rebuilt by
replaying that item's answers through the scheduler (deterministic: fuzzing is off), so a
self-rating given after feedback simply replaces the provisional rating of its answer, and an
import of another device's answers merges without any card state to reconcile.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from datetime import date, datetime, time, timedelta, timezone

from fsrs import Card, Rating, Scheduler

from .adaptive import estimate, logit_difficulty
from .scoring import PASS

# No minute-scale (re)learning steps: a quiz item is a concept question, not a flashcard drilled
# within a sitting, so every answer schedules whole days (wrong -> about a day, right -> days
# to weeks). Fuzzing spreads due dates of cards learned together, but we want reproducible
# schedules (a daily challenge must not change when recomputed), so it is off.
SCHEDULER = Scheduler(learning_steps=(), relearning_steps=(), enable_fuzzing=False)
SELF_RATINGS = {"again": Rating.Again, "hard": Rating.Hard, "good": Rating.Good, "easy": Rating.Easy}
FIRST_CHAPTERS = "01"  # what a learner with no answers has reached: the setup tour and the fundamentals


def rating_for(score: float, self_rating: str | int | None = None) -> Rating:
    """A learner's self-rating wins; otherwise correct -> Good, partly right -> Hard, wrong -> Again."""
    if self_rating is not None:
        if isinstance(self_rating, str):
            if self_rating.lower() not in SELF_RATINGS:
                raise ValueError(f"self-rating {self_rating!r} is not one of {', '.join(SELF_RATINGS)}")
            return SELF_RATINGS[self_rating.lower()]
        return Rating(self_rating)
    if score >= 1.0:
        return Rating.Good
    return Rating.Hard if score >= PASS else Rating.Again


def card_for(item_id: str, reviews) -> Card:
    """The FSRS card after replaying (answered_at, rating) reviews in time order."""
    reviews = sorted(reviews)
    card = Card(card_id=zlib.crc32(item_id.encode()), due=reviews[0][0] if reviews else None)
    for when, rating in reviews:
        card, _ = SCHEDULER.review_card(card, Rating(rating), review_datetime=when.astimezone(timezone.utc))
    return card


def cards(answers) -> dict[str, Card]:
    """item id -> card, from store answers (anything with item_id, answered_at, rating)."""
    reviews: dict[str, list] = {}
    for a in answers:
        reviews.setdefault(a.item_id, []).append((a.answered_at, a.rating))
    return {item_id: card_for(item_id, r) for item_id, r in sorted(reviews.items())}


def due(answers, now: datetime | None = None) -> list[str]:
    """Item ids due for review at `now`, most overdue first."""
    now = now or datetime.now(timezone.utc)
    return [i for i, c in sorted(cards(answers).items(), key=lambda ic: (ic[1].due, ic[0])) if c.due <= now]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """Local midnight to midnight, as aware datetimes: 'today' means the learner's day."""
    start = datetime.combine(day, time.min).astimezone()
    return start, start + timedelta(days=1)


def reached(items, answers) -> list:
    """The items of the chapters a learner has reached: every chapter up to the highest one they have
    answered a question of (chapters are read in order), and at least chapters 00-01.

    When none of `items` is in reach (a pool already narrowed to later chapters), all of them come back.
    """
    top = max([FIRST_CHAPTERS, *(a.chapter for a in answers)])
    return [i for i in items if i.chapter <= top] or list(items)


def daily(items, answers, learner: str, day: date, n: int = 5) -> list:
    """The daily challenge: up to n items, the same for a (learner, day) whatever happens during that day.

    Only answers from before the day count, so answering the challenge does not change it. Items
    come from the chapters the learner had reached by then (`reached`). About half are the most
    overdue reviews; the rest come from the weakest topics (items near the learner's ability there,
    unseen first); anything left is filled at random from those chapters.
    """
    start, end = day_bounds(day)
    past = [a for a in answers if a.answered_at < start]
    items = reached(items, past)
    by_id = {i.id: i for i in items}
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{learner}|{day.isoformat()}".encode()).digest()[:8], "big"))
    chosen = [by_id[i] for i in due(past, now=end) if i in by_id][: (n + 1) // 2]

    ability = estimate(past)
    seen = {a.item_id for a in past}
    topics = ability.weakest(n)
    if not topics:  # a new learner: a different spread of topics each day
        topics = sorted({t for i in items for t in i.topics})
        rng.shuffle(topics)
    for topic in topics:
        if len(chosen) >= n:
            break
        pool = [i for i in items if topic in i.topics and i not in chosen]
        if pool:
            theta = ability.of([topic])
            chosen.append(min(pool, key=lambda i: (i.id in seen, abs(logit_difficulty(i.difficulty) - theta),
                                                   rng.random())))
    rest = sorted((i for i in items if i not in chosen), key=lambda i: i.id)
    chosen += rng.sample(rest, min(len(rest), n - len(chosen)))
    return chosen[:n]
