"""The widget driven from Python: set a value, click Submit, read the feedback a learner would read."""

import pytest

from ftlab.quiz import Daily, Practice, Quiz, Review, Store, scoring
from ftlab.quiz.store import store_path


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    # The widget's own logic is under test here; the scorer has its own tests. A stand-in that
    # credits key points only when the learner's text is the model answer keeps MiniLM unloaded.
    def fake_similarities(answer, key_points):
        return [0.9 if "MODEL" in answer else 0.1] * len(key_points)
    monkeypatch.setattr(scoring, "similarities", fake_similarities)
    monkeypatch.setattr(scoring, "_encoder", lambda: pytest.fail("the embedder must not load"))
    return tmp_path / "home"


def answer(q, right=True):
    """Fill the input for the current item like a learner would."""
    item = q.session.item
    if item.kind == "single":
        q.input.value = item.answer if right else next(c.id for c in item.choices if c.id != item.answer)
    elif item.kind == "multi":
        wanted = set(item.answer) if right else {c.id for c in item.choices} - set(item.answer)
        for c, box in zip(item.choices, q.input):
            box.value = c.id in wanted
    elif item.kind == "numeric":
        q.input.value = str(item.value if right else item.value + item.tolerance + 1000)
    else:
        q.input.value = f"MODEL {item.model_answer}" if right else "I am not sure about this one at all."
    return item


def test_submit_without_an_answer_warns_and_saves_nothing():
    q = Quiz(chapter="02", learner="w", seed=0)
    q.submit.click()
    assert "first" in q.feedback.value or "enter" in q.feedback.value or "write" in q.feedback.value
    assert Store("w").answers() == [] and q.progress.value == 0 and not q.submit.disabled


def test_answer_shows_feedback_after_saving_it():
    q = Quiz(chapter="02", learner="w", seed=0)
    item = answer(q)
    before = q.ability.value
    q.submit.click()
    [saved] = Store("w").answers()  # already on disk when feedback is on screen
    assert saved.item_id == item.id and saved.correct
    fb = q.feedback.value
    assert "Correct" in fb or "key points" in fb
    assert item.explanation.split()[0] in fb
    assert f'{item.see.split("#")[1]}"' in fb and "02_small_hardware.ipynb#" in fb
    assert q.progress.value == 1 and q.ability.value != before
    assert q.submit.disabled and not q.next.disabled


def test_five_questions_then_end_card_and_progress_kept():
    q = Quiz(chapter="02", learner="w", seed=1)
    seen, kinds = [], set()
    for k in range(5):
        item = answer(q, right=k != 1)
        seen.append(item.id)
        kinds.add(item.kind)
        assert f"Question {k + 1} of 5" in q.question.value
        q.submit.click()
        if item.kind == "free_text":
            assert q.ratings in q.children and "key points" in q.feedback.value
            q.ratings.children[3].click()  # Easy
            assert "Rated Easy" in q.feedback.value and q.ratings not in q.children
        q.next.click()
    assert len(set(seen)) == 5
    end = q.question.value
    assert "Result: 4 of 5 correct" in end and "Weak topics" in end
    missed = next(i for i in q.session.test.asked if i.id == seen[1])
    assert any(t in end.split("Weak topics")[1] for t in missed.topics)
    assert q.next.description == "Another test" and q.progress.value == 5
    answers = Store("w").answers()
    assert [a.item_id for a in answers] == seen
    # A new kernel: a fresh widget starts from the saved ability, and avoids the questions just seen.
    again = Quiz(chapter="02", learner="w", seed=1)
    assert "5 answers saved so far" in again.title.value
    assert again.session.start_ability.overall == pytest.approx(q.session.ability.overall)
    assert again.session.item.id not in seen
    q.next.click()  # "Another test" on the end card starts over
    assert q.progress.value == 0 and "Question 1 of 5" in q.question.value


