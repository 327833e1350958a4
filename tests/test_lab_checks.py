"""Every solution passes every graded check under strict grading; every blank lab reports every check as TODO.

Each notebook runs in its own kernel, as a learner's would, with the checks' results read back from the
progress store they are recorded in (a throwaway FTLAB_HOME that borrows the real model cache). The graded
checks are the cells that tools/make_labs.py marks as nbgrader grade cells, so a check that never ran, or one
that a notebook skipped, shows up as missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ftlab import runtime
from ftlab.quiz.store import Store

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def graded_checks(nb: nbformat.NotebookNode) -> list[str]:
    """The check names of the autograded cells, in notebook order (their nbgrader grade ids)."""
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"]["solution"]]


def isolated_home(tmp_path: Path) -> Path:
    """A fresh FTLAB_HOME whose caches (converted models, ...) are links to the real one's: only progress is new."""
    real, home = runtime.home(), tmp_path / "home"
    home.mkdir()
    for entry in real.iterdir():
        if entry.name != "progress":
            (home / entry.name).symlink_to(entry)
    return home


def run(path: Path, home: Path, strict: bool) -> tuple[list[tuple[str, str]], str]:
    """Execute the notebook in a new kernel; the (check, status) rows it recorded, and the error that stopped it."""
    env = {**os.environ, "FTLAB_HOME": str(home), "FTLAB_LEARNER": "lab-test",
           "JPY_SESSION_NAME": str(path.relative_to(ROOT))}  # what Jupyter's server tells a kernel
    env.pop("NBGRADER_EXECUTION", None)
    if strict:
        env["FTLAB_GRADE"] = "1"
    else:
        env.pop("FTLAB_GRADE", None)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    stopped = ""
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        stopped = str(e)[-1500:]
    with Store("lab-test", writable=False) as store:
        rows = [(c.check, c.status) for c in store.lab_checks() if c.lab == path.stem]
    return rows, stopped


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_solution_passes_every_check_strictly(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(isolated_home(tmp_path)))
    rows, stopped = run(path, Path(os.environ["FTLAB_HOME"]), strict=True)
    wanted = graded_checks(nbformat.read(path, as_version=4))
    assert wanted, f"{path.name} has no graded check cells: run tools/make_labs.py"
    assert not stopped and rows == [(name, "pass") for name in wanted], f"{rows}\n{stopped}"


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_every_blank_lab_reports_todo_for_every_check(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(isolated_home(tmp_path)))
    rows, stopped = run(path, Path(os.environ["FTLAB_HOME"]), strict=False)
    wanted = graded_checks(nbformat.read(path, as_version=4))
    assert not stopped and rows == [(name, "todo") for name in wanted], f"{rows}\n{stopped}"
