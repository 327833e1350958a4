"""Committed notebooks are clean, declare their kernel, and follow the course's conventions."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for d in ("chapters", "solutions", "labs", "quizzes") for p in (ROOT / d).glob("*.ipynb"))
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
# an empty glob would turn every parametrized test below into a silent skip
assert CHAPTERS and NOTEBOOKS, f"no notebooks found under {ROOT}"


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p not in CHAPTERS], ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_without_outputs(path):
    # Labs, solutions and the practice notebook are worked through, not read: they ship clean. A cell may keep
    # its output only when that output is part of the lesson and deterministic.
    dirty = [i for i, c in enumerate(cells(path)) if c["cell_type"] == "code"
             and not c.get("metadata", {}).get("keep_output")
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_outputs_belong_to_its_code(path):
    # Chapters are committed with the outputs of one cpu run (tools/run_chapters.py), stamped with the hash of
    # the code cells that produced them: an edited code cell makes them stale until the chapter is run again.
    sys.path.insert(0, str(ROOT / "tools"))
    import run_chapters

    why = run_chapters.stale(path)
    assert why is None, f"{path.name} {why}; refresh with: python tools/run_chapters.py chapters/{path.name}"
    made = json.loads(path.read_text(encoding="utf-8"))["metadata"][run_chapters.STAMP]
    assert made["profile"] == "cpu", f"{path.name}: its outputs come from the {made['profile']} profile, not cpu"
    lean = [i for i, c in enumerate(cells(path)) if c["cell_type"] == "code"
            for o in c.get("outputs", []) if run_chapters.WIDGET in o.get("data", {})]
    assert not lean, f"{path.name}: cells {lean} keep widget views (run the chapter through tools/run_chapters.py)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_declares_python3_kernel(path):
    # Without kernelspec metadata JupyterLab opens a "select kernel" dialog.
    meta = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert meta.get("kernelspec", {}).get("name") == "python3", f"{path.name}: add kernelspec metadata"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_its_quiz(path):
    number = path.name[:2]
    code = [source(c) for c in cells(path) if c["cell_type"] == "code"]
    call = f'Quiz(chapter="{number}")'
    assert call in code[-1], f"{path.name}: the last code cell must show {call}"
    headings = [line for c in cells(path) if c["cell_type"] == "markdown" for line in source(c).splitlines()]
    assert "## Quiz" in headings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_profile_if_ladders(path):
    # Sizes come from runtime.profile(); a notebook never branches on the profile's name.
    ladder = re.compile(r"\b(P|profile\(\))\.name\s*(==|!=|in\b)|environ.*FTLAB_PROFILE")
    for c in cells(path):
        if c["cell_type"] == "code":
            assert not ladder.search(source(c)), f"{path.name}: use the fields of runtime.profile(), not its name"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_nbformat_4_5_with_cell_ids(path):
    # A quiz "Read:" link opens its chapter at a cell id (`#cell-id=...`): JupyterLab finds an id at once,
    # while a heading is only found among cells it has already drawn, so without ids the first click
    # opens the chapter at the top.
    import nbformat

    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), f"{path.name}: nbformat {nb.nbformat}.{nb.nbformat_minor}"
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: every cell needs a unique id"
