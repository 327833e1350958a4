"""The labs in a real nbgrader course: generate_assignment, then autograde three submissions of lab 00.

A solved notebook scores every point, the blank release scores none, and one whose functions call ftlab's
own versions instead of computing the answer scores none either (ftlab.grading's tripwire, strict under
nbgrader). The course folder is made by tools/nbgrader_course.py with the shipped nbgrader_config.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbgrader_course  # noqa: E402

LAB = "00_warmup_lab"
STUB = "# YOUR CODE HERE\n    raise NotImplementedError()"
# What a learner who calls the library instead of writing the function would hand in.
COPIED = {"def count_trainable": "return models.n_params(model, trainable_only=True)",
          "def masked_lm_loss": "return losses.causal_lm_loss(logits, labels)"}


def nbgrader(course: Path, *args: str) -> None:
    # nbgrader runs alembic as a subprocess: the virtual environment's bin/ must be on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("FTLAB_GRADE", "JPY_SESSION_NAME"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def submit(course: Path, student: str, nb: dict) -> None:
    path = course / "submitted" / student / LAB / f"{LAB}.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def copied(release: dict) -> dict:
    nb = json.loads(json.dumps(release))
    for cell in nb["cells"]:
        for header, body in COPIED.items():
            source = "".join(cell["source"])
            if header in source:
                assert STUB in source
                cell["source"] = source.replace(STUB, body)
    return nb


def test_solution_scores_full_points_blank_and_copied_score_nothing(tmp_path):
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    nbgrader_course.make_course(course, [LAB])
    nbgrader(course, "generate_assignment", LAB, "--force")
    release = json.loads((course / "release" / LAB / f"{LAB}.ipynb").read_text(encoding="utf-8"))
    lab = json.loads((ROOT / "labs" / f"{LAB}.ipynb").read_text(encoding="utf-8"))
    assert [c["source"] for c in release["cells"]] == [c["source"] for c in lab["cells"]]  # nbgrader's release = labs/

    submit(course, "solved", json.loads((course / "source" / LAB / f"{LAB}.ipynb").read_text(encoding="utf-8")))
    submit(course, "blank", release)
    submit(course, "copier", copied(release))
    nbgrader(course, "autograde", LAB, "--force")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission(LAB, s).score, gb.find_submission(LAB, s).max_score)
                  for s in ("solved", "blank", "copier")}
    assert scores == {"solved": (2.0, 2.0), "blank": (0.0, 2.0), "copier": (0.0, 2.0)}
    graded = (course / "autograded" / "copier" / LAB / f"{LAB}.ipynb").read_text(encoding="utf-8")
    assert "calls ftlab.models.n_params" in graded and "calls ftlab.losses.causal_lm_loss" in graded


def test_unknown_lab_is_named(tmp_path):
    with pytest.raises(ValueError, match="no solution notebook for 99_nope_lab"):
        nbgrader_course.make_course(tmp_path / "c", ["99_nope_lab"])