def tiny_bank(folder):
    """One numeric and one free-text item, in that order of difficulty, for flows that need both kinds."""
    import yaml

    common = dict(topics=["t"], prompt="p?", explanation="because", see="chapters/05_x.ipynb#A")
    items = [dict(id="num", kind="numeric", difficulty=3, value=16, tolerance=2, unit="bytes", **common),
             dict(id="free", kind="free_text", difficulty=2, model_answer="the model answer",
                  key_points=["k one", "k two"], **common)]
    (folder / "bank").mkdir()
    (folder / "bank" / "05_x.yaml").write_text(yaml.safe_dump({"chapter": "05", "items": items}))
    return folder / "bank"


def test_wrong_numeric_and_free_text_feedback(tmp_path):
    q = Quiz(chapter="05", learner="w", seed=0, bank_dir=tiny_bank(tmp_path))
    feedback = {}
    for _ in range(2):
        item = answer(q, right=False)
        q.submit.click()
        feedback[item.kind] = q.feedback.value
        q.next.click()
    assert "Not quite. The answer is 16 bytes (± 2)" in feedback["numeric"]
    assert "missed:</i> k one" in feedback["free_text"] and "the model answer" in feedback["free_text"]
    assert "You made 0 of 2 key points" in feedback["free_text"]
    assert [a.correct for a in Store("w").answers()] == [False, False]
    assert "Result: 0 of 2 correct" in q.question.value


def test_bad_numeric_input_is_explained_not_counted():
    q = Quiz(chapter="02", learner="w", topics=["memory-estimation"], seed=0)
    while q.session.item.kind != "numeric":
        answer(q)
        q.submit.click()
        q.next.click()
    n = len(Store("w").answers())
    q.input.value = "about sixteen"
    q.submit.click()
    assert "enter a number" in q.feedback.value and len(Store("w").answers()) == n


def test_scorer_failure_is_shown_and_nothing_saved(tmp_path, monkeypatch):
    def broken(answer, key_points):
        raise RuntimeError("minilm is not installed")
    monkeypatch.setattr(scoring, "similarities", broken)
    q = Quiz(chapter="05", learner="w", seed=0, bank_dir=tiny_bank(tmp_path))
    assert q.session.item.kind == "numeric"  # difficulty 3 first; the free-text item comes second
    answer(q)
    q.submit.click()
    q.next.click()
    saved = len(Store("w").answers())
    answer(q)
    q.submit.click()
    assert "Could not score this answer" in q.feedback.value and "minilm is not installed" in q.feedback.value
    assert len(Store("w").answers()) == saved and not q.submit.disabled


def test_practice_daily_review_show():
    p = Practice(learner="w", seed=0)
    assert "Practice" in p.title.value and p.session.item is not None
    d = Daily(learner="w")
    assert "Daily challenge" in d.title.value and d.session.total == 5
    r = Review(learner="w")
    assert "Nothing due" in r.question.value and r.submit.disabled


def test_unreadable_store_shows_a_message_and_is_left_alone(home):
    path = store_path("w")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 200)
    q = Quiz(chapter="00", learner="w")
    assert "could not start" in q.children[0].value and "w.sqlite" in q.children[0].value
    assert path.read_bytes() == b"garbage" * 200


def test_markdown_and_latex_render():
    from ftlab.quiz.widget import markdown

    html = markdown("Use **bold**, `code` and $a_i * b_i$ and $$\\sum_t x_t$$")
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "$a_i * b_i$" in html and "$$\\sum_t x_t$$" in html  # untouched for MathJax


def test_every_click_on_its_own_thread_saves_a_whole_test():
    """JupyterLab 4.6 sends widget clicks to an ipykernel subshell thread: each Submit/Next here runs on a new one."""
    import threading

    def click(button):
        t = threading.Thread(target=button.click)
        t.start()
        t.join()

    q = Quiz(chapter="02", learner="t", seed=1)
    for n in range(5):
        answer(q)
        click(q.submit)
        assert "Could not save" not in q.feedback.value, q.feedback.value
        click(q.next)
    assert len(Store("t").answers()) == 5
    assert "Result:" in q.question.value
