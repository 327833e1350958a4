"""Lab checks: a result card for the learner, an assertion under grading.

    accumulate = grading.check("accumulate", accumulate, train.accumulate, cases=[make_case],
                               observe=lambda result, args: grads_of(args[0]), hint="divide by the total token count")

The learner's function runs on every case beside the reference; the outputs are compared with
`torch.testing.assert_close` (tensors, nested lists/tuples/dicts), within atol + rtol * |want| (numbers;
NaN never matches, True is not 1) or `==`. The card says pass, fail (with the first mismatch and the hint),
"not implemented yet", or the learner's exception with the line of the learner's code that raised it.

Two modes:
- learning (the default): whatever happens, the function returned is one that works (the learner's when it
  passed, else the reference), so later cells run;
- strict grading (FTLAB_GRADE=1, or inside nbgrader's autograde and validate, which set NBGRADER_EXECUTION):
  a check that does not pass raises AssertionError with the card's text, so the cell fails and scores nothing.

A check passes only on the learner's own work: a function named like the check, defined in the notebook,
must run (assigning the library's function to the name does not count), and it must not call the ftlab
functions the reference is built on (those the reference calls from outside ftlab, any ftlab function with
the exercise's name, and any given as `guard=`). This is a tripwire, not a sandbox: code copied from the
reference's source, another ftlab function that does the same job, a call made on another thread, or a cell
that patches this module all get past it. Graded work that must be beyond doubt needs hidden tests run
elsewhere, or a reading.

Each shown result is also recorded in the learner's progress store (pass/fail per check, with its lab and
time; `ftlab export` carries it and `ftlab report` shows it) unless nbgrader is grading: its gradebook is
the record there. A store that cannot be written to never stops the check; the card says why.
"""

from __future__ import annotations

import copy
import functools
import html
import inspect
import numbers
import os
import sys
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


def strict() -> bool:
    """True under strict grading: FTLAB_GRADE=1 (our tests), or nbgrader executing (autograde, validate)."""
    return os.environ.get("FTLAB_GRADE") == "1" or bool(os.environ.get("NBGRADER_EXECUTION"))


_SELF = str(Path(__file__).resolve())
_PACKAGE = str(Path(__file__).resolve().parent) + os.sep


@functools.lru_cache(maxsize=None)
def _kind(filename: str) -> str:
    """Who wrote the code in `filename`: "grading" (this module), "ftlab", "library" (stdlib, site-packages,
    code made by exec or dataclasses) or "notebook" (a cell, a test file: the learner's side of the course)."""
    if filename.startswith("<"):
        return "library" if filename == "<string>" or filename.startswith("<frozen") else "notebook"
    path = os.path.realpath(filename)
    if path == _SELF:
        return "grading"
    if path.startswith(_PACKAGE):
        return "ftlab"
    return "library" if path.startswith(_LIBRARY) else "notebook"


def _named(code, name: str) -> bool:
    """Whether `code` is a function called `name` or is defined inside one (f.<locals>.<genexpr>)."""
    return name in code.co_qualname.split(".")


class _Watch:
    """Watches one side of a check on this thread: sys.settrace, seeing each Python function start (no lines).

    `entered` maps each ftlab function entered from outside ftlab (with library frames such as
    torch's Module.__call__ skipped) to its module. With `name` (the learner's side) only entries
    made while a notebook function called `name` is on the stack count, and `ran` says whether one ran.
    """

    def __init__(self, name: str | None = None):
        self.name, self.ran, self.entered = name, False, {}

    def __enter__(self):
        self._before = sys.gettrace()
        sys.settrace(self._on_call)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._before)

    def _on_call(self, frame, event, arg) -> None:
        """The global trace function: called as each Python function starts; returning None traces no lines."""
        kind = _kind(frame.f_code.co_filename)
        if kind == "notebook" and self.name and not self.ran:
            self.ran = _named(frame.f_code, self.name)
        elif kind == "ftlab":
            caller = frame.f_back
            while caller is not None and _kind(caller.f_code.co_filename) == "library":
                caller = caller.f_back
            if caller is not None and _kind(caller.f_code.co_filename) != "ftlab" and self._counts(caller):
                self.entered[frame.f_code] = frame.f_globals.get("__name__", "ftlab")

    def _counts(self, frame) -> bool:
        """On the reference's side, every entry; on the learner's, one made inside their function."""
        if self.name is None:
            return True
        while frame is not None and _kind(frame.f_code.co_filename) != "grading":
            if _kind(frame.f_code.co_filename) == "notebook" and _named(frame.f_code, self.name):
                return True
            frame = frame.f_back
        return False


