"""Every file or folder README.md names in backticks exists, so the README cannot point at a moved file."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = (".py", ".ipynb", ".md", ".toml", ".yml", ".yaml", ".json", ".jsonl")


def named_paths(text: str) -> list[str]:
    """Backticked strings that look like one repository path: no spaces, no URL, no <placeholder>."""
    spans = re.findall(r"`([^`\s]+)`", text)
    return [s for s in spans if ("/" in s or s.endswith(EXTENSIONS))
            and not re.search(r"://|[<>()=~]", s)]


def ignored_tops() -> set[str]:
    """Top-level folders that .gitignore keeps out of a clone (made by `make`, e.g. .venv/)."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return {line.strip("/") for line in lines if line.endswith("/") and "*" not in line}


def exists(name: str) -> bool:
    # `NN` stands for a chapter number; module names in the layout list are relative to ftlab/
    pattern = name.replace("NN", "[0-9][0-9]").rstrip("/")
    return any(any(base.glob(pattern)) for base in (ROOT, ROOT / "ftlab"))


def test_readme_names_paths():
    # guards the filter below: the chapter table alone names eleven notebooks
    assert len([p for p in named_paths((ROOT / "README.md").read_text()) if p.startswith("chapters/")]) >= 11


def test_every_path_in_the_readme_exists():
    skip = ignored_tops()
    names = named_paths((ROOT / "README.md").read_text(encoding="utf-8"))
    missing = [n for n in names if n.split("/")[0] not in skip and not exists(n)]
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_a_stale_path_is_caught():
    names = named_paths("See `ftlab/tuners/lora.py`, `labs/NN_*_lab.ipynb` and `ftlab/tuners/lorra.py`.")
    assert [n for n in names if not exists(n)] == ["ftlab/tuners/lorra.py"]
