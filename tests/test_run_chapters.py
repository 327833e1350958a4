"""tools/run_chapters.py from a terminal: it runs a chapter in place, keeps lean outputs and a stamp, and --check
names a chapter whose code changed since, with the command that refreshes it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "run_chapters.py"


def _tool(*args):
    env = {**os.environ, "FTLAB_PROFILE": "ci"}
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def _chapter(path: Path) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"),
                nbformat.v4.new_code_cell("import sys\nfrom tqdm.auto import tqdm\n"
                                          "for _ in tqdm(range(3), file=sys.stderr):\n    pass\nprint(6 * 7)"),
                nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\n\nplt.plot([1, 2])\nplt.show()"),
                nbformat.v4.new_code_cell("from ftlab.quiz import Quiz\n\nQuiz(chapter=\"00\")")]
    nbformat.write(nb, path)
    return path


def test_runs_in_place_with_lean_outputs_and_a_stamp_then_check_catches_an_edit(tmp_path):
    chapter = _chapter(tmp_path / "00_demo.ipynb")
    run = _tool(chapter, "--profile", "ci", "--times", tmp_path / "times.json")
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    nb = json.loads(chapter.read_text())
    outputs = nb["cells"][1]["outputs"]
    assert ["".join(o["text"]) for o in outputs if o["output_type"] == "stream"] == ["42\n"]  # the bar is gone
    assert [list(o["data"]) for o in nb["cells"][2]["outputs"]] == [["image/png", "text/plain"]]  # the plot is kept
    assert "".join(nb["cells"][3]["outputs"][0]["text"]).startswith("(The chapter's adaptive quiz appears here")
    made = nb["metadata"]["ftlab_outputs"]
    assert made["profile"] == "ci" and made["threads"] == 1 and made["packages"]["torch"]
    assert "widgets" not in nb["metadata"]
    times = json.loads((tmp_path / "times.json").read_text())
    assert str(chapter) in times["ci/1 thread(s)"]
    assert _tool("--check", chapter).returncode == 0

    nb["cells"][1]["source"] = "print(6 * 9)"
    chapter.write_text(json.dumps(nb))
    check = _tool("--check", chapter)
    assert check.returncode == 1
    assert "00_demo.ipynb: code cells changed" in check.stdout
    assert f"refresh with: python tools/run_chapters.py {chapter}" in check.stdout


def test_a_failing_chapter_is_left_as_it_was(tmp_path):
    chapter = _chapter(tmp_path / "01_broken.ipynb")
    nb = json.loads(chapter.read_text())
    nb["cells"][1]["source"] = "raise RuntimeError('boom')"
    chapter.write_text(json.dumps(nb))
    before = chapter.read_text()
    run = _tool(chapter, "--profile", "ci", "--times", tmp_path / "times.json")
    assert run.returncode == 1 and "FAILED: cell 1: RuntimeError: boom" in run.stdout
    assert chapter.read_text() == before
