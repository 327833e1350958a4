"""Progress store: one SQLite file per learner under ftlab.runtime.home()/progress/.

The answer log is the only state (cards and abilities are recomputed from it). Each answer is
committed in its own transaction before the caller shows feedback, with synchronous=FULL, so a
killed kernel loses nothing already answered. A file that is not a progress store (another
SQLite file, an `answers` table with other columns, a newer schema version), or one that SQLite
itself finds malformed, raises StoreError and is never written to. SQLite keeps no checksums of
the data in its pages, so a flipped byte inside a row goes unnoticed unless it makes that row
invalid: every row is validated when read, and an invalid row is skipped with a
DamagedRowsWarning that names the file and the row id (`ftlab progress check` lists them,
`ftlab progress drop` removes one).

A Store opened for writing (the default) checks at once that it can write, so a read-only file
or folder is reported before the first question rather than at the first answer; a store that
another process is writing to reports "busy".

Lab checks (schema version 2): every result card a lab shows is one row of `lab_checks` (the lab, the
check, pass | fail | todo | error, and when), recorded by ftlab.grading; attempts are counted from the rows.
A version-1 store opens as before and gains the table when next opened for writing; exports carry the rows.

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
import reprlib
import sqlite3
import threading
import uuid
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .bank import KINDS

SCHEMA_VERSION = 2  # 2: lab_checks
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
# Version 2. IF NOT EXISTS: the same statement creates it in a new store and adds it to a version-1 one.
_LAB_SCHEMA = """
CREATE TABLE IF NOT EXISTS lab_checks (
    id          INTEGER PRIMARY KEY,
    uid         TEXT NOT NULL UNIQUE,
    lab         TEXT NOT NULL,             -- the notebook, e.g. 03_lora_lab ("unknown" outside a Jupyter server)
    check_name  TEXT NOT NULL,             -- the graded function, e.g. lora_forward
    status      TEXT NOT NULL,             -- pass | fail | todo | error
    checked_at  TEXT NOT NULL              -- ISO 8601, UTC
);
"""
# Added within schema version 1: a store without it still opens (and gets it when next opened for writing).
# The random store id travels in exports, so a cohort report tells apart two learners who share a name.
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
COLUMNS = ("uid", "item_id", "chapter", "kind", "topics", "difficulty", "response", "score", "correct",
           "rating", "answered_at", "mode")
LAB_COLUMNS = ("uid", "lab", "check", "status", "checked_at")  # "check" is check_name in the table
STATUSES = ("pass", "fail", "todo", "error")
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)  # no answer predates the course; later code does date arithmetic
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
_LEARNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LAB_TABLE_COLUMNS = ("uid", "lab", "check_name", "status", "checked_at")
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxlevel = 60, 60, 4, 2


class StoreError(RuntimeError):
    pass


class DamagedRowsWarning(UserWarning):
    """Rows of a store that fail validation were skipped; the message names the file and the row ids."""


def _bad(field: str, want: str, value) -> ValueError:
    kind = "" if value is None else f", type {type(value).__name__}"
    return ValueError(f"field {field!r}: must be {want} (got {_short.repr(value)}{kind})")


def _text(d: dict, field: str, pattern: re.Pattern | None = None, choices: tuple = ()) -> str:
    value = d[field]
    if not isinstance(value, str) or not value or len(value) > 200:
        raise _bad(field, "a non-empty string", value)
    if pattern and not pattern.fullmatch(value) or choices and value not in choices:
        raise _bad(field, f"one of {', '.join(choices)}" if choices else f"like {pattern.pattern!r}", value)
    return value


def _whole(d: dict, field: str, low: int, high: int) -> int:
    value = d[field]
    if type(value) is not int or not low <= value <= high:  # bool is an int subclass; 3.7 is no rating
        raise _bad(field, f"a whole number {low}..{high}", value)
    return value


def _when(d: dict, field: str = "answered_at") -> datetime:
    value = d[field]
    if not isinstance(value, str):
        raise _bad(field, "an ISO 8601 time with a time zone", value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(field, "an ISO 8601 time with a time zone", value) from None
    if when.tzinfo is None:
        raise _bad(field, "an ISO 8601 time with a time zone, e.g. +00:00", value)
    in_range = f"a time between {EARLIEST:%Y-%m-%d} and tomorrow"
    try:
        utc = when.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last datetime in UTC
        raise _bad(field, in_range, value) from None
    if not EARLIEST <= utc <= datetime.now(timezone.utc) + timedelta(days=1):
        raise _bad(field, in_range, value)
    return utc


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
    def from_json(cls, d) -> "Answer":
        """Validate exactly, never coerce ("false" is not false, 3.7 is not a rating): ValueError names the field.

        Whatever passes is safe for the ability model, the scheduler and the report (finite numbers in
        range, slug topics, dates they can do arithmetic on).
        """
        if not isinstance(d, dict):
            raise ValueError(f"must be an answer object {{\"uid\": ..., ...}} (got {_short.repr(d)})")
        missing = [c for c in COLUMNS if c not in d]
        if missing:
            raise ValueError(f"answer is missing {missing}")
        topics = d["topics"]
        if not isinstance(topics, list) or not all(isinstance(t, str) and _SLUG.fullmatch(t) for t in topics):
            raise _bad("topics", "a list of topic tags like \"lora-rank\"", topics)
        score = d["score"]
        if type(score) not in (int, float) or not 0 <= score <= 1:  # also refuses NaN and inf; 10**400 compares fine
            raise _bad("score", "a number 0..1", score)
        if type(d["correct"]) is not bool:
            raise _bad("correct", "true or false", d["correct"])
        return cls(_text(d, "uid"), _text(d, "item_id"), _text(d, "chapter", re.compile(r"\d\d")),
                   _text(d, "kind", choices=KINDS), tuple(topics), _whole(d, "difficulty", 1, 5), d["response"],
                   float(score), d["correct"], _whole(d, "rating", 1, 4), _when(d), _text(d, "mode"))


@dataclass(frozen=True)
class LabCheck:
    """One result card of a lab check: which lab and check, its status, and when."""

    uid: str
    lab: str
    check: str
    status: str
    checked_at: datetime

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict:
        return {**asdict(self), "checked_at": self.checked_at.isoformat()}

    @classmethod
    def from_json(cls, d) -> "LabCheck":
        """Validate exactly, as Answer.from_json does: ValueError names the field."""
        if not isinstance(d, dict):
            raise ValueError(f"must be a lab check object {{\"uid\": ..., ...}} (got {_short.repr(d)})")
        missing = [c for c in LAB_COLUMNS if c not in d]
        if missing:
            raise ValueError(f"lab check is missing {missing}")
        return cls(_text(d, "uid"), _text(d, "lab"), _text(d, "check"), _text(d, "status", choices=STATUSES),
                   _when(d, "checked_at"))


@dataclass(frozen=True)
class BadRow:
    """A row of the store that does not validate: its id, why, and its raw values (to show before dropping it)."""

    id: int
    reason: str
    values: dict


def default_learner() -> str:
    return os.environ.get("FTLAB_LEARNER") or getpass.getuser() or "learner"


def check_learner(learner: str) -> str:
    """The name unchanged, or ValueError: it becomes a file name, so it must be a short plain one."""
    if not isinstance(learner, str) or not _LEARNER.fullmatch(learner):
        raise ValueError(f"learner name {learner!r}: use 1-64 letters, digits, '_', '.', '-', starting with a letter "
                         f"or digit (it becomes a file name)")
    return learner


def store_path(learner: str) -> Path:
    from ftlab.runtime import home

    check_learner(learner)
    return home() / "progress" / f"{learner}.sqlite"


def _made_folder(learner: str, path: Path | None) -> Path:
    """`path` (default home()/progress/LEARNER.sqlite) with its folder made; StoreError if that cannot be."""
    try:
        path = path or store_path(learner)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    except (FileExistsError, NotADirectoryError) as e:
        home = os.environ.get("FTLAB_HOME")
        where = f"FTLAB_HOME={home}" if home else "the ftlab cache folder"
        raise StoreError(f"{where}: a file is in the way of a folder ({e.filename}); FTLAB_HOME must name a "
                         f"folder where ftlab keeps progress and caches") from e
    except OSError as e:
        raise StoreError(f"cannot create the progress folder: {e}") from e


def _sqlite_problem(path: Path, e: sqlite3.Error) -> StoreError:
    """What an SQLite error on this store means for the learner."""
    text = str(e)
    if "locked" in text or "busy" in text:
        return StoreError(f"busy: another ftlab process is writing to {path}; try again")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path} is read-only (the file or its folder): answers cannot be saved there; make both "
                          f"writable, or point FTLAB_HOME at a writable folder")
    if "full" in text or "disk I/O" in text:
        return StoreError(f"could not write to {path}: {text} (is the disk full?); answers saved before this are kept")
    return StoreError(f"{path}: {text}")


class Store:
    """A learner's answer log.  Store("ada") opens (or creates) home()/progress/ada.sqlite.

    `writable=False` (export, check) skips the up-front write check, so a read-only store can still be read.
    """

    def __init__(self, learner: str | None = None, path: Path | str | None = None, writable: bool = True):
        self.learner = learner or default_learner()
        self.path = _made_folder(self.learner, Path(path) if path else None)
        self._lock = threading.RLock()  # guards self.conn: sqlite3 serialises calls, not transactions
        self.conn = self._open(writable)
        self.store_id = self._store_id()

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a progress store file; move it aside")
        if not self.path.exists() and not os.access(self.path.parent, os.W_OK):
            raise StoreError(f"cannot create {self.path}: its folder is read-only")
        try:
            return sqlite3.connect(self.path, check_same_thread=False)  # any thread; self._lock serialises use
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path}: {e}") from e

    def _open(self, writable: bool) -> sqlite3.Connection:
        existed = self.path.exists() and self.path.stat().st_size > 0
        conn = self._connect()
        try:
            self._check(conn, existed)
            conn.execute("PRAGMA synchronous=FULL")
            if not existed:  # schema, store id and version in one transaction: a crash leaves an empty file
                conn.executescript(f"BEGIN; {_SCHEMA} {_LAB_SCHEMA} {_META} INSERT INTO meta VALUES ('store_id', "
                                   f"'{uuid.uuid4().hex}'); PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            elif writable:
                # Rewriting the version in a rolled-back transaction needs the lock and a journal: it fails now,
                # before the first question, on a read-only file or folder, and says "busy" while another writes.
                conn.executescript(f"BEGIN IMMEDIATE; PRAGMA user_version={SCHEMA_VERSION}; ROLLBACK;")
                self._upgrade(conn)
        except sqlite3.DatabaseError as e:
            conn.close()
            if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "readonly" in str(e)):
                raise _sqlite_problem(self.path, e) from e  # busy or read-only: the file itself is fine
            raise StoreError(f"{self.path} is not a readable progress store ({e}). It was left untouched; "
                             f"move it aside to start fresh, or restore a JSON export with `ftlab import`.") from e
        except StoreError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """Bring an older store to this version in one transaction: a store id (added within version 1), then
        the lab_checks table (version 2). Answers are never touched."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if "meta" not in tables:
            conn.executescript(f"BEGIN; {_META} INSERT INTO meta VALUES ('store_id', '{uuid.uuid4().hex}'); COMMIT;")
        if "lab_checks" not in tables or version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN; {_LAB_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    def _check(self, conn: sqlite3.Connection, existed: bool) -> None:
        """StoreError unless the file is empty or a progress store of a version this ftlab reads."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if existed and conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise StoreError(f"{self.path} is damaged (SQLite quick_check failed); it was left untouched")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this ftlab understands "
                             f"({SCHEMA_VERSION}); upgrade ftlab. The file was left untouched.")
        if existed and (version < 1 or "answers" not in tables):
            raise StoreError(f"{self.path} is an SQLite file but not an ftlab progress store; it was left untouched.")
        if existed:
            for table, columns in (("answers", COLUMNS), ("lab_checks", _LAB_TABLE_COLUMNS)):
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                missing = [c for c in ("id", *columns) if c not in have]
                if missing and (have or table == "answers"):  # lab_checks may be absent from a version-1 store
                    raise StoreError(f"{self.path} has an '{table}' table without the columns {missing}: not an "
                                     f"ftlab progress store; it was left untouched.")

    def _store_id(self) -> str | None:
        with self._lock:
            try:
                row = self.conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()
            except sqlite3.OperationalError:  # a store written before ids, opened read-only
                return None
        return row[0] if row else None

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

    def _write(self, fn, *args):
        """fn(*args) in one transaction under the lock; SQLite errors become a StoreError that says what to do."""
        try:
            with self._lock, self.conn:
                return fn(*args)
        except sqlite3.Error as e:
            raise _sqlite_problem(self.path, e) from e

    def record(self, item, response, score: float, correct: bool, rating: int, mode: str,
               when: datetime | None = None) -> Answer:
        """Write one answer and commit it before returning (the caller shows feedback afterwards)."""
        answer = Answer(uuid.uuid4().hex, item.id, item.chapter, item.kind, tuple(item.topics), item.difficulty,
                        response, float(score), bool(correct), int(rating),
                        (when or datetime.now(timezone.utc)).astimezone(timezone.utc), mode)
        self._write(self._insert, answer)
        return answer

    def record_check(self, lab: str, check: str, status: str, when: datetime | None = None) -> LabCheck:
        """Write one lab check's result (ftlab.grading calls this for every card it shows) and commit it."""
        result = LabCheck.from_json({"uid": uuid.uuid4().hex, "lab": lab, "check": check, "status": status,
                                     "checked_at": (when or datetime.now(timezone.utc)).isoformat()})
        self._write(self._insert_check, result)
        return result

    def _insert_check(self, c: LabCheck) -> bool:
        cur = self.conn.execute(f"INSERT OR IGNORE INTO lab_checks ({', '.join(_LAB_TABLE_COLUMNS)}) VALUES "
                                f"(?, ?, ?, ?, ?)", (c.uid, c.lab, c.check, c.status, c.checked_at.isoformat()))
        return cur.rowcount == 1

    def lab_checks(self) -> list[LabCheck]:
        """Every valid lab check result, oldest first; rows that do not validate are skipped with a
        DamagedRowsWarning. A version-1 store opened read-only has none."""
        good, bad = [], []
        for row_id, *values in self._rows("lab_checks", _LAB_TABLE_COLUMNS, "checked_at"):
            try:
                good.append(LabCheck.from_json(dict(zip(LAB_COLUMNS, values))))
            except ValueError as e:
                bad.append(f"lab_checks row {row_id}: {e}")
        if bad:
            warnings.warn(DamagedRowsWarning(f"{self.path}: skipped {len(bad)} damaged lab check row(s) ({bad[0]})"),
                          stacklevel=2)
        return good

    def _rows(self, table: str, columns, when: str) -> list[tuple]:
        """(id, *columns) of every row of `table`, oldest first; [] when the table does not exist (a
        version-1 store opened read-only has no lab_checks)."""
        try:
            with self._lock:
                if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone():
                    return []
                return self.conn.execute(f"SELECT id, {', '.join(columns)} FROM {table} ORDER BY {when}, id").fetchall()
        except sqlite3.Error as e:
            raise _sqlite_problem(self.path, e) from e

    def rate(self, uid: str, rating: int) -> None:
        """Replace an answer's provisional FSRS rating with the learner's self-rating."""
        cur = self._write(self.conn.execute, "UPDATE answers SET rating=? WHERE uid=?", (int(rating), uid))
        if cur.rowcount != 1:
            raise KeyError(f"no answer {uid!r} in {self.path}")

    def read(self) -> tuple[list[Answer], list[BadRow]]:
        """Every valid answer (oldest first), and every row that does not validate."""
        good, bad = [], []
        for row_id, *values in self._rows("answers", COLUMNS, "answered_at"):
            raw = dict(zip(COLUMNS, values))
            try:
                good.append(Answer.from_json(_decoded(raw)))
            except ValueError as e:
                bad.append(BadRow(row_id, str(e), raw))
        return good, bad

    def answers(self) -> list[Answer]:
        """The valid answers; damaged rows are skipped with a DamagedRowsWarning naming the file and row ids."""
        good, bad = self.read()
        if bad:
            ids = ", ".join(str(b.id) for b in bad[:10]) + (", ..." if len(bad) > 10 else "")
            warnings.warn(DamagedRowsWarning(
                f"{self.path}: skipped {len(bad)} damaged row(s) (row id {ids}; first: {bad[0].reason}); "
                f"`ftlab progress check --learner {self.learner}` lists them, "
                f"`ftlab progress drop ROW --learner {self.learner}` removes one"), stacklevel=2)
        return good

    def row(self, row_id: int) -> dict:
        """One row's raw values, as stored; KeyError if there is none."""
        with self._lock:
            found = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM answers WHERE id=?", (row_id,)).fetchone()
        if found is None:
            raise KeyError(f"no row {row_id} in {self.path}")
        return dict(zip(COLUMNS, found))

    def drop(self, row_id: int) -> None:
        """Delete one row (what `ftlab progress drop` does after showing it); KeyError if there is none."""
        cur = self._write(self.conn.execute, "DELETE FROM answers WHERE id=?", (row_id,))
        if cur.rowcount != 1:
            raise KeyError(f"no row {row_id} in {self.path}")

    def export(self, path: Path | str, answers: list[Answer] | None = None) -> Path:
        """Write the answers (default: every valid one) and the lab checks as JSON: what an instructor collects
        for `ftlab report`."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give the export a file name, e.g. {path / (self.learner + '.json')}")
        data = {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "learner": self.learner,
                **({"store_id": self.store_id} if self.store_id else {}),
                "exported_at": datetime.now(timezone.utc).isoformat(),
                "answers": [a.to_json() for a in (self.answers() if answers is None else answers)],
                "lab_checks": [c.to_json() for c in self.lab_checks()]}
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            tmp.replace(path)  # atomic: an interrupted export never leaves half a file
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def merge(self, answers: list[Answer], checks: list[LabCheck] = ()) -> int:
        """Add validated answers and lab checks (those already present are skipped), all in one transaction;
        how many rows were new."""
        return self._write(lambda: sum(self._insert(a) for a in answers) + sum(self._insert_check(c) for c in checks))

    def import_(self, path: Path | str) -> int:
        """Merge an export into this store (rows already present are skipped); returns how many were added.

        (`import` is a Python keyword, hence the underscore.) A malformed file adds nothing.
        """
        data = read_export(path)
        return self.merge(data["answers"], data["lab_checks"])


def _decoded(raw: dict) -> dict:
    """A row's values as an export would carry them: JSON columns parsed, `correct` 0/1 as a bool."""
    d = dict(raw)
    for field in ("topics", "response"):
        try:
            d[field] = json.loads(raw[field]) if isinstance(raw[field], str) else None
        except (ValueError, RecursionError):
            d[field] = None
        if d[field] is None and raw[field] != "null":
            raise _bad(field, "JSON text", raw[field])
    d["correct"] = {0: False, 1: True}.get(raw["correct"]) if type(raw["correct"]) is int else raw["correct"]
    return d


def read_export(path: Path | str) -> dict:
    """A validated export: its learner, store id (None in older exports), a list of Answer and a list of LabCheck
    (empty in a version-1 export).

    ValueError names the file, the answer's index and the field; nothing is returned unless every answer is valid.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON export ({e})") from e
    except RecursionError:
        raise ValueError(f"{path}: not a readable JSON export (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not an ftlab progress export (expected \"format\": \"{EXPORT_FORMAT}\")")
    version = data.get("schema_version")
    if type(version) is not int or version < 1:
        raise ValueError(f"{path}: \"schema_version\" must be a whole number such as {SCHEMA_VERSION}, unquoted "
                         f"(got {_short.repr(version)})")
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version} is newer than this ftlab reads ({SCHEMA_VERSION}); "
                         f"upgrade ftlab")
    if not isinstance(data.get("learner"), str) or not isinstance(data.get("answers"), list):
        raise ValueError(f"{path}: needs a string \"learner\" and a list \"answers\"")
    store_id = data.get("store_id")
    if store_id is not None and not (isinstance(store_id, str) and re.fullmatch(r"[0-9a-f]{32}", store_id)):
        raise ValueError(f"{path}: \"store_id\" must be 32 hex digits (got {_short.repr(store_id)})")
    checks = data.get("lab_checks", [] if version == 1 else None)
    if not isinstance(checks, list):
        raise ValueError(f"{path}: schema_version {version} needs a list \"lab_checks\" (got {_short.repr(checks)})")
    answers = [_valid(Answer, raw, f"{path}: answers[{n}]") for n, raw in enumerate(data["answers"])]
    checks = [_valid(LabCheck, raw, f"{path}: lab_checks[{n}]") for n, raw in enumerate(checks)]
    return {"learner": data["learner"], "store_id": store_id, "answers": answers, "lab_checks": checks}


def _valid(kind, raw, where: str):
    try:
        return kind.from_json(raw)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
