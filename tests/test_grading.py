import math

import pytest
import torch

from ftlab import grading


def reference(x):
    return x * 2


def test_pass_keeps_the_learners_function(capsys):
    mine = lambda x: x + x  # noqa: E731
    assert grading.check("double", mine, reference, cases=[(torch.ones(3),), (2.0,)]) is mine
    assert "[PASS] double: 2 cases match" in capsys.readouterr().out


def test_stub_falls_back_to_reference(capsys):
    def stub(x):
        raise NotImplementedError()

    assert grading.check("double", stub, reference, cases=[(1,)]) is reference
    assert "[TODO] double: not implemented yet" in capsys.readouterr().out


def test_wrong_answer_shows_case_and_hint(capsys):
    result = grading.evaluate("double", lambda x: x * 3, reference, cases=[(1,), (torch.ones(2),)],
                              hint="multiply by two")
    assert result.status == "fail" and result.message.startswith("case 1: got 3, expected 2")
    assert grading.check("double", lambda x: x * 3, reference, cases=[(1,)], hint="multiply by two") is reference
    assert "Hint: multiply by two" in capsys.readouterr().out


def test_crash_is_reported_not_raised():
    result = grading.evaluate("double", lambda x: x.nope, reference, cases=[(1,)])
    assert result.status == "error" and "AttributeError" in result.message


def test_tolerance_and_structures():
    ok = grading.evaluate("d", lambda: {"a": [torch.tensor(1.0 + 1e-8)]}, lambda: {"a": [torch.tensor(1.0)]},
                          cases=[()])
    assert ok.passed
    bad = grading.evaluate("d", lambda: {"a": [1.0, 2.5]}, lambda: {"a": [1.0, 2.0]}, cases=[()])
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
    assert grading.evaluate("f", lambda: float("nan"), lambda: 2.0, cases=[()]).status == "fail"
    assert grading.evaluate("f", lambda: float("nan"), lambda: float("nan"), cases=[()]).status == "fail"
    assert grading.evaluate("f", lambda: {"loss": math.nan}, lambda: {"loss": 1.5}, cases=[()]).status == "fail"


def test_true_is_not_one_and_counts_are_exact():
    assert grading.evaluate("f", lambda: True, lambda: 1, cases=[()]).status == "fail"
    assert grading.evaluate("f", lambda: 1, lambda: True, cases=[()]).status == "fail"
    assert grading.evaluate("f", lambda: 1_000_001, lambda: 1_000_000, cases=[()]).status == "fail"
    assert grading.evaluate("f", lambda: 2.0, lambda: 2, cases=[()]).passed


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
    result = grading.evaluate("f", lambda: got, lambda: want, cases=[()])
    assert result.status == "fail" and says in result.message, result.message
    assert grading.check("f", lambda: got, lambda: want, cases=[()]) is not None  # the cell survives


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
