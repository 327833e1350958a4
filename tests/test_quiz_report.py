"""Cohort report: learners kept apart by store, empty learners listed, bad files skipped, odd names harmless."""

import json

import pytest

from ftlab.quiz.report import ReportError, build_report, load_exports
from ftlab.quiz.store import Store

pytestmark = pytest.mark.usefixtures("home")  # tests/conftest.py: a throwaway FTLAB_HOME


def store_with(path, learner, bank_items, right: bool):
    store = Store(learner, path=path)
    for item in bank_items:
        store.record(item, "a", float(right), right, 3, "quiz")
    return store


def test_same_name_on_two_machines_stays_two_learners(tmp_path, bank_items):
    exports = tmp_path / "exports"
    exports.mkdir()
    store_with(tmp_path / "p1.sqlite", "jovyan", bank_items[:10], True).export(exports / "p1.json")
    p2 = store_with(tmp_path / "p2.sqlite", "jovyan", bank_items[:10], False)
    p2.export(exports / "p2.json")
    p2.export(exports / "p2-again.json")  # two exports of one store merge
    learners, warnings = load_exports(exports)
    assert {name: sum(a.correct for a in answers) for name, answers in learners.items()} == \
        {"jovyan (p1.json)": 10, "jovyan (p2-again.json)": 0}
    assert len(learners["jovyan (p2-again.json)"]) == 10
    [w] = warnings
    assert "2 different stores use the learner name 'jovyan'" in w and "p1.json" in w


def test_exports_without_a_store_id_are_keyed_by_file(tmp_path, bank_items):
    exports = tmp_path / "exports"
    exports.mkdir()
    for name in ("a", "b"):
        path = store_with(tmp_path / f"{name}.sqlite", "jovyan", bank_items[:3], True).export(exports / f"{name}.json")
        data = json.loads(path.read_text())
        del data["store_id"]  # written by an ftlab from before store ids
        path.write_text(json.dumps(data))
    learners, warnings = load_exports(exports)
    assert list(learners) == ["jovyan (a.json)", "jovyan (b.json)"] and len(warnings) == 1


def test_learner_with_no_answers_is_listed_and_alone_makes_a_report(tmp_path, bank_items):
    exports = tmp_path / "exports"
    exports.mkdir()
    Store("nobody-yet").export(exports / "zero.json")
    out, warnings = build_report(exports, tmp_path / "r.html")
    page = out.read_text()
    assert warnings == [] and "<td>nobody-yet</td><td>0</td><td colspan=4>no answers yet</td>" in page
    store_with(tmp_path / "s.sqlite", "ada", bank_items[:3], True).export(exports / "ada.json")
    page = build_report(exports, tmp_path / "r.html")[0].read_text()
    assert "<td>nobody-yet</td><td>0</td>" in page and "<td>ada</td><td>3</td>" in page


def test_mathtext_in_names_and_item_ids_is_plain_text(tmp_path, bank_items):
    exports = tmp_path / "exports"
    exports.mkdir()
    path = store_with(tmp_path / "s.sqlite", "ada", bank_items[:3], False).export(exports / "odd.json")
    data = json.loads(path.read_text())
    data["learner"] = "$\\undefinedcmd$"
    data["answers"][0]["item_id"] = "$\\frac{a$"
    path.write_text(json.dumps(data))
    page = build_report(exports, tmp_path / "r.html")[0].read_text()
    assert "<td>$\\undefinedcmd$</td>" in page and page.count('src="data:image/png;base64,') == 3


def test_missing_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    import ftlab.quiz.report as report

    monkeypatch.setattr(report, "load_exports", lambda folder: pytest.fail("read the exports before checking -o"))
    with pytest.raises(ReportError, match="cannot write .*r.html: the folder .*nope does not exist"):
        build_report(tmp_path, tmp_path / "nope" / "r.html")


@pytest.mark.parametrize("field,value", [("difficulty", 1000), ("answered_at", "0001-01-01T00:00:00+00:00"),
                                         ("topics", ["memory", 7]),
                                         pytest.param("score", 10 ** 400, id="score-10**400")])
def test_one_crafted_export_is_skipped_with_its_reason(tmp_path, bank_items, field, value):
    exports = tmp_path / "exports"
    exports.mkdir()
    store_with(tmp_path / "good.sqlite", "ada", bank_items[:3], True).export(exports / "ada.json")
    path = store_with(tmp_path / "bad.sqlite", "eve", bank_items[:3], True).export(exports / "eve.json")
    data = json.loads(path.read_text())
    data["answers"][1][field] = value
    path.write_text(json.dumps(data))
    out, warnings = build_report(exports, tmp_path / "r.html")
    [w] = warnings
    assert "eve.json: answers[1]: field " + repr(field) in w
    page = out.read_text()
    assert "<td>ada</td>" in page and "<td>eve</td>" not in page and "Warnings" in page
