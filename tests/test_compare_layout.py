"""Issue 26's layout: the method modules hold the algorithms and nothing that runs a library beside them.

Every harness that builds a peft, TRL, bitsandbytes or Trainer twin lives in ftlab/compare/. A method module
that imported one (even inside a function), or kept a copy of one under its old name, would put the proof
back inside the thing it proves; and a reference to `compare.<name>` that no longer exists is a chapter or
test that breaks at run time. These checks read the source, so they hold without running any model.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from ftlab import compare

ROOT = Path(__file__).resolve().parents[1]
FTLAB = ROOT / "ftlab"
METHOD_MODULES = sorted([*FTLAB.glob("tuners/*.py"), *FTLAB.glob("quant/*.py"), *FTLAB.glob("rlhf/*.py"),
                         *(FTLAB / f"{name}.py" for name in ("sft", "transfer", "train", "losses", "data", "memory",
                                                             "evaluation", "serving"))])
# Libraries that only a harness needs: our methods follow them, they do not call them.
HARNESS_LIBRARIES = ("trl", "peft", "bitsandbytes", "ftlab.compare")
HARNESS_FILES = ("peft", "trl", "bnb", "hf")
SCANNED = ("ftlab", "tests", "benchmarks", "chapters", "solutions", "labs", "tools")


def _module_of(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ImportFrom reads from (relative imports resolved against `path`'s package)."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-node.level])
    return ".".join(package + ([node.module] if node.module else []))


def harness_imports(source: str, path: Path = FTLAB / "module.py") -> list[str]:
    """Every import in `source` (top level or inside a function) of a harness library, as a dotted name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _module_of(node, path)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        else:
            continue
        found += [n for n in names if any(n == lib or n.startswith(lib + ".") for lib in HARNESS_LIBRARIES)]
    return sorted(set(found))


def defined_names(source: str) -> set[str]:
    """Names of the functions and classes a module defines at its top level."""
    return {node.name for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


HARNESS_NAMES = set().union(*(defined_names((FTLAB / "compare" / f"{name}.py").read_text(encoding="utf-8"))
                              for name in HARNESS_FILES))


def test_the_checker_sees_every_kind_of_import():
    source = ("import torch\nfrom ftlab import compare\nfrom ftlab.compare.peft import lora_pair\n"
              "def f():\n    import trl.experimental.ppo\n    from bitsandbytes import functional\n"
              "    return importlib.import_module('peft')\n")
    assert harness_imports(source) == ["bitsandbytes", "bitsandbytes.functional", "ftlab.compare",
                                       "ftlab.compare.peft", "ftlab.compare.peft.lora_pair", "peft",
                                       "trl.experimental.ppo"]
    assert harness_imports("from ..compare import trl\n", FTLAB / "rlhf" / "ppo.py") == [
        "ftlab.compare", "ftlab.compare.trl"]
    assert harness_imports("from ftlab import losses, runtime\nimport transformers\n") == []


@pytest.mark.parametrize("path", METHOD_MODULES, ids=lambda p: str(p.relative_to(FTLAB)))
def test_method_module_imports_no_harness(path):
    assert path.exists(), f"{path} is listed as a method module but does not exist"
    found = harness_imports(path.read_text(encoding="utf-8"), path)
    assert not found, f"{path.relative_to(ROOT)} imports {found}: parity code belongs in ftlab/compare/"


@pytest.mark.parametrize("path", METHOD_MODULES, ids=lambda p: str(p.relative_to(FTLAB)))
def test_method_module_keeps_no_copy_of_a_harness(path):
    source = path.read_text(encoding="utf-8")
    clash = sorted(defined_names(source) & HARNESS_NAMES)
    assert not clash, f"{path.relative_to(ROOT)} defines {clash}, which ftlab/compare/ already defines"
    old_style = sorted(n for n in defined_names(source) if re.match(r"(trl|peft|bnb)_|.*_(peft|bitsandbytes)$", n))
    assert not old_style, f"{path.relative_to(ROOT)} defines {old_style}: a library twin belongs in ftlab/compare/"


def _texts():
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".ipynb", ".md") and ".ipynb_checkpoints" not in path.parts:
                yield path, path.read_text(encoding="utf-8")


PRIVATE = re.compile(r"\bcompare\.(_\w*)")
REFERENCE = re.compile(r"(?<!\w)compare\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?")


def private_uses(text: str) -> list[str]:
    return PRIVATE.findall(text)


def broken_references(text: str) -> list[str]:
    """`compare.<name>[.<name>]` references in `text` that ftlab.compare does not have."""
    broken = []
    for first, second in REFERENCE.findall(text):
        target = getattr(compare, first, None)
        if target is None or (second and inspect.ismodule(target) and not hasattr(target, second)):
            broken.append(f"compare.{first}" + (f".{second}" if second else ""))
    return broken


def test_the_reference_checks_can_fail():
    c = "compare."  # spelled apart so that the scans below do not find these examples in this file
    assert private_uses(f"pairs = {c}_lora_pairs(a, b)") == ["_lora_pairs"]
    assert broken_references(f"{c}lora_pair(base), {c}trl.trl_trainer(cfg), ftlab/{c}py") == [
        f"{c}lora_pair", f"{c}trl.trl_trainer", f"{c}py"]
    assert broken_references(f"{c}peft.lora_pair(base); {c}time_pair(f, g); ftlab.{c}bnb") == []


def test_nothing_reaches_into_compare_privately():
    found = {str(path.relative_to(ROOT)): private_uses(text) for path, text in _texts() if private_uses(text)}
    assert not found, f"private names of ftlab.compare used outside it: {found}"


def test_every_compare_reference_exists():
    importlib.import_module("ftlab.compare.trl")  # the submodules hold the names; load them all once
    found = {str(path.relative_to(ROOT)): broken_references(text) for path, text in _texts()
             if broken_references(text)}
    assert not found, f"references to names ftlab.compare does not have (old layout?): {found}"
