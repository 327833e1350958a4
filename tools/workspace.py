"""The learner's working copy of the course notebooks, and the JupyterLab that `make lab` starts on it.

JupyterLab autosaves outputs into whichever notebook is open, so learners run copies, never the tracked
notebooks: `my/chapters`, `my/labs`, `my/solutions` and `my/quizzes` (git-ignored) mirror the course's
layout, so a relative link such as ../labs/03_lora_lab.ipynb leads from a copy to a copy. A copy is never
overwritten. `my/.copies.json` records the hash of the original each copy was made from: when the course
changes a notebook you have worked in, `sync` names it and `fresh` brings the new version, keeping yours
as a backup. A copy still byte-identical to what was copied holds nothing of yours and is simply updated.
Each copy made is signed in Jupyter's notary, as `jupyter trust` would: in an untrusted notebook JupyterLab
asks "Run Command?" before a quiz's "Read" link may open the chapter.

    python tools/workspace.py sync                            # make missing copies, name stale ones
    python tools/workspace.py fresh chapters/03_lora.ipynb    # new copy; yours becomes a .backup-… file
    python tools/workspace.py lab --port 8888 [jupyter args]  # sync, then JupyterLab over the repository
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat.sign import NotebookNotary

ROOT = Path(__file__).resolve().parents[1]
COURSE = ("chapters/*.ipynb", "labs/*.ipynb", "solutions/*.ipynb", "quizzes/*.ipynb")
MANIFEST = ".copies.json"
FIRST = "chapters/00_setup.ipynb"  # what `make lab` opens


class WorkspaceError(ValueError):
    pass


def course_notebooks() -> list[str]:
    """The tracked notebooks a learner gets copies of, as repository-relative POSIX paths."""
    return sorted(p.relative_to(ROOT).as_posix() for pattern in COURSE for p in ROOT.glob(pattern))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def workdir(name: str) -> Path:
    """The working-copy folder: inside the repository (JupyterLab serves the repository, and the kernel finds
    chapter links beside it), and not one of the tracked notebook folders."""
    work = (ROOT / name).resolve()
    if ROOT not in work.parents:
        raise WorkspaceError(f"--work {name!r}: the working copy must be a folder inside {ROOT}")
    if work.relative_to(ROOT).parts[0] in {pattern.split("/")[0] for pattern in COURSE}:
        raise WorkspaceError(f"--work {name!r}: that is a tracked course folder; pick another name, e.g. 'my'")
    return work


def load_manifest(work: Path) -> dict[str, str]:
    path = work / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WorkspaceError(f"{path}: not valid JSON ({e}); delete it and run `make lab` again to rebuild it "
                             "(your copies are not touched)") from None
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise WorkspaceError(f"{path}: expected an object of notebook path -> hash; delete it to rebuild it")
    return manifest


def save_manifest(work: Path, manifest: dict[str, str]) -> None:
    tmp = work / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(work / MANIFEST)  # a crash leaves the old manifest or the new one, never half of one


def copy(rel: str, work: Path, manifest: dict[str, str]) -> None:
    dest = work / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / rel, dest)
    manifest[rel] = digest(ROOT / rel)


def trust(paths: list[Path]) -> None:
    """Sign these notebooks in the notary of the current Jupyter data dir (the one JupyterLab will use)."""
    with NotebookNotary() as notary:
        for path in paths:
            notary.sign(nbformat.read(path, as_version=4))


def sync(work: Path) -> tuple[list[str], list[str], list[str]]:
    """Copy each course notebook the working copy lacks; return (made, updated, stale) paths.

    stale: the course changed the original since the copy was made and the copy has the learner's changes."""
    work.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(work)
    made, updated, stale = [], [], []
    for rel in course_notebooks():
        dest, original = work / rel, digest(ROOT / rel)
        if not dest.exists():
            copy(rel, work, manifest)
            made.append(rel)
        elif rel not in manifest:  # a copy from before the record existed: take it as made from today's original
            manifest[rel] = original
        elif manifest[rel] != original:
            if digest(dest) == manifest[rel]:
                copy(rel, work, manifest)
                updated.append(rel)
            else:
                stale.append(rel)
    save_manifest(work, manifest)
    trust([work / rel for rel in made + updated])
    return made, updated, stale


