"""benchmarks/gpu_check.py cannot rot while no GPU is around: its dry run executes every step at toy sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_executes_every_step():
    env = dict(os.environ, FTLAB_DEVICE="cpu", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = Path(re.search(r"wrote (\S+gpu_check-gpu\.json)", done.stdout)[1])
    assert path.parent != ROOT / "benchmarks" / "results", "a dry run must not overwrite the GPU results"
    report = json.loads(path.read_text())
    gpu_check = load_gpu_check()
    expected = {"nf4"} | {f"bench_{b}" for b in gpu_check.BENCHMARKS} | {f"chapter_{c}" for c in gpu_check.CHAPTERS}
    assert set(report["steps"]) == expected
    assert all(step["status"] == "ok" for step in report["steps"].values()), report["steps"]
    for b in gpu_check.BENCHMARKS:
        assert (path.parent / f"{b}-gpu.json").exists()
    nf4 = json.loads((path.parent / "nf4_triton-gpu.json").read_text())
    # on the CPU bitsandbytes' "device" quantizer is its CPU one, whose rule we follow: no byte may differ
    assert nf4["triton_dequantize"]["ours_s"] and nf4["bytes_differing_from_bnb_device_quantizer"] == 0


def test_parity_cells_reach_the_last_check_and_refuse_a_chapter_without_one(tmp_path):
    gpu_check = load_gpu_check()
    cells = [{"cell_type": "code", "source": ["x = 1\n"]},
             {"cell_type": "code", "source": ["assert torch.equal(a, b)"]},
             {"cell_type": "markdown", "source": ["## more"]}, {"cell_type": "code", "source": ["plot()"]}]
    nb = tmp_path / "02_x.ipynb"
    nb.write_text(json.dumps({"cells": cells}))
    assert gpu_check.parity_cells(nb) == 2
    nb.write_text(json.dumps({"cells": [cells[0], cells[3]]}))
    with pytest.raises(ValueError, match="no parity cell"):
        gpu_check.parity_cells(nb)
