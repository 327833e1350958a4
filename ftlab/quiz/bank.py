"""Question banks: one YAML file per chapter, validated by pydantic models.

A bank file looks like

    chapter: "02"
    title: Training on small hardware
    items:
      - id: ch02-bytes-per-param
        kind: numeric            # single | multi | numeric | free_text
        topics: [memory]
        difficulty: 3            # 1 (warm-up) .. 5 (senior interview)
        prompt: "Markdown, $\\LaTeX$ welcome"
        value: 16
        tolerance: 2
        unit: bytes per parameter
        explanation: why the answer is what it is
        see: chapters/02_small_hardware.ipynb#Estimating-memory

Choice items carry `choices: [{id, text, feedback}]` (text is a plain-text label; LaTeX
belongs in prompt, feedback and explanation) and `answer` (one id for `single`, a list of ids
for `multi`); free-text items carry `model_answer` and 2-5 `key_points`.
Loading collects every problem (file, item id, field, reason) before raising, so an
author fixes a bank in one pass instead of one error per run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

REPO = Path(__file__).resolve().parents[2]
BANK_DIR = REPO / "quizzes" / "bank"

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
SeeLink = Annotated[str, StringConstraints(pattern=r"^chapters/\d\d_[A-Za-z0-9_]+\.ipynb#\S+$")]


def _plain(text: str) -> str:
    if "$" in text:
        raise ValueError("choice text is a plain-text label; move the LaTeX ($...$) into the prompt or feedback")
    return text


def choice_order(item, learner: str) -> list[str]:
    """The choice ids in the order this learner sees them: shuffled per (learner, item), the same every time.

    The bank's file order means nothing (authors tend to write the key first); a re-run notebook,
    a resumed session, the daily challenge and the review queue all show one learner the same
    order, and two learners usually see different ones. Choices marked `fixed` keep their index.
    Grading works on ids, never on positions.
    """
    seed = int.from_bytes(hashlib.sha256(f"{learner}\x00{item.id}".encode()).digest()[:8], "big")
    free = [c.id for c in item.choices if not c.fixed]
    random.Random(seed).shuffle(free)
    moving = iter(free)
    return [c.id if c.fixed else next(moving) for c in item.choices]


def ordered_choices(item, learner: str) -> list:
    """The item's Choice objects in `choice_order`."""
    by_id = {c.id: c for c in item.choices}
    return [by_id[i] for i in choice_order(item, learner)]


def answer_problem(choice_ids: list, answer) -> str | None:
    """Why `answer` does not fit the choices, or None (used on valid items and on raw YAML alike)."""
    if len(set(choice_ids)) != len(choice_ids):
        return f"choice ids repeat: {choice_ids}"
    missing = [a for a in ([answer] if isinstance(answer, str) else answer or []) if a not in choice_ids]
    return f"answer {missing} is not among the choices {choice_ids}" if missing else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Choice(_Strict):
    id: Slug
    text: Annotated[Text, AfterValidator(_plain)]  # a radio/checkbox label: plain text, no LaTeX
    feedback: Text  # shown after answering: why this option is right, or the misconception behind it
    fixed: bool = False  # keeps its place in the file ("none of the above" last); every other choice is shuffled


class _Item(_Strict):
    id: Slug
    chapter: Annotated[str, StringConstraints(pattern=r"^\d\d$")]
    topics: list[Slug] = Field(min_length=1)
    difficulty: int = Field(ge=1, le=5)
    prompt: Text
    explanation: Text
    see: SeeLink

    @property
    def section(self) -> str:
        """The `see` anchor as a reader would name it: 'Estimating memory'."""
        return self.see.split("#", 1)[1].replace("-", " ")


class _ChoiceItem(_Item):
    choices: list[Choice] = Field(min_length=2)

    @model_validator(mode="after")
    def _answer_among_choices(self):
        problem = answer_problem([c.id for c in self.choices], self.answer)
        if problem:
            raise ValueError(problem)
        return self


class SingleItem(_ChoiceItem):
    kind: Literal["single"]
    answer: Slug


class MultiItem(_ChoiceItem):
    kind: Literal["multi"]
    answer: list[Slug] = Field(min_length=1)


class NumericItem(_Item):
    kind: Literal["numeric"]
    value: float = Field(allow_inf_nan=False)  # .nan could never be answered right
    tolerance: float = Field(ge=0, allow_inf_nan=False)  # absolute: |response - value| <= tolerance; .inf passes all
    unit: Text


