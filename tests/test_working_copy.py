"""The learner's working copy (tools/workspace.py, behind `make lab` and `make fresh`) and the quiz's section
links, which open the working copy's chapter inside JupyterLab. The browser side is tests/test_quiz_browser.py."""

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.sign import NotebookNotary

from ftlab.quiz import session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import workspace  # noqa: E402

COURSE = ["chapters/00_setup.ipynb", "chapters/03_lora.ipynb", "labs/03_lora_lab.ipynb", "solutions/03_lora_lab.ipynb",
          "quizzes/practice.ipynb"]


def notebook(text: str) -> str:
    return nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text, id="only")]))


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A repository with five course notebooks (and a bank file that is not one), and its own Jupyter data dir
    (the notary's signatures); returns the working copy."""
    for rel in COURSE:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(notebook(f"print({rel!r})"))
    (tmp_path / "quizzes" / "bank").mkdir()
    (tmp_path / "quizzes" / "bank" / "03_lora.yaml").write_text("items: []\n")
    monkeypatch.setattr(workspace, "ROOT", tmp_path)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    return workspace.workdir("my")


def trusted(path: Path) -> bool:
    with NotebookNotary() as notary:
        return notary.check_signature(nbformat.read(path, as_version=4))


def test_sync_copies_each_course_notebook_once_in_the_same_layout(course):
    assert not trusted(workspace.ROOT / COURSE[0])
    made, updated, stale = workspace.sync(course)
    assert made == sorted(COURSE) and updated == stale == []
    for rel in COURSE:
        assert (course / rel).read_text() == (workspace.ROOT / rel).read_text()
        assert trusted(course / rel)  # signed, so JupyterLab runs its Read links without asking
    (course / "chapters/03_lora.ipynb").write_text("my outputs")
    assert workspace.sync(course) == ([], [], [])
    assert (course / "chapters/03_lora.ipynb").read_text() == "my outputs"  # never overwritten


def test_a_changed_original_is_named_and_the_learners_copy_kept(course, capsys):
    workspace.sync(course)
    (course / "chapters/03_lora.ipynb").write_text("my outputs")
    for rel in ("chapters/03_lora.ipynb", "labs/03_lora_lab.ipynb"):
        (workspace.ROOT / rel).write_text(notebook("new version"))
    made, updated, stale = workspace.sync(course)
    # The lab copy was never touched, so it simply follows the course; the chapter holds the learner's work.
    assert (made, updated, stale) == ([], ["labs/03_lora_lab.ipynb"], ["chapters/03_lora.ipynb"])
    assert (course / "chapters/03_lora.ipynb").read_text() == "my outputs"
    assert (course / "labs/03_lora_lab.ipynb").read_text() == notebook("new version")
    workspace.report(course, made, updated, stale)
    assert "make fresh NB=chapters/03_lora.ipynb" in capsys.readouterr().out
    assert workspace.sync(course)[2] == ["chapters/03_lora.ipynb"]  # said again until the learner decides


def test_fresh_brings_the_new_version_and_keeps_the_old_copy_as_a_backup(course):
    workspace.sync(course)
    (course / "chapters/03_lora.ipynb").write_text("my outputs")
    (workspace.ROOT / "chapters/03_lora.ipynb").write_text(notebook("new version"))
    dest, backup = workspace.fresh(course, "my/chapters/03_lora.ipynb")  # the copy's own path works too
    assert dest.read_text() == notebook("new version") and backup.read_text() == "my outputs"
    assert backup.parent == dest.parent and backup.name.startswith("03_lora.backup-")
    assert workspace.sync(course) == ([], [], [])


def test_bad_names_and_a_damaged_record_are_refused_without_touching_copies(course):
    with pytest.raises(workspace.WorkspaceError, match="NB='chapters/99_x.ipynb': not a course notebook"):
        workspace.fresh(course, "chapters/99_x.ipynb")
    for bad in ("../elsewhere", "chapters"):
        with pytest.raises(workspace.WorkspaceError, match=f"--work {bad!r}"):
            workspace.workdir(bad)
    workspace.sync(course)
    (course / "chapters/03_lora.ipynb").write_text("my outputs")
    (course / workspace.MANIFEST).write_text("{not json")
    with pytest.raises(workspace.WorkspaceError, match=r"\.copies\.json: not valid JSON"):
        workspace.sync(course)
    assert (course / "chapters/03_lora.ipynb").read_text() == "my outputs"


def test_lab_serves_the_repository_and_opens_the_copy_of_chapter_00(course, monkeypatch):
    for display in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(display, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    cmd = workspace.lab_command(course, 8899, ["--ServerApp.ip=0.0.0.0"])
    assert cmd[1:4] == ["-m", "jupyter", "lab"] and "--port=8899" in cmd
    assert f"--ServerApp.root_dir={workspace.ROOT}" in cmd
    assert "--LabApp.default_url=/lab/tree/my/chapters/00_setup.ipynb" in cmd
    assert "--no-browser" in cmd and cmd[-1] == "--ServerApp.ip=0.0.0.0"
    monkeypatch.setenv("DISPLAY", ":0")
    assert "--no-browser" not in workspace.lab_command(course, 8899, [])


def test_make_lab_runs_the_workspace_script():
    dry = subprocess.run(["make", "-n", "-o", "setup", "lab", "PORT=8899", "WORK=build/x"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "tools/workspace.py --work build/x lab --port 8899" in dry


class _Anchor(HTMLParser):
    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.attrs = dict(attrs)


def anchor(html: str) -> dict:
    parser = _Anchor()
    parser.feed(html)
    return parser.attrs


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository with chapter 03, and a working copy of it under my/."""
    for rel in ("chapters/03_lora.ipynb", "my/chapters/03_lora.ipynb", "my/quizzes/practice.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    monkeypatch.setattr(session, "REPO", tmp_path)
    return tmp_path


@pytest.mark.parametrize("kernel_dir, path, href", [
    ("chapters", "chapters/03_lora.ipynb", "03_lora.ipynb#Merging"),
    ("my/quizzes", "my/chapters/03_lora.ipynb", "../chapters/03_lora.ipynb#Merging"),  # the working copy's chapter
    ("elsewhere/deep", "chapters/03_lora.ipynb", "../../chapters/03_lora.ipynb#Merging"),  # no copy beside it
])
def test_read_link_opens_the_chapter_in_jupyterlab_and_falls_back_to_a_new_tab(repo, monkeypatch, kernel_dir, path,
                                                                                href):
    (repo / kernel_dir).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(repo / kernel_dir)
    html = session.link("chapters/03_lora.ipynb#Merging", "Merging &amp; serving")
    a = anchor(html)
    assert html.endswith(">Merging &amp; serving</a>")  # the text as given, already escaped
    assert a["data-commandlinker-command"] == "rendermime:handle-local-link"
    assert json.loads(a["data-commandlinker-args"]) == {"path": path, "id": "#heading=Merging"}
    assert a["href"] == href and a["target"] == "_blank"


def test_read_link_names_the_heading_cell_when_the_chapter_stores_cell_ids(repo, monkeypatch):
    # JupyterLab writes cell ids when it saves, so a working copy the learner has opened has them; a cell id is
    # found in a notebook the click has just opened, where a heading is not (JupyterLab 4.6).
    cells = [nbformat.v4.new_markdown_cell("# 03 LoRA\n\nIntro.", id="top"),
             nbformat.v4.new_code_cell("x = 1", id="code"),
             nbformat.v4.new_markdown_cell("## Merging\n\nFold it in.", id="merge-cell")]
    saved = nbformat.v4.new_notebook(cells=cells)
    (repo / "my/chapters/03_lora.ipynb").write_text(nbformat.writes(saved))
    monkeypatch.chdir(repo / "my/quizzes")
    a = anchor(session.link("chapters/03_lora.ipynb#Merging", "Merging"))
    assert json.loads(a["data-commandlinker-args"])["id"] == "#cell-id=merge-cell"
    assert a["href"].endswith("#Merging")  # other frontends know the heading anchor

