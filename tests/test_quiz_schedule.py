"""FSRS mapping and replay, due lists, and the daily challenge's determinism."""

from datetime import date, datetime, timedelta, timezone

import pytest
from fsrs import Card, Rating, State

from ftlab.quiz import bank, schedule
from ftlab.quiz.schedule import SCHEDULER, card_for, cards, daily, day_bounds, due, rating_for
from ftlab.quiz.store import Store

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def test_answers_and_self_ratings_map_to_fsrs_ratings():
    assert rating_for(1.0) == Rating.Good
    assert rating_for(0.0) == Rating.Again
    assert rating_for(0.5) == Rating.Hard  # free text: half the key points
    assert rating_for(0.25) == Rating.Again
    assert rating_for(0.0, "easy") == Rating.Easy  # a self-rating wins over the score
    assert rating_for(1.0, "Again") == Rating.Again
    assert rating_for(1.0, 2) == Rating.Hard
    with pytest.raises(ValueError, match="not one of"):
        rating_for(1.0, "meh")


def test_replay_equals_reviewing_step_by_step():
    reviews = [(T0, 3), (T0 + timedelta(days=2), 1), (T0 + timedelta(days=3), 4)]
    card = Card(card_id=1, due=T0)
    for when, r in reviews:
        card, _ = SCHEDULER.review_card(card, Rating(r), review_datetime=when)
    replayed = card_for("x", reviews[::-1])  # order of the log does not matter
    assert (replayed.due, replayed.stability, replayed.difficulty, replayed.state) == \
        (card.due, card.stability, card.difficulty, card.state)


def test_wrong_comes_back_sooner_than_right_and_easy_latest():
    due_after = {r: card_for("x", [(T0, r)]).due - T0 for r in (1, 2, 3, 4)}
    assert due_after[1] <= due_after[2] <= due_after[3] < due_after[4]
    assert due_after[1] >= timedelta(days=1)  # whole days: no minute-scale learning steps
    assert card_for("x", [(T0, 3)]).state == State.Review


class A:  # the fields of a store Answer that scheduling reads
    def __init__(self, item_id, when, rating, topics=("t",), difficulty=3, score=None):
        self.item_id, self.answered_at, self.rating = item_id, when, rating
        self.chapter = item_id[2:4] if item_id.startswith("ch") else "00"  # bank ids are chNN-...
        self.topics, self.difficulty = topics, difficulty
        self.score = score if score is not None else float(rating >= 3)


def test_due_lists_most_overdue_first():
    log = [A("old-wrong", T0, 1), A("new-wrong", T0 + timedelta(hours=5), 1), A("right", T0, 4)]
    assert due(log, now=T0 + timedelta(hours=1)) == []
    assert due(log, now=T0 + timedelta(days=1, hours=6)) == ["old-wrong", "new-wrong"]
    assert set(cards(log)) == {"old-wrong", "new-wrong", "right"}


@pytest.fixture
def items():
    return bank.load_banks()


def test_daily_is_the_same_for_a_learner_and_day(items, tmp_path):
    day = date(2025, 3, 10)
    start, _ = day_bounds(day)
    past = [A(items[k].id, start - timedelta(days=3 + k), 1 if k % 2 else 3, tuple(items[k].topics),
              items[k].difficulty) for k in range(8)]
    first = [i.id for i in daily(items, past, "ada", day)]
    assert len(first) == 5 and len(set(first)) == 5
    assert [i.id for i in daily(items, past, "ada", day)] == first
    # Answering during the day (here: all five, later that morning) does not change the day's set.
    during = past + [A(i, start + timedelta(hours=2), 1) for i in first]
    assert [i.id for i in daily(items, during, "ada", day)] == first
    others = {tuple(i.id for i in daily(items, past, name, d)) for name in ("ada", "bob", "cy")
              for d in (day, day + timedelta(days=1))}
    assert len(others) > 1


def test_daily_mixes_due_reviews_and_weak_topics(items):
    day = date(2025, 3, 10)
    start, _ = day_bounds(day)
    by_id = {i.id: i for i in items}
    wrong = ["ch02-bytes-per-param", "ch00-eval-split"]  # answered wrong 3 days ago: due
    good = [i.id for i in items if "mixed-precision" in i.topics][:3]  # rated easy yesterday: not due
    log = [A(i, start - timedelta(days=3), 1, tuple(by_id[i].topics), by_id[i].difficulty, 0.0) for i in wrong]
    log += [A(i, start - timedelta(days=1), 4, tuple(by_id[i].topics), by_id[i].difficulty, 1.0) for i in good]
    chosen = daily(items, log, "ada", day)
    ids = [i.id for i in chosen]
    assert set(ids[:2]) == set(wrong)  # due reviews first
    weakest = {"memory-estimation", "pipeline"}  # the topics of the wrong answers
    assert any(weakest & set(i.topics) for i in chosen[2:])
    assert set(due(log, now=day_bounds(day)[1])) == set(wrong)


def test_daily_stays_in_the_chapters_reached(items):
    """Day one of the review: chapters 00 and 03 done, and the daily challenge asked a chapter-08 question."""
    day = date(2025, 3, 10)
    start, end = day_bounds(day)
    by_id = {i.id: i for i in items}
    done = [i.id for i in items if i.chapter in ("00", "03")][::4]
    log = [A(i, start - timedelta(hours=3), 3, tuple(by_id[i].topics), by_id[i].difficulty) for i in done]
    for name in ("ada", "bob", "cy", "dee", "eve", "fay"):
        chosen = daily(items, log, name, day)
        assert len(chosen) == 5 and {i.chapter for i in chosen} <= {"00", "01", "02", "03"}, [i.id for i in chosen]
        assert [i.id for i in daily(items, log, name, day)] == [i.id for i in chosen]  # still deterministic
        # A brand-new learner starts in the setup tour and the fundamentals.
        assert {i.chapter for i in daily(items, [], name, day)} <= {"00", "01"}
    # What the learner does during the day changes the day's set only from the next day on.
    ch08 = next(i for i in items if i.chapter == "08")
    later = log + [A(ch08.id, start + timedelta(hours=1), 1, tuple(ch08.topics), ch08.difficulty)]  # wrong: due soon
    assert [i.id for i in daily(items, later, "ada", day)] == [i.id for i in daily(items, log, "ada", day)]
    assert ch08 in daily(items, later, "ada", day + timedelta(days=2))


def test_reached_chapters():
    from ftlab.quiz.schedule import reached

    items = bank.load_banks(chapters=["00", "01", "04", "08"])
    assert {i.chapter for i in reached(items, [])} == {"00", "01"}
    assert {i.chapter for i in reached(items, [A("ch04-x", T0, 3)])} == {"00", "01", "04"}
    later_only = [i for i in items if i.chapter == "08"]
    assert reached(later_only, []) == later_only  # nothing in reach: the pool stays as given


def test_daily_from_a_real_store(tmp_path, monkeypatch, items):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))
    store = Store("ada")
    yesterday = datetime.now(timezone.utc) - timedelta(days=2)
    store.record(items[0], "x", 0.0, False, int(Rating.Again), "quiz", when=yesterday)
    today = date.today()
    assert daily(items, store.answers(), "ada", today)[0].id == items[0].id
    assert schedule.due(store.answers()) == [items[0].id]
