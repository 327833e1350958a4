"""Progress store: durable answers, export/import, and refusing to touch files it does not understand."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftlab.quiz import store as store_module
from ftlab.quiz.store import SCHEMA_VERSION, DamagedRowsWarning, Store, StoreError, read_export, store_path

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("home")  # tests/conftest.py: a throwaway FTLAB_HOME


def test_store_lives_under_ftlab_home_one_file_per_learner(home, bank_items):
    a, b = Store("ada"), Store("bob")
    a.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    assert a.path == home / "progress" / "ada.sqlite" and b.path == home / "progress" / "bob.sqlite"
    assert len(a.answers()) == 1 and b.answers() == []
    with pytest.raises(ValueError, match="learner name"):
        store_path("../evil")


def test_record_rate_and_read_back(bank_items):
    store = Store("ada")
    ans = store.record(bank_items[3], ["x", "y"], 0.5, False, 2, "daily")
    store.rate(ans.uid, 4)
    [back] = Store("ada").answers()  # a second connection sees the committed row
    assert (back.item_id, back.response, back.score, back.correct, back.rating, back.mode) == \
        (bank_items[3].id, ["x", "y"], 0.5, False, 4, "daily")
    assert back.topics == tuple(bank_items[3].topics) and back.answered_at.tzinfo is not None
    with pytest.raises(KeyError):
        store.rate("nope", 3)


CHILD = textwrap.dedent("""
    import sys
    from ftlab.quiz import scoring
    from ftlab.quiz.session import Session
    scoring.similarities = lambda answer, key_points: [1.0] * len(key_points)  # the embedder is not under test here
    s = Session("quiz", learner="kid", chapters=["02"], seed=4)
    while not s.done:
        item = s.next_item()
        response = {"single": lambda: item.answer, "multi": lambda: item.answer, "numeric": lambda: "1e6",
                    "free_text": lambda: item.model_answer}[item.kind]()
        fb = s.submit(response)
        print(fb.answer_uid, flush=True)  # the moment feedback would be shown
        if len(s.results) == 3:
            sys.stdin.readline()  # mid-session: the parent kills us here