class FreeTextItem(_Item):
    kind: Literal["free_text"]
    model_answer: Text
    key_points: list[Text] = Field(min_length=2, max_length=5)


Item = Annotated[Union[SingleItem, MultiItem, NumericItem, FreeTextItem], Field(discriminator="kind")]
KINDS = ("single", "multi", "numeric", "free_text")
_item_adapter = TypeAdapter(Item)


@dataclass(frozen=True)
class Problem:
    file: str
    item: str | None  # item id, or None for a file-level problem
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = ([self.file] + ([f"item {self.item!r}"] if self.item else [])
                 + ([f"field {self.field!r}"] if self.field else []))
        return ": ".join(where + [self.reason])


class BankError(ValueError):
    """Every problem found in one or more bank files, one line each."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the quiz bank:\n" + "\n".join(f"  {p}" for p in problems))


def _field_path(err: dict) -> str:
    # A discriminated union puts the kind first ('single', 'choices', 0, 'text'): drop it.
    loc = err["loc"][1:] if err["loc"] and err["loc"][0] in KINDS else err["loc"]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "kind"
    if not loc and err["type"] == "value_error":  # the only item-level check is the answer-vs-choices one
        return "answer"
    return ".".join(str(part) for part in loc) or "(item)"


def _reason(err: dict) -> str:
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"must be one of {', '.join(KINDS)} (got {err.get('ctx', {}).get('tag', 'nothing')!r})"
    if err["type"] == "missing":
        return "is required but missing"
    reason = err["msg"]
    if err["type"] not in ("value_error", "missing") and not isinstance(err.get("input"), (dict, list)):
        reason += f" (got {err.get('input')!r})"
    if err["type"] == "string_type" and isinstance(err.get("input"), bool):
        reason += "; YAML reads an unquoted yes/no/on/off/true/false as a boolean: put the text in quotes"
    return reason.removeprefix("Value error, ")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int):
        super().__init__(f"duplicate key {key!r} at line {line}: YAML would silently keep only the last one")
        self.key = key


class _BankLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when installed: ~10x faster
    """The safe loader, refusing a key repeated in one mapping (plain YAML keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep)  # flattens `<<` merges into node.value first
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
        return mapping


def parse_bank(path: Path) -> tuple[list, list[Problem], list[str]]:
    """Items that validated, every problem found, and every item id (valid or not) of one bank file."""
    name = path.name
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_BankLoader)
    except _DuplicateKey as e:
        return [], [Problem(name, None, str(e.key), str(e))], []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return [], [Problem(name, None, None, f"cannot read YAML: {e}")], []
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return [], [Problem(name, None, "items", "a bank is a mapping with 'chapter' and a list 'items'")], []
    # Only strings and numbers are ever turned into text here: str() of a crafted structure (an alias
    # nesting a billion strings) would build gigabytes.
    raw_chapter = data.get("chapter", "")
    chapter = str(raw_chapter) if isinstance(raw_chapter, (str, int)) and not isinstance(raw_chapter, bool) else ""
    problems = []
    if not re.fullmatch(r"\d\d", chapter) or not name.startswith(chapter + "_"):
        got = repr(chapter) if chapter or raw_chapter == "" else f"a {type(raw_chapter).__name__}"
        problems.append(Problem(name, None, "chapter", f"must be the two digits the file name starts with (got {got})"))
    items, ids = [], []
    for n, raw in enumerate(data["items"]):
        if not isinstance(raw, dict):
            problems.append(Problem(name, f"#{n + 1}", None, "an item must be a mapping"))
            continue
        raw_id = raw.get("id")
        item_id = raw_id if isinstance(raw_id, str) and raw_id else f"#{n + 1}"
        ids.append(item_id)
        raw = {"chapter": chapter, **raw}  # items inherit the file's chapter
        try:
            items.append(_item_adapter.validate_python(raw))
        except ValidationError as e:
            problems += [Problem(name, item_id, _field_path(err), _reason(err)) for err in e.errors()]
            # The answer check runs only once every field is valid; report it now too, from the raw YAML.
            choices = raw.get("choices")
            if raw.get("kind") in ("single", "multi") and isinstance(choices, list) and _strings(raw.get("answer")) \
                    and not any(err["loc"][-1:] == ("answer",) or not err["loc"][1:] for err in e.errors()):
                problem = answer_problem([c.get("id") for c in choices if isinstance(c, dict)
                                          and isinstance(c.get("id"), str)], raw["answer"])
                if problem:
                    problems.append(Problem(name, item_id, "answer", problem))
    return items, problems, ids


