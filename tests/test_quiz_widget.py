"""The widget driven from Python: set a value, click Submit, read the feedback a learner would read."""

import html
import re

import pytest

from ftlab.quiz import Daily, Practice, Quiz, Review, Store, load_banks, ordered_choices, scoring
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
        for c, box in zip(q.choices, q.input):  # the boxes are in the order the learner sees
            box.value = c.id in wanted
    elif item.kind == "numeric":
        q.input.value = str(item.value if right else item.value + item.tolerance + 1000)
    else:
        q.input.value = f"MODEL {item.model_answer}" if right else "I am not sure about this one at all."
    return item


def shown(q) -> str:
    """Everything the feedback area shows after Submit: the verdict, then Why and Read."""
    return q.feedback.value + q.why.value


def test_submit_without_an_answer_warns_and_saves_nothing():
    q = Quiz(chapter="02", learner="w", seed=0)
    q.submit.click()
    assert "first" in q.feedback.value or "enter" in q.feedback.value or "write" in q.feedback.value
    assert Store("w").answers() == [] and q.progress.value == 0 and not q.submit.disabled


def test_answer_shows_feedback_after_saving_it():
    q = Quiz(chapter="02", learner="w", seed=0)
    item = answer(q)
    before = q.ability.value
    assert "ftlab-feedback" not in q.feedback_box._dom_classes  # the page's sign that feedback is shown
    q.submit.click()
    assert "ftlab-feedback" in q.feedback_box._dom_classes
    [saved] = Store("w").answers()  # already on disk when feedback is on screen
    assert saved.item_id == item.id and saved.correct
    fb = shown(q)
    assert "Correct" in fb or "Key points" in fb
    assert item.explanation.split()[0] in fb
    assert f'{item.see.split("#")[1]}"' in fb and "02_small_hardware.ipynb#" in fb
    assert q.progress.value == 1 and q.ability.value != before
    assert q.submit.disabled and not q.next.disabled
    q.next.click()
    assert "ftlab-feedback" not in q.feedback_box._dom_classes and shown(q) == ""


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
            assert q.ratings in q.feedback_box.children and "Key points covered" in q.feedback.value
            q.ratings.children[3].click()  # Easy
            assert "Rated Easy" in q.feedback.value and q.ratings not in q.feedback_box.children
        q.next.click()
    assert len(set(seen)) == 5
    end = q.question.value
    graded = [k for k, i in enumerate(q.session.test.asked) if i.kind != "free_text"]
    assert f"Result: {len(graded) - (1 in graded)} of {len(graded)}" in end and "Weak topics" in end
    missed = next(i for i in q.session.test.asked if i.id == seen[1])
    assert any(t in end.split("Weak topics")[1] for t in missed.topics)
    assert q.next.description == "Another test" and q.progress.value == 5
    assert q.buttons.children == (q.next,)  # no dead Submit on the end card
    answers = Store("w").answers()
    assert [a.item_id for a in answers] == seen
    # A new kernel: a fresh widget starts from the saved ability, and avoids the questions just seen.
    again = Quiz(chapter="02", learner="w", seed=1)
    assert "5 answers saved so far" in again.title.value
    assert again.session.start_ability.overall == pytest.approx(q.session.ability.overall)
    assert again.session.item.id not in seen
    q.next.click()  # "Another test" on the end card starts over
    assert q.progress.value == 0 and "Question 1 of 5" in q.question.value
    assert q.buttons.children == (q.submit, q.next)


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
    assert "Not quite. The answer is 16 (bytes); anything within ± 2 counts." in feedback["numeric"]
    assert "missed:</i> k one" in feedback["free_text"] and "the model answer" in feedback["free_text"]
    assert "Key points covered: 0 of 2" in feedback["free_text"]
    assert [a.correct for a in Store("w").answers()] == [False, False]
    assert ("Result: 0 of 1 choice/numeric questions correct; free text: key points covered 0 of 2 (not self-rated)"
            in q.question.value)


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
    assert "Nothing due" in r.question.value
    # No dead controls: neither the buttons nor an empty progress bar are shown.
    assert r.buttons not in r.children and r.progress not in r.children and r.question in r.children


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


