"""Progress store: one SQLite file per learner under ftlab.runtime.home()/progress/.

The answer log is the only state (cards and abilities are recomputed from it). Each answer is
committed in its own transaction before the caller shows feedback, with synchronous=FULL, so a
killed kernel loses nothing already answered. A file that is not a progress store, is damaged,
or carries a newer schema version raises StoreError and is never written to.

A Store may be used from any thread: JupyterLab 4.6 delivers widget clicks to an ipykernel
subshell thread, not the thread that ran the cell and opened the store. The connection is
shared across threads (`check_same_thread=False`) and every use of it holds one lock, so two
threads never interleave statements inside one transaction.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
EXPORT_FORMAT = "ftlab-progress"

_SCHEMA = """
CREATE TABLE answers (
    id          INTEGER PRIMARY KEY,
    uid         TEXT NOT NULL UNIQUE,      -- stable across export/import, so merging never duplicates
    item_id     TEXT NOT NULL,
    chapter     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    topics      TEXT NOT NULL,             -- JSON list: kept so exports make sense without the bank
    difficulty  INTEGER NOT NULL,
    response    TEXT NOT NULL,             -- JSON: what the learner entered
    score       REAL NOT NULL,             -- 0..1
    correct     INTEGER NOT NULL,
    rating      INTEGER NOT NULL,          -- FSRS rating 1..4 (self-rating replaces the provisional one)
    answered_at TEXT NOT NULL,             -- ISO 8601, UTC
    mode        TEXT NOT NULL              -- quiz | practice | daily | review | terminal ...
);
CREATE INDEX answers_item ON answers(item_id);
"""
COLUMNS = ("uid", "item_id", "chapter", "kind", "topics", "difficulty", "response", "score", "correct",
           "rating", "answered_at", "mode")


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Answer:
    uid: str
    item_id: str
    chapter: str
    kind: str
    topics: tuple[str, ...]
    difficulty: int
    response: object
    score: float
    correct: bool
    rating: int
    answered_at: datetime
    mode: str

    def to_json(self) -> dict:
        return {**asdict(self), "topics": list(self.topics), "answered_at": self.answered_at.isoformat()}

    @classmethod
    def from_json(cls, d: dict) -> "Answer":
        missing = [c for c in COLUMNS if c not in d]
        if missing:
            raise ValueError(f"answer is missing {missing}")
        when = datetime.fromisoformat(d["answered_at"])
        if when.tzinfo is None:
            raise ValueError(f"answered_at {d['answered_at']!r} has no time zone")
        if not isinstance(d["topics"], list) or not 0 <= float(d["score"]) <= 1 or int(d["rating"]) not in (1, 2, 3, 4):
            raise ValueError("topics must be a list, score in 0..1, rating in 1..4")
        return cls(str(d["uid"]), str(d["item_id"]), str(d["chapter"]), str(d["kind"]), tuple(d["topics"]),
                   int(d["difficulty"]), d["response"], float(d["score"]), bool(d["correct"]), int(d["rating"]),
                   when.astimezone(timezone.utc), str(d["mode"]))


def default_learner() -> str:
    return os.environ.get("FTLAB_LEARNER") or getpass.getuser() or "learner"


def store_path(learner: str) -> Path:
    from ftlab.runtime import home

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", learner):
        raise ValueError(f"learner name {learner!r}: use letters, digits, '_', '.', '-' (it becomes a file name)")
    return home() / "progress" / f"{learner}.sqlite"


class Store:
    """A learner's answer log.  Store("ada") opens (or creates) home()/progress/ada.sqlite."""

    def __init__(self, learner: str | None = None, path: Path | str | None = None):
        self.learner = learner or default_learner()
        self.path = Path(path) if path else store_path(self.learner)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # guards self.conn: sqlite3 serialises calls, not transactions
        self.conn = self._open()

    def _open(self) -> sqlite3.Connection:
        existed = self.path.exists() and self.path.stat().st_size > 0
        conn = sqlite3.connect(self.path, check_same_thread=False)  # any thread; self._lock serialises use
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if existed and conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StoreError(f"{self.path} is damaged (SQLite quick_check failed)")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{self.path} is not a readable progress store ({e}). It was left untouched; "
                             f"move it aside to start fresh, or restore a JSON export with `ftlab import`.") from e
        problem = None
        if version > SCHEMA_VERSION:
            problem = (f"{self.path} has schema version {version}, newer than this ftlab understands "
                       f"({SCHEMA_VERSION}); upgrade ftlab. The file was left untouched.")
        elif existed and (version != SCHEMA_VERSION or "answers" not in tables):
            problem = f"{self.path} is an SQLite file but not an ftlab progress store; it was left untouched."
        if problem:
            conn.close()
            raise StoreError(problem)
        conn.execute("PRAGMA synchronous=FULL")
        if not existed:  # schema and version in one transaction: a crash here leaves an empty file, not half a schema
            conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        return conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _insert(self, a: Answer) -> bool:
        row = a.to_json()
        row.update(topics=json.dumps(row["topics"]), response=json.dumps(row["response"]), correct=int(a.correct))
        cur = self.conn.execute(f"INSERT OR IGNORE INTO answers ({', '.join(COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(COLUMNS))})", [row[c] for c in COLUMNS])
        return cur.rowcount == 1

    def record(self, item, response, score: float, correct: bool, rating: int, mode: str,
               when: datetime | None = None) -> Answer:
        """Write one answer and commit it before returning (the caller shows feedback afterwards)."""
        answer = Answer(uuid.uuid4().hex, item.id, item.chapter, item.kind, tuple(item.topics), item.difficulty,
                        response, float(score), bool(correct), int(rating),
                        (when or datetime.now(timezone.utc)).astimezone(timezone.utc), mode)
        with self._lock, self.conn:
            self._insert(answer)
        return answer

    def rate(self, uid: str, rating: int) -> None:
        """Replace an answer's provisional FSRS rating with the learner's self-rating."""
        with self._lock, self.conn:
            if self.conn.execute("UPDATE answers SET rating=? WHERE uid=?", (int(rating), uid)).rowcount != 1:
                raise KeyError(f"no answer {uid!r} in {self.path}")

    def answers(self) -> list[Answer]:
        with self._lock:
            rows = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM answers ORDER BY answered_at, id").fetchall()
        return [Answer.from_json({**dict(zip(COLUMNS, r)), "topics": json.loads(r[4]), "response": json.loads(r[6])})
                for r in rows]

    def export(self, path: Path | str) -> Path:
        """Write every answer as JSON (what an instructor collects for `ftlab report`)."""
        data = {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "learner": self.learner,
                "exported_at": datetime.now(timezone.utc).isoformat(),
                "answers": [a.to_json() for a in self.answers()]}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)  # atomic: an interrupted export never leaves half a file
        return path

    def import_(self, path: Path | str) -> int:
        """Merge an export into this store (answers already present are skipped); returns how many were added.

        (`import` is a Python keyword, hence the underscore.) A malformed file adds nothing.
        """
        data = read_export(path)
        with self._lock, self.conn:
            return sum(self._insert(a) for a in data["answers"])


def read_export(path: Path | str) -> dict:
    """A validated export: its learner and a list of Answer. ValueError names the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON export ({e})") from e
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not an ftlab progress export (expected \"format\": \"{EXPORT_FORMAT}\")")
    if not isinstance(data.get("schema_version"), int) or data["schema_version"] > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')!r} is not one this ftlab reads "
                         f"(<= {SCHEMA_VERSION})")
    if not isinstance(data.get("learner"), str) or not isinstance(data.get("answers"), list):
        raise ValueError(f"{path}: needs a string \"learner\" and a list \"answers\"")
    answers = []
    for n, raw in enumerate(data["answers"]):
        try:
            answers.append(Answer.from_json(raw))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{path}: answers[{n}]: {e}") from e
    return {"learner": data["learner"], "answers": answers}