def _strings(answer) -> bool:
    """An answer as authors write it (an id or a list of ids): safe to compare and to print."""
    return isinstance(answer, str) or isinstance(answer, list) and all(isinstance(a, str) for a in answer)


def _load(bank_dir: Path) -> tuple[list, list[Problem], dict[str, str]]:
    """Valid items, all problems, and which file each item id came from."""
    paths = sorted(Path(bank_dir).glob("*.yaml"))
    if not paths:
        return [], [Problem(str(bank_dir), None, None, "no *.yaml bank files here")], {}
    items, problems, first_file = [], [], {}
    for path in paths:
        file_items, file_problems, ids = parse_bank(path)
        problems += file_problems
        for item_id in ids:  # raw ids: a duplicate is reported even when one copy is invalid
            if item_id in first_file:
                problems.append(Problem(path.name, item_id, "id",
                                        f"duplicate id (first defined in {first_file[item_id]})"))
            else:
                first_file[item_id] = path.name
        items += file_items
    return items, problems, first_file


def load_banks(bank_dir: Path | str = BANK_DIR, chapters: list[str] | None = None) -> list:
    """Every item of every bank in `bank_dir` (optionally only some chapters); BankError lists all problems."""
    items, problems, _ = _load(bank_dir)
    if problems:
        raise BankError(problems)
    if chapters is not None:
        present = sorted({i.chapter for i in items})
        wanted = {_chapter_key(c, present) for c in chapters}
        items = [i for i in items if i.chapter in wanted]
    return items


def _chapter_key(chapter, present: list[str]) -> str:
    """'2', 2 or '02' -> '02'; ValueError listing the chapters that have questions for anything else."""
    text = str(chapter).strip() if isinstance(chapter, (str, int)) and not isinstance(chapter, bool) else ""
    key = f"{int(text):02d}" if text.isascii() and text.isdigit() and len(text) <= 2 else None
    if key not in present:
        why = "has no questions" if key else "is not a chapter number"
        raise ValueError(f"chapter {chapter!r} {why}; chapters with questions: {', '.join(present)}")
    return key


_HEADING = re.compile(r"#{1,6}\s+(.+?)\s*#*\s*")  # one whole line


def cell_anchors(cell: dict) -> list[str]:
    """JupyterLab's anchors for one cell's Markdown headings: the heading text with spaces as '-'."""
    if cell.get("cell_type") != "markdown":
        return []
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    headings = (_HEADING.fullmatch(line) for line in source.splitlines())
    return [h.group(1).strip().replace(" ", "-") for h in headings if h]


def notebook_anchors(notebook: Path) -> set[str]:
    """Every heading anchor of a notebook (see `cell_anchors`)."""
    cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    return {anchor for cell in cells for anchor in cell_anchors(cell)}


def validate(bank_dir: Path | str = BANK_DIR, root: Path | str = REPO) -> list[Problem]:
    """All problems in all banks, including `see` links to a missing notebook or heading (for `ftlab quiz validate`)."""
    return check(bank_dir, root)[1]


def check(bank_dir: Path | str = BANK_DIR, root: Path | str = REPO) -> tuple[list, list[Problem]]:
    """The valid items and every problem, dead `see` links included, from one parse of each file."""
    items, problems, origin = _load(bank_dir)
    anchors: dict[str, set[str] | None] = {}
    for item in items:
        notebook, anchor = item.see.split("#", 1)
        if notebook not in anchors:
            path = Path(root) / notebook
            try:
                anchors[notebook] = notebook_anchors(path) if path.exists() else None
            except (OSError, ValueError) as e:
                problems.append(Problem(notebook, None, None, f"cannot read notebook: {e}"))
                anchors[notebook] = set()
        file = origin[item.id]
        if anchors[notebook] is None:
            problems.append(Problem(file, item.id, "see", f"dead link: {notebook} does not exist"))
        elif anchor not in anchors[notebook]:
            problems.append(Problem(file, item.id, "see",
                                    f"dead link: {notebook} has no heading '{anchor.replace('-', ' ')}'"))
    return items, problems
