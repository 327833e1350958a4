"""pyproject.toml and environment.yml must pin the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pinned(reqs):
    pins = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", req.strip())
        assert m, f"not an exact pin: {req!r}"
        pins[m[1].lower()] = m[2]
    return pins


def pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return _pinned(reqs)


def conda_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return _pinned(r for r in pip if not r.startswith("-e"))


def test_every_pin_matches():
    py, conda = pyproject_pins(), conda_pins()
    assert py == conda, {k: (py.get(k), conda.get(k)) for k in set(py) | set(conda) if py.get(k) != conda.get(k)}


def test_the_stack_of_the_design_is_pinned():
    py = pyproject_pins()
    for name, version in {"torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2",
                          "bitsandbytes": "0.50.2", "trl": "1.12.0"}.items():
        assert py[name] == version


def test_unpinned_requirement_is_caught():
    try:
        _pinned(["torch>=2"])
    except AssertionError as e:
        assert "torch>=2" in str(e)
    else:
        raise AssertionError("a range was accepted as a pin")
