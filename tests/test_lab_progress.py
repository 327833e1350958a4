"""Lab check results in the progress store (schema 2): migration of version-1 stores, export/import, report."""

import json
import sqlite3

import pytest

from ftlab.quiz import store as store_module
from ftlab.quiz.cli import main as cli
from ftlab.quiz.report import build_report, course_checks, lab_progress, load_cohort
from ftlab.quiz.store import SCHEMA_VERSION, Store, read_export, store_path

pytestmark = pytest.mark.usefixtures("home")  # tests/conftest.py: a throwaway FTLAB_HOME


def version_1_store(learner, item):
    """A store as ftlab wrote it before lab checks: answers, meta, user_version 1, one answer."""
    path = store_path(learner)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(store_module._SCHEMA + store_module._META +
                           "INSERT INTO meta VALUES ('store_id', '" + "a" * 32 + "'); PRAGMA user_version=1;")
        conn.execute("INSERT INTO answers (uid, item_id, chapter, kind, topics, difficulty, response, score, correct, "
                     "rating, answered_at, mode) VALUES ('u1', ?, ?, ?, ?, ?, '\"a\"', 1.0, 1, 3, "
                     "'2026-01-01T10:00:00+00:00', 'quiz')",
                     (item.id, item.chapter, item.kind, json.dumps(list(item.topics)), item.difficulty))
    return path


def test_version_1_store_reads_as_before_and_gains_lab_checks_when_written(tmp_path, bank_items):
    path = version_1_store("old", bank_items[0])
    with Store("old", writable=False) as ro:  # e.g. `ftlab export` of a store on a read-only disk
        assert [a.uid for a in ro.answers()] == ["u1"] and ro.lab_checks() == []
        data = json.loads(ro.export(tmp_path / "old.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["lab_checks"] == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # reading changed nothing
    with Store("old") as rw:
        rw.record_check("03_lora_lab", "lora_forward", "fail")
        assert [a.uid for a in rw.answers()] == ["u1"]
        assert [(c.lab, c.check, c.status) for c in rw.lab_checks()] == [("03_lora_lab", "lora_forward", "fail")]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_a_bad_result_is_refused_by_name():
    with pytest.raises(ValueError, match="field 'status': must be one of pass, fail, todo, error"):
        Store("ada").record_check("03_lora_lab", "lora_forward", "passed")
    with pytest.raises(ValueError, match="field 'lab'"):
        Store("ada").record_check("", "lora_forward", "pass")
    assert Store("ada").lab_checks() == []


def test_export_import_carries_lab_checks_once(tmp_path, bank_items):
    src = Store("ada")
    src.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    for status in ("todo", "fail", "pass"):
        src.record_check("01_fundamentals_lab", "replay_mix", status)
    out = src.export(tmp_path / "ada.json")
    dst = Store("ada-laptop")
    assert dst.import_(out) == 4 and dst.import_(out) == 0
    assert [c.to_json() for c in dst.lab_checks()] == [c.to_json() for c in src.lab_checks()]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("lab_checks"), r"schema_version 2 needs a list \"lab_checks\""),
    (lambda d: d["lab_checks"][0].update(status="won"), r"lab_checks\[0\]: field 'status'"),
    (lambda d: d["lab_checks"][0].update(checked_at="2026-01-01"), r"lab_checks\[0\]: field 'checked_at'"),
    (lambda d: d["lab_checks"][0].pop("check"), r"lab_checks\[0\]: lab check is missing \['check'\]"),
])
def test_a_bad_lab_check_in_an_export_adds_nothing(tmp_path, bank_items, change, message):
    src = Store("src")
    src.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    src.record_check("00_warmup_lab", "count_trainable", "pass")
    data = json.loads(src.export(tmp_path / "x.json").read_text())
    change(data)
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Store("dst").import_(tmp_path / "x.json")
    assert Store("dst").answers() == [] and Store("dst").lab_checks() == []


def test_a_version_1_export_still_imports(tmp_path, bank_items):
    src = Store("src")
    src.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    data = json.loads(src.export(tmp_path / "v1.json").read_text())
    data["schema_version"] = 1
    del data["lab_checks"]
    (tmp_path / "v1.json").write_text(json.dumps(data))
    assert read_export(tmp_path / "v1.json")["lab_checks"] == [] and Store("dst").import_(tmp_path / "v1.json") == 1


def test_cli_export_and_import_say_how_many_lab_checks(tmp_path, capsys):
    Store("ada").record_check("00_warmup_lab", "count_trainable", "pass")
    assert cli(["export", str(tmp_path / "ada.json"), "--learner", "ada"]) == 0
    assert "exported 0 answers and 1 lab check results of ada" in capsys.readouterr().out
    assert cli(["import", str(tmp_path / "ada.json"), "--learner", "bob"]) == 0
    assert "imported 0 new answers and 1 new lab check results" in capsys.readouterr().out


def fake_lab(folder, name, checks):
    """A lab notebook whose grade cells are `checks` (what tools/make_labs.py writes), plus a solution cell."""
    meta = [{"nbgrader": {"grade": True, "solution": False, "grade_id": c}} for c in checks]
    cells = [{"cell_type": "code", "metadata": {"nbgrader": {"grade": False, "solution": True, "grade_id": "s"}}}]
    cells += [{"cell_type": "code", "metadata": m} for m in meta]
    (folder / f"{name}.ipynb").write_text(json.dumps({"cells": cells}))


def test_report_shows_labs_beside_the_quizzes(tmp_path, bank_items):
    labs, exports = tmp_path / "labs", tmp_path / "exports"
    labs.mkdir()
    exports.mkdir()
    fake_lab(labs, "01_x_lab", ["a", "b"])
    fake_lab(labs, "02_y_lab", ["c"])
    ada = Store("ada")
    ada.record(bank_items[0], "a", 1.0, True, 3, "quiz")
    for check, status in [("a", "fail"), ("a", "pass"), ("b", "todo")]:
        ada.record_check("01_x_lab", check, status)
    ada.export(exports / "ada.json")
    bob = Store("bob")  # labs only, no quiz answers yet
    bob.record_check("02_y_lab", "c", "pass")
    bob.export(exports / "bob.json")

    learners, checks, warnings = load_cohort(exports)
    assert lab_progress(checks, course_checks(labs)) == {
        "ada": {"01_x_lab": (1, 2, 3), "02_y_lab": (0, 1, 0)}, "bob": {"01_x_lab": (0, 2, 0), "02_y_lab": (1, 1, 1)}}
    page = build_report(exports, tmp_path / "r.html", labs_dir=labs)[0].read_text()
    assert "<h2>Labs</h2>" in page and "<td>ada</td><td>1/2 (3 tries)</td><td>-</td>" in page
    assert "<td>bob</td><td>-</td><td>1/1 (1 tries)</td>" in page
    assert "<td>01_x_lab</td><td>a</td><td>1 of 1</td><td>2</td>" in page
    assert page.count('src="data:image/png;base64,') == 4  # the quiz plots and the labs heatmap


def test_report_without_lab_checks_says_so(tmp_path, bank_items):
    (tmp_path / "exports").mkdir()
    Store("ada").record(bank_items[0], "a", 1.0, True, 3, "quiz")
    Store("ada").export(tmp_path / "exports" / "ada.json")
    page = build_report(tmp_path / "exports", tmp_path / "r.html")[0].read_text()
    assert "No lab checks recorded yet." in page


def test_every_committed_lab_has_graded_checks():
    labs = course_checks()
    assert len(labs) >= 10 and all(labs.values()), labs
