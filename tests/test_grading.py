import math

import pytest
import torch

from ftlab import grading


@pytest.fixture(autouse=True)
def learning_mode(tmp_path, monkeypatch):
    """Checks record into a throwaway progress store, in learning mode unless a test says otherwise."""
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    for name in ("FTLAB_GRADE", "NBGRADER_EXECUTION", "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)


def reference(x):
    return x * 2


def test_pass_keeps_the_learners_function(capsys):
    def double(x):
        return x + x

    assert grading.check("double", double, reference, cases=[(torch.ones(3),), (2.0,)]) is double
    assert "[PASS] double: 2 cases match" in capsys.readouterr().out


def test_stub_falls_back_to_reference(capsys):
    def stub(x):
        raise NotImplementedError()

    assert grading.check("double", stub, reference, cases=[(1,)]) is reference
    assert "[TODO] double: not implemented yet" in capsys.readouterr().out


def triple(x):
    return x * 3


def test_wrong_answer_shows_case_and_hint(capsys):
    result = grading.evaluate("triple", triple, reference, cases=[(1,), (torch.ones(2),)], hint="multiply by two")
    assert result.status == "fail" and result.message.startswith("case 1: got 3, expected 2")
    assert grading.check("triple", triple, reference, cases=[(1,)], hint="multiply by two") is reference
    assert "Hint: multiply by two" in capsys.readouterr().out


def test_crash_is_reported_not_raised():
    def double(x):
        return x.nope

    result = grading.evaluate("double", double, reference, cases=[(1,)])
    assert result.status == "error" and "AttributeError" in result.message


def answer(value):
    """A learner's function `f` that returns `value`."""
    def f():
        return value
    return f


def test_tolerance_and_structures():
    ok = grading.evaluate("f", answer({"a": [torch.tensor(1.0 + 1e-8)]}), lambda: {"a": [torch.tensor(1.0)]},
                          cases=[()])
    assert ok.passed
    bad = grading.evaluate("f", answer({"a": [1.0, 2.5]}), lambda: {"a": [1.0, 2.0]}, cases=[()])
    assert bad.status == "fail" and "['a'] [1]" in bad.message


def test_fresh_arguments_and_observe_for_mutating_functions():
    def fill(t):
        t.add_(1)

    def fill_wrong(t):
        t.add_(2)

    case = lambda: (torch.zeros(2),)  # noqa: E731  -- a fresh tensor for each side
    seen = lambda result, args: args[0]  # noqa: E731
    assert grading.evaluate("fill", fill, fill, cases=[case], observe=seen).passed
    assert grading.evaluate("fill", fill_wrong, fill, cases=[case], observe=seen).status == "fail"


def test_card_is_html_with_status():
    html = grading.card(grading.Result("f", "fail", "case 1: <bad>", "think"))
    assert "FAIL" in html and "&lt;bad&gt;" in html and "Hint:" in html


# --- answers that used to pass or crash the check (R18, G1-G3) ---------------------------------------

def test_nan_never_passes():
    assert grading.evaluate("f", answer(float("nan")), lambda: 2.0, cases=[()]).status == "fail"
    assert grading.evaluate("f", answer(float("nan")), lambda: float("nan"), cases=[()]).status == "fail"
    assert grading.evaluate("f", answer({"loss": math.nan}), lambda: {"loss": 1.5}, cases=[()]).status == "fail"


def test_true_is_not_one_and_counts_are_exact():
    assert grading.evaluate("f", answer(True), lambda: 1, cases=[()]).status == "fail"
    assert grading.evaluate("f", answer(1), lambda: True, cases=[()]).status == "fail"
    assert grading.evaluate("f", answer(1_000_001), lambda: 1_000_000, cases=[()]).status == "fail"
    assert grading.evaluate("f", answer(2.0), lambda: 2, cases=[()]).passed


@pytest.mark.parametrize("got, want, says", [
    (None, 2.0, "expected a number, got None (did you forget `return`?)"),
    ("2.0", 2.0, "expected a number, got str '2.0'"),
    (None, torch.ones(2), "expected a tensor, got None (did you forget `return`?)"),
    ("x", torch.ones(2), "expected a tensor, got str 'x'"),
    (torch.tensor(2.0), 2.0, "expected float 2.0, got a tensor"),
    (None, {"a": 1}, "expected a dict with keys ['a'], got None"),
    (None, [1, 2], "expected a sequence of length 2, got None"),
    ([torch.ones(2), None], [torch.ones(2), torch.ones(2)], "[1] expected a tensor, got None"),
])
def test_a_wrong_kind_of_answer_is_a_failure_not_a_crash(got, want, says, capsys):
    result = grading.evaluate("f", answer(got), lambda: want, cases=[()])
    assert result.status == "fail" and says in result.message, result.message
    assert grading.check("f", answer(got), lambda: want, cases=[()]) is not None  # the cell survives


def test_a_tuple_case_is_copied_for_each_side():
    """Both sides used to get the same tensor: a wrong in-place function then passed, as the reference
    changed the tensor after it and `observe` saw the reference's result twice."""
    def fill(t):
        t.add_(1)

    def fill_wrong(t):
        t.add_(2)

    case = (torch.zeros(2),)
    seen = lambda result, args: args[0].clone()  # noqa: E731
    assert grading.evaluate("fill", fill_wrong, fill, cases=[case], observe=seen).status == "fail"
    assert grading.evaluate("fill", fill, fill, cases=[case], observe=seen).passed
    assert torch.equal(case[0], torch.zeros(2))


def test_error_location_is_the_learners_line_not_torch_internals():
    layer = torch.nn.Linear(2, 2)

    def lora_merge(layer):
        weight = layer.weight
        return weight + layer.lora_b  # the typo: torch's Module.__getattr__ raises, deep inside torch
    result = grading.evaluate("lora_merge", lora_merge, lambda layer: layer.weight, cases=[lambda: (layer,)])
    assert result.status == "error" and "AttributeError" in result.message
    assert "in lora_merge, line" in result.message and "return weight + layer.lora_b" in result.message, result.message


# --- strict grading (issue 20): a check that does not pass fails the cell under nbgrader and our tests ----------

@pytest.mark.parametrize("env", [{"FTLAB_GRADE": "1"}, {"NBGRADER_EXECUTION": "autograde"}])
@pytest.mark.parametrize("body, status", [("return x * 3", "FAIL"), ("raise NotImplementedError()", "TODO"),
                                          ("return x.nope", "ERROR")])
def test_strict_grading_raises_with_the_cards_text(monkeypatch, env, body, status):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace = {}
    exec(f"def double(x):\n    {body}", namespace)
    with pytest.raises(AssertionError, match=rf"^\[{status}\] double: ") as e:
        grading.check("double", namespace["double"], reference, cases=[(1,)], hint="multiply by two")
    assert ("Hint: multiply by two" in str(e.value)) == (status != "TODO")


def test_strict_grading_passes_a_right_answer_and_learning_mode_never_raises(monkeypatch):
    def double(x):
        return x + x

    monkeypatch.setenv("FTLAB_GRADE", "1")
    assert grading.check("double", double, reference, cases=[(1,)]) is double
    monkeypatch.setenv("FTLAB_GRADE", "0")
    assert grading.check("double", triple, reference, cases=[(1,)]) is reference


def test_report_of_an_evaluate_is_strict_too(monkeypatch):
    """Labs 03 and 07 call evaluate() and report() themselves: report is where strict grading fails the cell."""
    monkeypatch.setenv("FTLAB_GRADE", "1")
    with pytest.raises(AssertionError, match=r"\[FAIL\] triple"):
        grading.report(grading.evaluate("triple", triple, reference, cases=[(1,)]))


# --- the learner's own work: their function must run, and must not call the reference ---------------------------

from ftlab import evaluation  # noqa: E402

F1_CASES = [(torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([0, 1, 2, 2, 1, 2]))]


def test_calling_the_reference_does_not_pass():
    def macro_f1(preds, labels):
        return evaluation.macro_f1(preds, labels)

    result = grading.evaluate("macro_f1", macro_f1, evaluation.macro_f1, F1_CASES)
    assert result.status == "fail" and "calls ftlab.evaluation.macro_f1" in result.message, result.message


def _hidden_call(preds, labels):
    return evaluation.macro_f1(preds, labels)


def test_calling_the_reference_through_a_helper_or_exec_does_not_pass():
    def macro_f1(preds, labels):
        return _hidden_call(preds, labels)

    assert grading.evaluate("macro_f1", macro_f1, evaluation.macro_f1, F1_CASES).status == "fail"
    namespace = {"ev": evaluation}
    exec("def macro_f1(p, y):\n    return ev.macro_f1(p, y)", namespace)
    assert grading.evaluate("macro_f1", namespace["macro_f1"], evaluation.macro_f1, F1_CASES).status == "fail"


def test_the_reference_under_the_learners_name_does_not_pass():
    for fn in (evaluation.macro_f1, lambda p, y: evaluation.macro_f1(p, y)):
        result = grading.evaluate("macro_f1", fn, evaluation.macro_f1, F1_CASES)
        assert result.status == "fail" and "no function of yours named `macro_f1` ran" in result.message


def test_a_helper_the_reference_uses_inside_ftlab_is_allowed():
    """macro_f1 in ftlab averages evaluation.f1 over the classes; a learner may do the same."""
    def macro_f1(preds, labels):
        classes = sorted(set(preds.tolist()) | set(labels.tolist()))
        return sum(evaluation.f1(preds, labels, positive=k) for k in classes) / len(classes)

    assert grading.evaluate("macro_f1", macro_f1, evaluation.macro_f1, F1_CASES).passed


def test_an_ftlab_function_with_the_exercises_name_is_guarded_whatever_the_reference():
    from sklearn.metrics import f1_score

    def macro_f1(preds, labels):
        return evaluation.macro_f1(preds, labels)

    result = grading.evaluate("macro_f1", macro_f1, lambda p, y: f1_score(y, p, average="macro"), F1_CASES)
    assert result.status == "fail" and "calls ftlab.evaluation.macro_f1" in result.message


def test_guard_names_more_library_functions():
    """A check whose reference is another library (peft in lab 03) names the ftlab version it must not call."""
    from sklearn.metrics import f1_score

    def sklearn_macro_f1(preds, labels):
        return f1_score(labels, preds, average="macro", zero_division=0)

    def macro_f1(preds, labels):  # f1 per class, averaged: what ftlab's macro_f1 does inside
        classes = sorted(set(preds.tolist()) | set(labels.tolist()))
        return sum(evaluation.f1(preds, labels, positive=k) for k in classes) / len(classes)

    assert grading.evaluate("macro_f1", macro_f1, sklearn_macro_f1, F1_CASES).passed  # unguarded: not seen
    result = grading.evaluate("macro_f1", macro_f1, sklearn_macro_f1, F1_CASES, guard=[evaluation.f1])
    assert result.status == "fail" and "calls ftlab.evaluation.f1" in result.message
    with pytest.raises(TypeError, match="guard= takes functions"):
        grading.evaluate("macro_f1", macro_f1, sklearn_macro_f1, F1_CASES, guard=[3])


# --- results in the progress store ---------------------------------------------------------------------------------

def test_each_card_is_recorded_with_its_lab(monkeypatch):
    from ftlab.quiz.store import Store

    monkeypatch.setenv("JPY_SESSION_NAME", "my/labs/09_evaluation_lab.ipynb")  # what Jupyter's server tells a kernel
    grading.check("triple", triple, reference, cases=[(1,)])
    grading.check("double", lambda x: x * 2, reference, cases=[(1,)])  # not the learner's own function: a fail

    def double(x):
        return x + x
    grading.check("double", double, reference, cases=[(1,)])
    rows = [(c.lab, c.check, c.status) for c in Store().lab_checks()]
    assert rows == [("09_evaluation_lab", "triple", "fail"), ("09_evaluation_lab", "double", "fail"),
                    ("09_evaluation_lab", "double", "pass")]


def test_nbgrader_runs_are_not_recorded(monkeypatch):
    from ftlab.quiz.store import Store

    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")

    def double(x):
        return x + x
    grading.check("double", double, reference, cases=[(1,)])
    assert Store().lab_checks() == []


def test_a_store_that_cannot_be_written_never_stops_the_check(monkeypatch, capsys):
    import sqlite3

    from ftlab.quiz.store import Store

    path = Store().path
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write: the store is busy
    monkeypatch.setattr(sqlite3, "connect", _fast)
    try:
        assert grading.check("triple", triple, reference, cases=[(1,)]) is reference
    finally:
        holder.close()
    out = capsys.readouterr().out
    assert "[FAIL] triple" in out and "Not saved to your progress: busy" in out
    monkeypatch.setenv("FTLAB_LEARNER", "not a valid name")
    assert grading.check("triple", triple, reference, cases=[(1,)]) is reference
    assert "Not saved to your progress: learner name 'not a valid name'" in capsys.readouterr().out


_connect = __import__("sqlite3").connect


def _fast(*args, **kwargs):
    """sqlite3.connect without the 5 s wait for a lock, so the busy store is reported at once."""
    return _connect(*args, **{**kwargs, "timeout": 0.1})