""")


def test_answers_survive_a_killed_process(home):
    env = {**os.environ, "FTLAB_HOME": str(home), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    shown = [child.stdout.readline().strip() for _ in range(3)]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL and all(shown)
    saved = Store("kid").answers()
    assert [a.uid for a in saved] == shown  # everything whose feedback was shown, nothing else


def test_export_import_round_trip(tmp_path, bank_items):
    src = Store("ada")
    for k, item in enumerate(bank_items[:4]):
        src.record(item, f"r{k}", k / 3, k % 2 == 0, 1 + k, "quiz")
    out = src.export(tmp_path / "ada.json")
    assert json.loads(out.read_text())["schema_version"] == SCHEMA_VERSION
    dst = Store("ada-laptop")
    assert dst.import_(out) == 4
    assert dst.import_(out) == 0  # merging the same export again adds nothing
    assert [a.to_json() for a in dst.answers()] == [a.to_json() for a in src.answers()]


@pytest.mark.parametrize("content,message", [
    ("not json", "not a readable JSON export"),
    ('{"format": "other"}', "not an ftlab progress export"),
    ('{"format": "ftlab-progress", "schema_version": 99, "learner": "x", "answers": []}', "schema_version 99"),
    ('{"format": "ftlab-progress", "schema_version": 1, "learner": "x", "answers": [{"uid": 1}]}',
     r"answers\[0\]: answer is missing"),
])
def test_malformed_export_is_refused_and_adds_nothing(tmp_path, content, message, bank_items):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    store = Store("ada")
    store.record(bank_items[0], "a", 1, True, 3, "quiz")
    with pytest.raises(ValueError, match=message) as e:
        store.import_(bad)
    assert "bad.json" in str(e.value)
    assert len(store.answers()) == 1


def test_half_valid_export_adds_nothing(tmp_path, bank_items):
    good = Store("src")
    good.record(bank_items[0], "a", 1, True, 3, "quiz")
    data = json.loads(good.export(tmp_path / "x.json").read_text())
    data["answers"].append({**data["answers"][0], "uid": "other", "score": 7})
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"answers\[1\]"):
        Store("dst").import_(tmp_path / "x.json")
    assert Store("dst").answers() == []


def test_corrupted_store_is_reported_and_never_overwritten(home):
    path = store_path("ada")
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = b"this is not an sqlite database, just some bytes " * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="not a readable progress store"):
        Store("ada")
    assert path.read_bytes() == garbage


def test_newer_schema_is_reported_and_never_overwritten(bank_items):
    store = Store("ada")
    store.record(bank_items[0], "a", 1, True, 3, "quiz")
    store.close()
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    before = store.path.read_bytes()
    with pytest.raises(StoreError, match="newer than this ftlab"):
        Store("ada")
    assert store.path.read_bytes() == before


def test_foreign_sqlite_file_is_not_adopted(home):
    path = store_path("ada")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an ftlab progress store"):
        Store("ada")
    assert path.read_bytes() == before


def test_read_export_gives_answers(tmp_path, bank_items):
    s = Store("ada")
    s.record(bank_items[1], "b", 0, False, 1, "review")
    data = read_export(s.export(tmp_path / "e.json"))
    assert data["learner"] == "ada" and data["answers"][0].item_id == bank_items[1].id


def _in_thread(fn, *args):
    """Run fn on a new thread (as JupyterLab's comm subshell runs a widget click); re-raise its error here."""
    import threading

    out = {}

    def target():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed back to the test's thread
            out["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_store_opened_in_one_thread_works_from_others(bank_items):
    """JupyterLab 4.6 opens the store in the cell's thread and clicks Submit on a subshell thread."""
    store = Store("ada")  # this thread, like Quiz(...) in a cell
    first = _in_thread(store.record, bank_items[0], "a", 1.0, True, 3, "quiz")
    _in_thread(store.record, bank_items[1], "b", 0.0, False, 1, "quiz")  # the second click failed before the fix
    _in_thread(store.rate, first.uid, 4)
    assert [a.item_id for a in _in_thread(store.answers)] == [bank_items[0].id, bank_items[1].id]
    assert [a.rating for a in store.answers()] == [4, 1]


def test_concurrent_threads_never_interleave_a_transaction(bank_items):
    import threading

    store = Store("ada")
    threads = [threading.Thread(target=lambda i=i: [store.record(bank_items[i], "a", 1.0, True, 3, "quiz")
                                                    for _ in range(25)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(Store("ada").answers()) == 100


def test_session_submits_from_a_second_thread(monkeypatch):
    """The reviewer's repro: Session made in the main thread, every submit of a whole test on another thread."""
    from ftlab.quiz import scoring
    from ftlab.quiz.session import Session

    monkeypatch.setattr(scoring, "similarities", lambda answer, key_points: [1.0] * len(key_points))  # no MiniLM
    s = Session("quiz", learner="thread", chapters=["03"], seed=0)
    while (item := s.next_item()) is not None:
        response = {"single": item.answer if item.kind == "single" else None, "multi": getattr(item, "answer", None),
                    "numeric": str(getattr(item, "value", ""))}.get(item.kind, "a sentence of three words or more")
        _in_thread(s.submit, response)
    assert len(Store("thread").answers()) == s.total == 5


GOOD_ANSWER = {"uid": "u1", "item_id": "ch02-checkpointing-saves", "chapter": "02", "kind": "single",
               "topics": ["gradient-checkpointing"], "difficulty": 1, "response": "a", "score": 1.0, "correct": True,
               "rating": 3, "answered_at": "2026-01-01T10:00:00+00:00", "mode": "quiz"}


def write_export(path, answers, **header):
    data = {"format": "ftlab-progress", "schema_version": 1, "learner": "ada", "answers": answers, **header}
    path.write_text(json.dumps(data))  # json writes float('inf') as Infinity, as a crafted file would
    return path


@pytest.mark.parametrize("field,value", [
    ("correct", "false"), ("correct", 1), ("rating", 3.7), ("rating", True), ("rating", 9), ("difficulty", 1000),
    ("difficulty", -1000), ("difficulty", float("inf")), ("difficulty", 2.0),
    pytest.param("score", 10 ** 400, id="score-10**400"),
    ("score", float("nan")), ("score", "high"), ("score", True), ("topics", ["memory", 7]), ("topics", [{"a": 1}]),
    ("topics", "memory"), ("answered_at", "9999-12-31T00:00:00+00:00"), ("answered_at", "9999-12-31T23:00:00-05:00"),
    ("answered_at", "0001-01-01T00:00:00+00:00"), ("answered_at", "2026-01-01T10:00:00"), ("answered_at", 20260101),
    ("answered_at", "yesterday"), ("uid", 5), ("item_id", None), ("chapter", 2), ("kind", "essay"), ("mode", ["quiz"]),
])
def test_import_validates_each_field_exactly(tmp_path, field, value):
    """Values that used to be coerced ("false" -> True, 3.7 -> 3) or that crashed later code are refused."""
    path = write_export(tmp_path / "crafted.json", [GOOD_ANSWER, {**GOOD_ANSWER, "uid": "u2", field: value}])
    with pytest.raises(ValueError, match=rf"crafted.json: answers\[1\]: field '{field}': must be") as e:
        read_export(path)
    assert len(str(e.value)) < 400
    with pytest.raises(ValueError):
        Store("ada").import_(path)
    assert Store("ada").answers() == []  # nothing from a file with a bad row


@pytest.mark.parametrize("header,answers,message", [
    ({"schema_version": "1"}, [], r"\"schema_version\" must be a whole number such as \d, unquoted \(got '1'\)"),
    ({"schema_version": True}, [], "schema_version"),
    ({"schema_version": SCHEMA_VERSION + 1}, [], "newer than this ftlab reads"),
    ({"store_id": 7}, [], "store_id"),
    ({}, [None], r"answers\[0\]: must be an answer object"),
])
def test_export_header_problems_are_named(tmp_path, header, answers, message):
    with pytest.raises(ValueError, match=message):
        read_export(write_export(tmp_path / "x.json", answers, **header))


def test_deeply_nested_export_is_refused_cleanly(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"format": "ftlab-progress", "answers": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(ValueError, match="deep.json: not a readable JSON export .nested too deeply"):
        read_export(path)


def test_valid_export_values_round_trip_exactly(tmp_path):
    [a] = read_export(write_export(tmp_path / "ok.json", [{**GOOD_ANSWER, "score": 1, "topics": []}]))["answers"]
    assert (a.score, type(a.score), a.correct, a.topics) == (1.0, float, True, ())


def damage(store, row_id, **values):
    """Overwrite columns of one row behind the store's back (as a bit flip or a hand edit would)."""
    with sqlite3.connect(store.path) as conn:
        for column, value in values.items():
            conn.execute(f"UPDATE answers SET {column}=? WHERE id=?", (value, row_id))


def test_damaged_rows_are_skipped_with_a_warning_naming_file_and_row(bank_items):
    store = Store("ada")
    for item in bank_items[:4]:
        store.record(item, "a", 1.0, True, 3, "quiz")
    damage(store, 2, topics="oops")
    damage(store, 3, score=7, rating=9)
    damage(store, 4, answered_at="yesterday")
    with pytest.warns(DamagedRowsWarning, match=r"ada.sqlite: skipped 3 damaged row\(s\) \(row id 2, 3, 4; ") as w:
        good = store.answers()
    assert [a.item_id for a in good] == [bank_items[0].id]
    assert "ftlab progress check --learner ada" in str(w[0].message)
    reasons = {b.id: b.reason for b in store.read()[1]}
    assert "field 'topics': must be JSON text" in reasons[2] and "field 'score'" in reasons[3]
    assert "field 'answered_at'" in reasons[4]
    store.drop(2)
    assert [b.id for b in store.read()[1]] == [3, 4]
    with pytest.raises(KeyError, match="no row 2"):
        store.drop(2)


def test_sqlite_problems_become_store_errors(home):
    progress = home / "progress"
    (progress / "dir.sqlite").mkdir(parents=True)
    with pytest.raises(StoreError, match="dir.sqlite is a folder, not a progress store file"):
        Store("dir", writable=False)
    with sqlite3.connect(progress / "cols.sqlite") as conn:
        conn.executescript("CREATE TABLE answers (a, b); PRAGMA user_version=1;")
    before = (progress / "cols.sqlite").read_bytes()
    with pytest.raises(StoreError, match=r"'answers' table without the columns \['id', 'uid'"):
        Store("cols", writable=False)
    assert (progress / "cols.sqlite").read_bytes() == before


def test_ftlab_home_that_is_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "afile"))
    with pytest.raises(StoreError, match=r"FTLAB_HOME=.*afile: a file is in the way of a folder"):
        Store("ada")


def test_locked_store_says_busy_not_damaged(bank_items):
    Store("ada").close()
    holder = sqlite3.connect(store_path("ada"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write
    try:
        with pytest.raises(StoreError, match="busy: another ftlab process is writing to .*ada.sqlite; try again"):
            Store("ada")
    finally:
        holder.close()
    assert Store("ada").answers() == []


def test_disk_full_is_a_clear_error_and_keeps_earlier_answers(bank_items):
    store = Store("ada")
    store.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's SQLITE_FULL, as on a full disk
    full = r"could not write to .*ada.sqlite: .*full.*answers saved before this are kept"
    with pytest.raises(StoreError, match=full):
        for item in bank_items[1:200]:
            store.record(item, "x" * 2000, 0.0, False, 1, "quiz")
    assert Store("ada").answers()[0].item_id == bank_items[0].id


READ_ONLY_CHILD = textwrap.dedent("""
    import sys
    from ftlab.quiz.store import Store, StoreError
    try:
        Store("ro")
        print("opened for writing")
    except StoreError as e:
        print("refused:", e)
    print("read:", len(Store("ro", writable=False).answers()))
""")


def as_unprivileged(argv):
    """argv run without root's right to write read-only files (root ignores permissions otherwise)."""
    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: read-only files are writable to root")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]


@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_read_only_store_is_refused_when_it_opens(home, bank_items, read_only):
    store = Store("ro")
    store.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    store.close()
    target = store.path if read_only == "file" else store.path.parent
    target.chmod(0o444 if read_only == "file" else 0o555)
    try:
        env = {**os.environ, "FTLAB_HOME": str(home), "PYTHONPATH": str(REPO)}
        done = subprocess.run(as_unprivileged([sys.executable, "-c", READ_ONLY_CHILD]), env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    finally:
        target.chmod(0o644 if read_only == "file" else 0o755)
    assert "refused:" in done.stdout and "is read-only" in done.stdout, done.stdout + done.stderr
    assert "read: 1" in done.stdout  # exporting what is there still works


def test_store_id_is_made_once_and_exported(tmp_path, bank_items):
    store = Store("ada")
    assert re.fullmatch(r"[0-9a-f]{32}", store.store_id) and Store("ada").store_id == store.store_id
    assert Store("bob").store_id != store.store_id
    data = read_export(store.export(tmp_path / "a.json"))
    assert data["store_id"] == store.store_id
    old = json.loads((tmp_path / "a.json").read_text())
    del old["store_id"]  # an export written before store ids
    assert read_export(write_export(tmp_path / "old.json", old["answers"]))["store_id"] is None


def test_store_written_before_ids_gets_one_when_opened_for_writing(home):
    path = store_path("old")
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(store_module._SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
    assert Store("old", writable=False).store_id is None
    assert re.fullmatch(r"[0-9a-f]{32}", Store("old").store_id)


def test_export_to_a_folder_is_refused_and_leaves_nothing(tmp_path, bank_items):
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="is a folder; give the export a file name"):
        Store("ada").export(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]