def first_of_kind(kind, chapter="02"):
    """A seed whose first question for a fresh learner is of `kind` (the first pick does not depend on the learner)."""
    from ftlab.quiz import Session

    for seed in range(200):
        if Session("quiz", store=Store("probe"), chapters=[chapter], seed=seed).next_item().kind == kind:
            return seed
    pytest.fail(f"no seed starts chapter {chapter} with a {kind} question")


def test_choices_in_each_learners_order_and_feedback_in_that_order():
    seed = first_of_kind("single")
    keys = {}
    for name in ("ada", "bob", "cy", "dee", "eve", "fay"):
        q = Quiz(chapter="02", learner=name, seed=seed)
        item = q.session.item
        ids = [value for _, value in q.input.options]
        assert sorted(ids) == sorted(c.id for c in item.choices)
        keys[name] = ids.index(item.answer)
        # A re-run notebook (a new widget) shows this learner the same order.
        assert [value for _, value in Quiz(chapter="02", learner=name, seed=seed).input.options] == ids
        q.input.value = next(i for i in ids if i != item.answer)
        q.submit.click()  # graded on ids: the wrong pick is wrong, wherever it was shown
        assert not Store(name).answers()[0].correct
        assert [c.id for c, _, _ in q.session.last.options] == ids
        texts = [html.unescape(t) for t in re.findall(r"</span>: <b>(.*?)</b><br>", q.feedback.value)]
        assert texts == [c.text for c in ordered_choices(item, name)]
    assert len(set(keys.values())) > 1, keys  # the key is not always in the same place
    # Over the whole chapter-02 bank, "always pick the first shown option" is no longer a strategy.
    singles = [i for i in load_banks(chapters=["02"]) if i.kind == "single"]
    for name in ("ada", "bob"):
        first = sum(ordered_choices(i, name)[0].id == i.answer for i in singles)
        assert first / len(singles) < 0.5, (name, first, len(singles))


def test_multi_select_boxes_follow_the_order_and_feedback_says_what_was_missed(tmp_path):
    import yaml

    choices = [dict(id=c, text=f"option {c}", feedback=f"about {c}") for c in "abcd"]
    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "05_x.yaml").write_text(yaml.safe_dump({"chapter": "05", "title": "Adapters", "items": [dict(
        id="multi", kind="multi", topics=["t"], difficulty=3, prompt="Which?", explanation="because",
        see="chapters/05_x.ipynb#A", choices=choices, answer=["a", "b"])]}))
    q = Quiz(chapter=5, learner="w", bank_dir=bank)
    assert [box.description for box in q.input] == [c.text for c in q.choices]
    assert [c.id for c in q.choices] == [c.id for c in ordered_choices(q.session.item, "w")]
    for c, box in zip(q.choices, q.input):
        box.value = c.id in ("a", "c")  # one key ticked, one key missed, one wrong tick
    q.submit.click()
    rows = {c: mark for mark, c in re.findall(r"<li><span[^>]*>(.*?)</span>: <b>option (\w)</b>", q.feedback.value)}
    assert rows == {"a": "✔ correct answer · your pick", "b": "✔ correct answer (missed)",
                    "c": "✘ wrong answer · your pick", "d": "✘ wrong answer"}
    assert "Chapter 05 · Adapters · difficulty ●●●○○" in q.question.value


def test_header_counts_every_saved_answer_and_pluralises():
    q = Quiz(chapter="02", learner="w", seed=0)
    assert "0 answers saved so far" in q.title.value
    answer(q)
    q.submit.click()
    assert "1 answer saved so far" in q.title.value
    q.next.click()
    answer(q)
    q.submit.click()
    assert "2 answers saved so far" in q.title.value


