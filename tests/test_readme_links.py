"""README.md and INSTRUCTORS.md: every repository path they name in backticks, and every link that is not a
web address, leads somewhere that exists, down to the heading a `#anchor` names."""

import re
from pathlib import Path

import pytest
from test_readme import exists, ignored_tops, named_paths

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "INSTRUCTORS.md")


def repository_paths(text: str) -> list[str]:
    """Backticked paths, less the machine's own paths (`/srv/...`, `~/...`), which name no repository file."""
    return [p for p in named_paths(text) if not p.startswith(("/", "~"))]


def local_links(text: str) -> list[str]:
    """Targets of markdown links `[text](target)` that are not web or mail addresses."""
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)}


def broken(doc: Path) -> list[str]:
    """What `doc` names that is missing: paths, linked files, and anchors without a heading."""
    text, skip = doc.read_text(encoding="utf-8"), ignored_tops()
    missing = [p for p in repository_paths(text) if p.split("/")[0] not in skip and not exists(p)]
    for link in local_links(text):
        name, _, tag = link.partition("#")
        target = (doc.parent / name) if name else doc
        if not target.exists():
            missing.append(link)
        elif tag and tag not in anchors(target):
            missing.append(f"{link} (no such heading)")
    return missing


@pytest.mark.parametrize("name", DOCS)
def test_every_path_and_link_leads_somewhere(name):
    doc = ROOT / name
    assert doc.exists(), f"{name} is missing"
    assert not broken(doc), f"{name} names what does not exist: {broken(doc)}"


def test_the_instructors_guide_is_linked_and_names_every_lab():
    # guards the filters above: the guide's lab list alone names every solution notebook
    assert "INSTRUCTORS.md" in local_links((ROOT / "README.md").read_text(encoding="utf-8"))
    named = set(repository_paths((ROOT / "INSTRUCTORS.md").read_text(encoding="utf-8")))
    labs = {f"solutions/{p.name}" for p in (ROOT / "solutions").glob("*.ipynb")}
    assert labs <= named, sorted(labs - named)


def test_a_broken_path_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Measured run times\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nSee `ftlab/tuners/lora.py`, `ftlab/tuners/lorra.py`, `/srv/nbgrader/exchange`, "
                   "[ok](other.md#measured-run-times), [gone](missing.md), [bad](other.md#nowhere), "
                   "[self](#doc) and [web](https://example.org/x).\n")
    assert broken(doc) == ["ftlab/tuners/lorra.py", "missing.md", "other.md#nowhere (no such heading)"]