def _code(obj):
    """The code object of a function or method given as `guard=`."""
    code = getattr(inspect.unwrap(getattr(obj, "__func__", obj)), "__code__", None)
    if code is None:
        raise TypeError(f"guard= takes functions or methods, got {type(obj).__name__} {obj!r:.60}")
    return code


def _copied(learner: _Watch, reference: _Watch, guard: set) -> list[str]:
    """The guarded ftlab functions that the learner's code called: those the reference is built on, those in
    `guard`, and any ftlab function with the exercise's own name (lora.add_lora for add_lora)."""
    guarded = set(reference.entered) | guard
    return sorted(f"{module}.{code.co_qualname}" for code, module in learner.entered.items()
                  if code in guarded or code.co_name == learner.name)


def evaluate(name: str, fn: Callable, reference: Callable, cases, *, observe: Callable | None = None,
             atol: float = 1e-6, rtol: float = 1e-5, hint: str = "", guard=()) -> Result:
    """Run `fn` and `reference` on each case and compare what `observe(result, args)` returns.

    `name` is the learner's function's name: it must run, and must not call the guarded ftlab functions.
    """
    observe = observe or (lambda result, args: result)
    guard = {_code(g) for g in guard}
    learner, ref = _Watch(name), _Watch()
    for i, case in enumerate(cases, 1):
        try:
            args = _args(case)
            with learner:
                got = observe(fn(*args), args)
        except NotImplementedError:
            return Result(name, "todo", "not implemented yet: the reference is used so the notebook keeps running.")
        except Exception as e:  # the learner's code may raise anything; report it, don't crash
            return Result(name, "error", f"case {i} raised {type(e).__name__}: {e} ({_where(e)})", hint)
        if not learner.ran:
            return Result(name, "fail", f"no function of yours named `{name}` ran: write it as `def {name}(...)` "
                                        "in the exercise cell (the library's function under that name does not count)",
                          hint)
        args = _args(case)
        with ref:
            want = observe(reference(*args), args)
        try:
            _compare(got, want, atol, rtol)
        except Exception as e:  # an answer of the wrong kind (None, a string, ...) is a wrong answer, not a crash
            message = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            return Result(name, "fail", f"case {i}: {message}", hint)
    copied = _copied(learner, ref, guard)
    if copied:
        return Result(name, "fail", f"`{name}` calls {', '.join(copied)}, the library's version of what this "
                                    "exercise asks you to write: write the steps yourself", hint)
    return Result(name, "pass", f"{len(cases)} case{'s' * (len(cases) != 1)} match the reference.")


def card(result: Result, note: str = "") -> str:
    """The result as a small HTML card; `note` is a line under it (e.g. why it was not saved)."""
    label, colour = _BADGES[result.status]
    hint = f"<div><b>Hint:</b> {html.escape(result.hint)}</div>" if result.hint and not result.passed else ""
    note = f'<div style="color:#57606a">{html.escape(note)}</div>' if note else ""
    return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0">'
            f'<b style="color:{colour}">{label}</b> <code>{html.escape(result.name)}</code>: '
            f"{html.escape(result.message)}{hint}{note}</div>")


def text(result: Result) -> str:
    """The card as plain text: what a terminal shows and what strict grading raises."""
    hint = f"\n  Hint: {result.hint}" if result.hint and not result.passed else ""
    return f"[{_BADGES[result.status][0]}] {result.name}: {result.message}{hint}"


def _lab() -> str:
    """The notebook running this check, as Jupyter's server names it to the kernel (JPY_SESSION_NAME):
    its file name without .ipynb, e.g. 03_lora_lab; "unknown" outside a Jupyter server."""
    return Path(os.environ.get("JPY_SESSION_NAME", "")).stem or "unknown"


def _record(result: Result) -> str:
    """Save the result in the learner's progress store; "" when saved (or nbgrader grades), else why not."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return ""
    try:
        from ftlab.quiz.store import Store

        with Store() as store:
            store.record_check(_lab(), result.name, result.status)
    except Exception as e:  # a busy, read-only or damaged store, a bad FTLAB_LEARNER: the check matters more
        return f"Not saved to your progress: {e}"
    return ""


def _show(result: Result, note: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            display(HTML(card(result, note)))
            return
    except ImportError:
        pass
    print(text(result) + (f"\n  ({note})" if note else ""))


def report(result: Result) -> None:
    """Show the card and record the result; under strict grading, raise AssertionError unless it passed."""
    _show(result, _record(result))
    if strict() and not result.passed:
        raise AssertionError(text(result))


def check(name: str, fn: Callable, reference: Callable, cases, **kwargs: Any) -> Callable:
    """Grade `fn` against `reference` and report it; return the function later cells should use.

    Under strict grading a check that does not pass raises instead of returning.
    """
    result = evaluate(name, fn, reference, cases, **kwargs)
    report(result)
    return fn if result.passed else reference
