"""The learners' release (tools/make_release.py): the course without solutions, as a folder and a zip."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_release  # noqa: E402


def test_release_has_the_course_and_no_solution(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "make_release.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "ftlab-course"
    files = {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}
    assert not (folder / "solutions").exists() and not any("solutions" in f.parts for f in files)
    for f in files:
        text = (folder / f).read_bytes()
        assert b"BEGIN SOLUTION" not in text and b"END SOLUTION" not in text, f
    labs = {p.name for p in (ROOT / "labs").glob("*.ipynb")}
    assert {f.name for f in files if f.parts[0] == "labs"} == labs
    for needed in ("README.md", "pyproject.toml", "Makefile", "ftlab/__init__.py", "ftlab/grading.py",
                   "tools/workspace.py", "quizzes/practice.ipynb", "chapters/00_setup.ipynb"):
        assert Path(needed) in files, needed
    assert any(f.parts[0] == "data" for f in files) and any(f.parts[:2] == ("quizzes", "bank") for f in files)
    assert not any(f.parts[0] in ("tests", ".venv", "build", "my") or f.name == "make_labs.py" for f in files)
    with zipfile.ZipFile(tmp_path / "ftlab-course.zip") as z:
        zipped = {Path(n).relative_to("ftlab-course") for n in z.namelist() if not n.endswith("/")}
    assert zipped == files


def test_a_leaking_file_stops_the_release_and_writes_nothing(tmp_path):
    repo = tmp_path / "repo"
    (repo / "labs").mkdir(parents=True)
    (repo / "labs" / "01_x_lab.ipynb").write_text('{"source": "### BEGIN SOLUTION"}')
    (repo / "solutions").mkdir()
    (repo / "solutions" / "01_x_lab.ipynb").write_text("{}")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    with pytest.raises(make_release.ReleaseError) as e:
        make_release.make_release(tmp_path / "out", root=repo, shipped=("labs", "solutions"))
    assert "labs/01_x_lab.ipynb: contains a solution marker" in str(e.value)
    assert "solutions/01_x_lab.ipynb: lies under solutions/" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_folder_it_did_not_write_is_never_replaced(tmp_path):
    repo = tmp_path / "repo"
    (repo / "labs").mkdir(parents=True)
    (repo / "labs" / "a.txt").write_text("lab")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (tmp_path / "out" / "ftlab-course").mkdir(parents=True)
    (tmp_path / "out" / "ftlab-course" / "mine.txt").write_text("keep me")
    with pytest.raises(make_release.ReleaseError, match="was not written by make_release"):
        make_release.make_release(tmp_path / "out", root=repo, shipped=("labs",))
    assert (tmp_path / "out" / "ftlab-course" / "mine.txt").read_text() == "keep me"
    (tmp_path / "out" / "ftlab-course" / "mine.txt").unlink()
    (tmp_path / "out" / "ftlab-course" / make_release.STAMP).write_text("")
    folder, _ = make_release.make_release(tmp_path / "out", root=repo, shipped=("labs",))
    assert (folder / "labs" / "a.txt").read_text() == "lab"