def test_free_text_is_neutral_rated_before_why_and_not_called_correct(tmp_path):
    q = Quiz(chapter="05", learner="w", seed=0, bank_dir=tiny_bank(tmp_path))
    answer(q)
    q.submit.click()
    q.next.click()
    assert q.session.item.kind == "free_text"
    answer(q, right=True)  # every key point covered
    q.submit.click()
    verdict = q.feedback.value
    assert "Key points covered: 2 of 2" in verdict and "Correct" not in verdict
    assert "#1a7f37" not in verdict.split("</p>")[0]  # the headline is not green
    assert q.feedback_box.children == (q.feedback, q.ratings, q.why)  # "rate yourself below" is true
    assert "Why." in q.why.value and "Why." not in verdict
    q.ratings.children[2].click()  # Good
    q.next.click()
    assert "Result: 1 of 1 choice/numeric questions correct; free text: key points covered 2 of 2 (self-rated Good)" \
        in q.question.value


def test_numeric_wording_separators_and_placeholder(tmp_path):
    import yaml

    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "03_x.yaml").write_text(yaml.safe_dump({"chapter": "03", "title": "LoRA", "items": [dict(
        id="params", kind="numeric", topics=["t"], difficulty=3, prompt="How many?", explanation="because",
        see="chapters/03_x.ipynb#A", value=241664, tolerance=0, unit="parameters")]}))
    q = Quiz(chapter="03", learner="w", bank_dir=bank)
    assert q.input.placeholder == "a number (parameters)"
    q.input.value = "241,000"
    q.submit.click()
    assert "Not quite. The answer is 241,664 (parameters)." in q.feedback.value


def test_ability_line_explains_theta_and_shows_no_mastery_before_an_answer():
    q = Quiz(chapter="02", learner="w", seed=0)
    line = q.ability.value
    assert "0 = average" in line and 'title="θ is the ability estimate' in line
    assert "mastery" not in line.split('">', 1)[1]  # the prior's 50 % is not a result
    answer(q)
    q.submit.click()
    assert "mastery" in q.ability.value.split('">', 1)[1] and "0 = average" in q.ability.value


def test_question_header_names_the_chapter(tmp_path):
    q = Quiz(chapter="02", learner="w", seed=0)
    assert "Chapter 02 · Training on small hardware · difficulty" in q.question.value
    # A title that is an alias means nothing outside its file: the header goes without it.
    bank = tiny_bank(tmp_path)
    text = (bank / "05_x.yaml").read_text()
    (bank / "05_x.yaml").write_text("name: &t Adapters\ntitle: *t\n" + text)
    header = Quiz(chapter="05", learner="w", bank_dir=bank).question.value
    assert "<b>Question 1 of 2</b> · Chapter 05 · difficulty" in header


def test_practice_and_daily_start_in_the_chapters_reached():
    p = Practice(learner="new", seed=0)
    assert {i.chapter for i in p.session.items} == {"00", "01"} and "Practice: chapters 00–01" in p.title.value
    assert {i.chapter for i in Daily(learner="new").session.test.order} <= {"00", "01"}
    assert {i.chapter for i in Practice(learner="new", chapter=[3, "08"]).session.items} == {"03", "08"}


@pytest.mark.parametrize("args, named", [(dict(chapter="abc"), "chapter='abc'"), (dict(chapter=2.5), "chapter=2.5"),
                                         (dict(chapter=[]), "chapter=[]"), (dict(chapter=-1), "chapter=-1"),
                                         (dict(chapter="02", n=-2), "n must be an integer >= 1, got -2"),
                                         (dict(chapter="02", n=2.5), "n must be an integer >= 1, got 2.5"),
                                         (dict(chapter="02", seed="x"), "seed must be an integer, got 'x'")])
def test_bad_arguments_show_the_could_not_start_card(args, named, home):
    q = Quiz(learner="w", **args)
    card = q.children[0].value
    assert "could not start" in card and html.escape(named) in card, card
    assert not store_path("w").exists()  # a typo leaves no empty store behind