def fresh(work: Path, notebook: str) -> tuple[Path, Path | None]:
    """Replace the working copy of `notebook` by the course's current version; return the new copy and the
    backup of the old one (None when there was no copy)."""
    rel = Path(notebook).as_posix()
    prefix = work.relative_to(ROOT).as_posix() + "/"
    rel = rel[len(prefix):] if rel.startswith(prefix) else rel
    if rel not in course_notebooks():
        raise WorkspaceError(f"NB={notebook!r}: not a course notebook; give its path in the repository, "
                             f"e.g. NB={FIRST}")
    work.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(work)
    dest, backup = work / rel, None
    if dest.exists():
        backup = dest.with_name(f"{dest.stem}.backup-{datetime.now():%Y%m%d-%H%M%S}{dest.suffix}")
        dest.rename(backup)
    copy(rel, work, manifest)
    save_manifest(work, manifest)
    trust([dest])
    return dest, backup


def lab_command(work: Path, port: int, extra: list[str]) -> list[str]:
    """JupyterLab serving the whole repository, its printed URL (and `/`) opening the copy of chapter 00.

    JupyterLab prints its own URLs with the token it generated; default_url makes them point at chapter 00."""
    first = (work / FIRST).relative_to(ROOT).as_posix()
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--port={port}", f"--ServerApp.root_dir={ROOT}",
           f"--LabApp.default_url=/lab/tree/{first}"]
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"):
        cmd.append("--no-browser")  # nothing to open a browser on: the learner pastes the printed URL
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # JupyterLab refuses to run as root otherwise (containers)
    return cmd + extra


def report(work: Path, made: list[str], updated: list[str], stale: list[str]) -> None:
    where = work.relative_to(ROOT).as_posix()
    if made:
        print(f"Copied {len(made)} course notebook(s) into {where}/: run and edit those; the originals stay clean.")
    if updated:
        print(f"Updated {len(updated)} copy(ies) you had not changed: {', '.join(updated)}")
    if stale:
        print(f"The course changed {len(stale)} notebook(s) since you copied them; your copies are unchanged:")
        for rel in stale:
            print(f"  {rel}")
        print(f"  For the new version: make fresh NB={stale[0]}  (your copy is kept as a .backup-<date> file)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--work", default="my", help="working-copy folder inside the repository (default: my)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="make missing copies, name stale ones")
    p_fresh = sub.add_parser("fresh", help="a new copy of one notebook, the old one kept as a backup")
    p_fresh.add_argument("notebook", nargs="?", default="", help="e.g. chapters/03_lora.ipynb")
    p_lab = sub.add_parser("lab", help="sync, then start JupyterLab on the copy of chapter 00", allow_abbrev=False)
    p_lab.add_argument("--port", type=int, default=8888)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        work = workdir(args.work)
        if args.command == "fresh":
            if not args.notebook:
                raise WorkspaceError(f"name the notebook: make fresh NB={FIRST}")
            dest, backup = fresh(work, args.notebook)
            kept = f"; your previous copy is now {backup.relative_to(ROOT)}" if backup else ""
            print(f"New copy of the course's version: {dest.relative_to(ROOT)}{kept}")
            return 0
        report(work, *sync(work))
    except WorkspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "lab":
        cmd = lab_command(work, args.port, extra)
        first = (work / FIRST).relative_to(ROOT).as_posix()
        print(f"Starting JupyterLab over the repository on port {args.port}. Open the "
              f"http://127.0.0.1:{args.port}/lab/tree/{first}?token=... URL it prints below.", flush=True)
        os.execv(sys.executable, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
