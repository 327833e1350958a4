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
