"""benchmarks/time_notebooks.py: runs notebooks in a fresh kernel under the profile and thread count asked
for, and records what it measured (or the error) in the JSON the README's time tables come from."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_notebooks.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_times_each_notebook_in_a_kernel_with_the_profile_and_threads_asked_for(tmp_path):
    seen = tmp_path / "env.json"
    good = notebook(tmp_path / "good.ipynb", "x = 1",
                    "import time; time.sleep(1.0)",
                    f"import json, os; json.dump({{k: os.environ[k] for k in ('FTLAB_PROFILE', 'OMP_NUM_THREADS')}}, "
                    f"open({str(seen)!r}, 'w'))")
    bad = notebook(tmp_path / "bad.ipynb", "raise RuntimeError('cell two of bad')")
    out = tmp_path / "times.json"
    r = run("--profile", "ci", "--threads", "1", "--out", str(out), str(good), str(bad))
    assert r.returncode == 1, r.stdout + r.stderr  # one notebook failed
    assert json.loads(seen.read_text()) == {"FTLAB_PROFILE": "ci", "OMP_NUM_THREADS": "1"}
    times = json.loads(out.read_text())["ci/1 thread(s)"]
    g, b = times[str(good)], times[str(bad)]
    assert g["error"] is None and g["seconds"] >= 1.0
    assert g["slowest_cells"][0]["cell"] == 1 and 0.9 <= g["slowest_cells"][0]["seconds"] < g["seconds"]
    assert "cell two of bad" in b["error"]
    assert "FAILED" in r.stdout and str(good) in r.stdout

    # A second run under another key keeps the first one's results.
    r = run("--profile", "cpu", "--threads", "2", "--out", str(out), str(good))
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(json.loads(out.read_text())) == {"ci/1 thread(s)", "cpu/2 thread(s)"}


def test_a_missing_notebook_is_named_before_anything_runs(tmp_path):
    r = run("--out", str(tmp_path / "t.json"), str(tmp_path / "nope.ipynb"))
    assert r.returncode == 2 and "nope.ipynb" in r.stderr
    assert not (tmp_path / "t.json").exists()
