"""Lab checks that print a result card and never crash the notebook.

    accumulate = grading.check("accumulate", accumulate, train.accumulate, cases=[make_case],
                               observe=lambda result, args: grads_of(args[0]), hint="divide by the total token count")

The learner's function runs on every case beside the reference; the outputs are compared with
`torch.testing.assert_close` (tensors, nested lists/tuples/dicts), within atol + rtol * |want| (numbers;
NaN never matches, True is not 1) or `==`. The card says pass, fail (with the first mismatch and the hint),
"not implemented yet", or the learner's exception with the line of the learner's code that raised it.
Whatever happens, the function returned is one that works (the learner's when it passed, else the
reference), so later cells run.
"""

from __future__ import annotations

import copy
import html
import numbers
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass
class Result:
    name: str
    status: str  # "pass" | "fail" | "todo" | "error"
    message: str
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


_BADGES = {"pass": ("PASS", "#1a7f37"), "fail": ("FAIL", "#cf222e"), "error": ("ERROR", "#cf222e"),
           "todo": ("TODO", "#9a6700")}


def _args(case) -> tuple:
    """A case is an argument tuple, or a zero-argument callable that builds a fresh one. A tuple is copied,
    so a function that changes its arguments in place cannot change what the other side is given."""
    args = case() if callable(case) else copy.deepcopy(case)
    return args if isinstance(args, tuple) else (args,)


def _what(got) -> str:
    if got is None:
        return "None (did you forget `return`?)"
    return f"{type(got).__name__} {got!r:.80}"


def _compare(got, want, atol: float, rtol: float) -> None:
    if isinstance(want, torch.Tensor) or isinstance(got, torch.Tensor):
        if not isinstance(got, (torch.Tensor, numbers.Number, list, tuple)) or isinstance(got, bool):
            raise AssertionError(f"expected a tensor, got {_what(got)}")
        if not isinstance(want, torch.Tensor):
            raise AssertionError(f"expected {type(want).__name__} {want!r:.80}, got a tensor (`.item()` turns a "
                                 "one-element tensor into a number)")
        torch.testing.assert_close(torch.as_tensor(got), want, atol=atol, rtol=rtol, check_dtype=False)
    elif isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            raise AssertionError(f"expected a dict with keys {sorted(want)}, got {_what(got)}")
        for key in want:
            try:
                _compare(got[key], want[key], atol, rtol)
            except AssertionError as e:
                raise AssertionError(f"[{key!r}] {e}") from None
    elif isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            raise AssertionError(f"expected a sequence of length {len(want)}, got {_what(got)}")
        for i, (g, w) in enumerate(zip(got, want)):
            try:
                _compare(g, w, atol, rtol)
            except AssertionError as e:
                raise AssertionError(f"[{i}] {e}") from None
    elif isinstance(want, bool) or isinstance(got, bool):  # True == 1 in Python, but not as an answer
        if type(got) is not type(want) or got != want:
            raise AssertionError(f"got {_what(got)}, expected {_what(want)}")
    elif isinstance(want, numbers.Real):
        if not isinstance(got, numbers.Real):
            raise AssertionError(f"expected a number, got {_what(got)}")
        if isinstance(want, numbers.Integral) and isinstance(got, numbers.Integral):
            if got != want:  # counts are exact
                raise AssertionError(f"got {got!r}, expected {want!r}")
        elif not abs(got - want) <= atol + rtol * abs(want):  # written so that NaN never passes
            raise AssertionError(f"got {got!r}, expected {want!r} (atol={atol}, rtol={rtol})")
    elif got != want:
        raise AssertionError(f"got {_what(got)}, expected {want!r:.200}")


# Where installed code lives (the standard library, site-packages, ftlab itself): never the learner's own.
_LIBRARY = tuple(sorted({str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib",
                                                                                "platlib")}
                        | {str(Path(__file__).resolve().parent)}))


def _where(error: BaseException) -> str:
    """The deepest line of the learner's own code (a notebook cell, a lab function) in the traceback: where
    they can fix it, rather than the torch internals that raised."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if not f.filename.startswith("<frozen")
           and not str(Path(f.filename).resolve()).startswith(_LIBRARY)]
    frame = (own or frames)[-1]
    line = frame.line or "?"
    return f"in {frame.name}, line {frame.lineno}: {line}"


def evaluate(name: str, fn: Callable, reference: Callable, cases, *, observe: Callable | None = None,
             atol: float = 1e-6, rtol: float = 1e-5, hint: str = "") -> Result:
    """Run `fn` and `reference` on each case and compare what `observe(result, args)` returns."""
    observe = observe or (lambda result, args: result)
    for i, case in enumerate(cases, 1):
        try:
            args = _args(case)
            got = observe(fn(*args), args)
        except NotImplementedError:
            return Result(name, "todo", "not implemented yet: the reference is used so the notebook keeps running.")
        except Exception as e:  # the learner's code may raise anything; report it, don't crash
            return Result(name, "error", f"case {i} raised {type(e).__name__}: {e} ({_where(e)})", hint)
        args = _args(case)
        want = observe(reference(*args), args)
        try:
            _compare(got, want, atol, rtol)
        except Exception as e:  # an answer of the wrong kind (None, a string, ...) is a wrong answer, not a crash
            message = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            return Result(name, "fail", f"case {i}: {message}", hint)
    return Result(name, "pass", f"{len(cases)} case{'s' * (len(cases) != 1)} match the reference.")


def card(result: Result) -> str:
    """The result as a small HTML card."""
    label, colour = _BADGES[result.status]
    hint = f"<div><b>Hint:</b> {html.escape(result.hint)}</div>" if result.hint and not result.passed else ""
    return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
            f'<b style="color:{colour}">{label}</b> <code>{html.escape(result.name)}</code>: '
            f"{html.escape(result.message)}{hint}</div>")


def report(result: Result) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            display(HTML(card(result)))
            return
    except ImportError:
        pass
    label = _BADGES[result.status][0]
    print(f"[{label}] {result.name}: {result.message}" + (f"\n  Hint: {result.hint}" if result.hint and
                                                         not result.passed else ""))


def check(name: str, fn: Callable, reference: Callable, cases, **kwargs: Any) -> Callable:
    """Grade `fn` against `reference`, show the card, return the function later cells should use."""
    result = evaluate(name, fn, reference, cases, **kwargs)
    report(result)
    return fn if result.passed else reference
