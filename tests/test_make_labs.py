import contextlib
import io
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_labs  # noqa: E402


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Lab checks run here record their results in a throwaway progress store."""
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))


SOLUTION = '''def f(x):
    """Double x."""
    ### BEGIN SOLUTION
    y = x * 2
    return y
    ### END SOLUTION

z = 1'''


def test_strip_keeps_indentation_and_surroundings():
    out = make_labs.strip_solution(SOLUTION)
    assert out == ('def f(x):\n    """Double x."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nz = 1')
    namespace = {}
    exec(out, namespace)  # the stub is valid Python and raises when called
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


@pytest.mark.parametrize("src, msg", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
])
def test_malformed_markers_are_errors(src, msg):
    with pytest.raises(make_labs.LabError, match=msg):
        make_labs.strip_solution(src, "x.ipynb cell 0")


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", text="old output")]
    cell.execution_count = 3
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab"), cell]
    nbformat.write(nb, path)


def run(*args):
    """tools/make_labs.py with these arguments, in this process (a new one per call took ~10 s under load)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = make_labs.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_generate_then_check_round_trip(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    sol.mkdir()
    _notebook(sol / "01_x_lab.ipynb", SOLUTION)
    dirs = ["--solutions", str(sol), "--labs", str(labs)]
    assert run("--check", *dirs).returncode == 1  # nothing generated yet
    assert run(*dirs).returncode == 0
    assert run("--check", *dirs).returncode == 0
    lab = nbformat.read(labs / "01_x_lab.ipynb", as_version=4)
    code = lab.cells[1]
    assert "# YOUR CODE HERE" in code.source and "x * 2" not in code.source
    assert code.outputs == [] and code.execution_count is None
    _notebook(sol / "01_x_lab.ipynb", SOLUTION.replace("x * 2", "x + x"))  # solution edited, lab not regenerated
    stale = run("--check", *dirs)
    assert stale.returncode == 1 and "stale" in stale.stdout
    (labs / "99_orphan_lab.ipynb").write_text((labs / "01_x_lab.ipynb").read_text())
    assert "no solution for" in run("--check", *dirs).stdout


CHECK = 'f = grading.check("f", f, lambda x: 2 * x, cases=[(1,)])'


def _cells(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s[3:]) if s.startswith("md:") else nbformat.v4.new_code_cell(s)
                for s in cells]
    nbformat.write(nb, path)


def test_nbgrader_metadata_solution_graded_and_locked_cells(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    sol.mkdir()
    _cells(sol / "01_x_lab.ipynb", "md:# Lab", "from ftlab import grading", SOLUTION, CHECK,
           "md:Predict first:\n### BEGIN SOLUTION\nIt doubles.\n### END SOLUTION")
    assert run("--solutions", str(sol), "--labs", str(labs)).returncode == 0
    for folder in (sol, labs):
        cells = nbformat.read(folder / "01_x_lab.ipynb", as_version=4).cells
        meta = [c.metadata["nbgrader"] for c in cells]
        ids = [f"cell-{c.id}" for c in cells]  # a locked cell's grade id follows its cell id (stable across edits)
        assert [(m["grade_id"], m["solution"], m["grade"], m["locked"], m.get("points")) for m in meta] == [
            (ids[0], False, False, True, None), (ids[1], False, False, True, None),
            ("solution-f", True, False, False, None), ("f", False, True, True, 1),
            (f"solution-{cells[4].id}", True, True, False, 1)]  # a written answer: graded by hand
        assert all(m["schema_version"] == 3 and m["task"] is False for m in meta)
    assert "x * 2" in nbformat.read(sol / "01_x_lab.ipynb", as_version=4).cells[2].source  # solutions keep code
    lab = nbformat.read(labs / "01_x_lab.ipynb", as_version=4).cells
    assert lab[4].source == "Predict first:\nYOUR ANSWER HERE" and "# YOUR CODE HERE" in lab[2].source
    _cells(sol / "01_x_lab.ipynb", "md:# Lab", "from ftlab import grading", SOLUTION, CHECK)  # metadata lost
    stale = run("--check", "--solutions", str(sol), "--labs", str(labs))
    assert stale.returncode == 1 and "stale: " + str(sol / "01_x_lab.ipynb") in stale.stdout


@pytest.mark.parametrize("cells, message", [
    ([SOLUTION, CHECK.replace('"f"', '"g"')], "the check 'g' grades no function defined in a solution cell"),
    ([CHECK, SOLUTION], "the check 'f' grades no function defined in a solution cell above it"),
    ([SOLUTION, 'r = grading.evaluate("f", f, abs, [(1,)])'], "grading.evaluate without grading.report"),
    ([SOLUTION, CHECK + "\n" + CHECK], "2 checks in one cell"),
    ([SOLUTION + "\n" + CHECK], "a solution and a check in one cell"),
])
def test_a_check_that_nbgrader_could_not_grade_is_refused(tmp_path, cells, message):
    sol = tmp_path / "solutions"
    sol.mkdir()
    _cells(sol / "01_x_lab.ipynb", *cells)
    r = run("--solutions", str(sol), "--labs", str(tmp_path / "labs"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "labs").exists()


def test_solution_without_markers_is_refused(tmp_path):
    sol = tmp_path / "solutions"
    sol.mkdir()
    _notebook(sol / "02_y_lab.ipynb", "x = 1")
    r = run("--solutions", str(sol), "--labs", str(tmp_path / "labs"))
    assert r.returncode == 2 and "no '### BEGIN SOLUTION' block" in r.stderr


def test_committed_labs_are_up_to_date():
    r = run("--check")
    assert r.returncode == 0, r.stdout + r.stderr


# --- what lab 03 tells a learner (browser review, defect 6) ----------------------------------------------

IGNORES_MERGED = '''def lora_forward(layer, x):
    return layer.base(x) + layer.lora_B(layer.lora_A(layer.dropout(x))) * layer.scaling'''


def _run_lab(name, replace=None, until=None):
    """Run a notebook's code cells in one namespace, as a kernel would; `replace` swaps the cell that defines
    a function for other source. Returns (namespace, printed text, {cell index: `result` after it})."""
    nb = nbformat.read(ROOT / name, as_version=4)
    ns, results, out = {}, {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, cell in enumerate(nb.cells[:until]):
            if cell.cell_type != "code":
                continue
            source = cell.source
            for fn, new in (replace or {}).items():
                if source.lstrip().startswith(f"def {fn}("):
                    source = new
            exec(compile(source, f"<cell {i}>", "exec"), ns)
            if "result" in ns:
                results[i] = ns.pop("result")
    return ns, out.getvalue(), results


def test_lab03_solutions_pass_every_check():
    _, printed, results = _run_lab("solutions/03_lora_lab.ipynb")
    assert [(r.name, r.status) for r in results.values()] == [(n, "pass") for n in ("lora_forward", "lora_merge",
                                                                                   "add_lora")]
    assert "bit-identical" in printed and "runs on the reference" not in printed


def test_lab03_blames_a_forward_that_ignores_merged_in_exercise_1():
    """It used to PASS exercise 1 (no merged case), FAIL a correct merge in exercise 2, and die at the end."""
    ns, printed, results = _run_lab("solutions/03_lora_lab.ipynb", {"lora_forward": IGNORES_MERGED})
    forward, merge, inject = (results[i] for i in sorted(results))
    assert (forward.name, forward.status) == ("lora_forward", "fail") and "case 3" in forward.message
    assert merge.passed and inject.passed
    assert ns["replaced"] == ["lora_forward"]
    assert "runs on the reference lora_forward, not yours" in printed and "bit-identical" not in printed


def test_lab03_stubs_say_the_last_cell_ran_on_the_references():
    ns, printed, results = _run_lab("labs/03_lora_lab.ipynb")
    assert [r.status for r in results.values()] == ["todo"] * 3
    assert "runs on the reference lora_forward, lora_merge, add_lora, not yours" in printed
    assert "bit-identical" not in printed


def test_lab03_last_cell_fails_with_a_message():
    nb = nbformat.read(ROOT / "solutions/03_lora_lab.ipynb", as_version=4)
    ns, _, _ = _run_lab("solutions/03_lora_lab.ipynb", until=len(nb.cells) - 1)
    exec(IGNORES_MERGED, ns)  # redefined after its check passed: merging then adds the update twice
    with pytest.raises(AssertionError, match="merging changed the logits by .*layer.merged is True"):
        exec(nb.cells[-1].source, ns)
