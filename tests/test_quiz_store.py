"""Progress store: durable answers, export/import, and refusing to touch files it does not understand."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftlab.quiz import bank
from ftlab.quiz.store import SCHEMA_VERSION, Store, StoreError, read_export, store_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def items():
    return bank.load_banks()


def test_store_lives_under_ftlab_home_one_file_per_learner(home, items):
    a, b = Store("ada"), Store("bob")
    a.record(items[0], "a", 1.0, True, 3, "quiz")
    assert a.path == home / "progress" / "ada.sqlite" and b.path == home / "progress" / "bob.sqlite"
    assert len(a.answers()) == 1 and b.answers() == []
    with pytest.raises(ValueError, match="learner name"):
        store_path("../evil")


def test_record_rate_and_read_back(items):
    store = Store("ada")
    ans = store.record(items[3], ["x", "y"], 0.5, False, 2, "daily")
    store.rate(ans.uid, 4)
    [back] = Store("ada").answers()  # a second connection sees the committed row
    assert (back.item_id, back.response, back.score, back.correct, back.rating, back.mode) == \
        (items[3].id, ["x", "y"], 0.5, False, 4, "daily")
    assert back.topics == tuple(items[3].topics) and back.answered_at.tzinfo is not None
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


def test_export_import_round_trip(tmp_path, items):
    src = Store("ada")
    for k, item in enumerate(items[:4]):
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
    ('{"format": "ftlab-progress", "schema_version": 1, "learner": "x", "answers": [{"uid": 1}]}', r"answers\[0\]: answer is missing"),
])
def test_malformed_export_is_refused_and_adds_nothing(tmp_path, content, message, items):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    store = Store("ada")
    store.record(items[0], "a", 1, True, 3, "quiz")
    with pytest.raises(ValueError, match=message) as e:
        store.import_(bad)
    assert "bad.json" in str(e.value)
    assert len(store.answers()) == 1


def test_half_valid_export_adds_nothing(tmp_path, items):
    good = Store("src")
    good.record(items[0], "a", 1, True, 3, "quiz")
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


def test_newer_schema_is_reported_and_never_overwritten(items):
    store = Store("ada")
    store.record(items[0], "a", 1, True, 3, "quiz")
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


def test_read_export_gives_answers(tmp_path, items):
    s = Store("ada")
    s.record(items[1], "b", 0, False, 1, "review")
    data = read_export(s.export(tmp_path / "e.json"))
    assert data["learner"] == "ada" and data["answers"][0].item_id == items[1].id


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


def test_store_opened_in_one_thread_works_from_others(items):
    """JupyterLab 4.6 opens the store in the cell's thread and clicks Submit on a subshell thread."""
    store = Store("ada")  # this thread, like Quiz(...) in a cell
    first = _in_thread(store.record, items[0], "a", 1.0, True, 3, "quiz")
    _in_thread(store.record, items[1], "b", 0.0, False, 1, "quiz")  # the second click failed before the fix
    _in_thread(store.rate, first.uid, 4)
    assert [a.item_id for a in _in_thread(store.answers)] == [items[0].id, items[1].id]
    assert [a.rating for a in store.answers()] == [4, 1]


def test_concurrent_threads_never_interleave_a_transaction(items):
    import threading

    store = Store("ada")
    threads = [threading.Thread(target=lambda i=i: [store.record(items[i], "a", 1.0, True, 3, "quiz")
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
