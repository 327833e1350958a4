"""Bank schema: every kind of mistake is reported with file, item id, field and reason, all at once."""

import json
from collections import Counter

import pytest

from ftlab.quiz import bank
from ftlab.quiz.cli import main as quiz_cli

GOOD = {
    "single": dict(kind="single", topics=["t"], difficulty=2, prompt="p?", explanation="e",
                   see="chapters/05_x.ipynb#Intro",
                   choices=[dict(id="a", text="A", feedback="fa"), dict(id="b", text="B", feedback="fb")], answer="a"),
    "multi": dict(kind="multi", topics=["t"], difficulty=3, prompt="p?", explanation="e",
                  see="chapters/05_x.ipynb#Intro",
                  choices=[dict(id="a", text="A", feedback="fa"), dict(id="b", text="B", feedback="fb")],
                  answer=["a", "b"]),
    "numeric": dict(kind="numeric", topics=["t"], difficulty=4, prompt="p?", explanation="e", value=16, tolerance=2,
                    unit="bytes", see="chapters/05_x.ipynb#Intro"),
    "free_text": dict(kind="free_text", topics=["t"], difficulty=5, prompt="p?", explanation="e", model_answer="m",
                      key_points=["k1", "k2"], see="chapters/05_x.ipynb#Intro"),
}


def write_bank(folder, items, name="05_x.yaml", chapter="05"):
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    (folder / name).write_text(yaml.safe_dump({"chapter": chapter, "items": items}, sort_keys=False))
    return folder


def item(base, id, **changes):
    d = {"id": id, **GOOD[base], **changes}
    return {k: v for k, v in d.items() if v is not None}


def problems_of(tmp_path, items):
    with pytest.raises(bank.BankError) as e:
        bank.load_banks(write_bank(tmp_path / "bank", items))
    return e.value.problems


def test_valid_bank_of_every_kind_loads(tmp_path):
    items = bank.load_banks(write_bank(tmp_path, [item(k, f"i-{n}") for n, k in enumerate(GOOD)]))
    assert [i.kind for i in items] == list(GOOD)
    assert items[0].chapter == "05" and items[0].section == "Intro"


@pytest.mark.parametrize("kind,change,field,reason", [
    ("single", dict(answer="z"), "answer", "not among the choices"),
    ("multi", dict(answer=["a", "z"]), "answer", "not among the choices"),
    ("single", dict(difficulty=6), "difficulty", "less than or equal to 5"),
    ("multi", dict(difficulty=0), "difficulty", "greater than or equal to 1"),
    ("numeric", dict(explanation=None), "explanation", "required"),
    ("numeric", dict(tolerance=-1), "tolerance", "greater than or equal to 0"),
    ("numeric", dict(unit=None), "unit", "required"),
    ("free_text", dict(key_points=["only one"]), "key_points", "at least 2"),
    ("free_text", dict(key_points=list("abcdef")), "key_points", "at most 5"),
    ("free_text", dict(model_answer="  "), "model_answer", "at least 1 character"),
    ("single", dict(see="https://example.com"), "see", "pattern"),
    ("single", dict(choices=[dict(id="a", text="$x$", feedback="f"), dict(id="b", text="B", feedback="f")]),
     "choices.0.text", "plain-text label"),
    ("multi", dict(choices=[dict(id="a", text="A"), dict(id="b", text="B", feedback="f")]), "choices.0.feedback",
     "required"),
    ("single", dict(kind="essay"), "kind", "must be one of single, multi, numeric, free_text"),
    ("single", dict(surprise=1), "surprise", "Extra inputs are not permitted"),
])
def test_each_kind_of_error_names_file_item_field_reason(tmp_path, kind, change, field, reason):
    [p] = problems_of(tmp_path, [item(kind, "bad-one", **change)])
    assert (p.file, p.item, p.field) == ("05_x.yaml", "bad-one", field)
    assert reason in p.reason
    assert str(p).startswith("05_x.yaml: item 'bad-one': field")


def test_all_problems_reported_at_once(tmp_path):
    items = [item("single", "a1", difficulty=9, answer="z", explanation=None), item("numeric", "a2", unit=None),
             item("free_text", "ok"), item("numeric", "a1")]  # a1 is also a duplicate id
    found = {(p.item, p.field) for p in problems_of(tmp_path, items)}
    assert {("a1", "difficulty"), ("a1", "answer"), ("a1", "explanation"), ("a2", "unit"), ("a1", "id")} <= found
    assert "ok" not in {p.item for p in problems_of(tmp_path, items)}


def test_duplicate_ids_across_files_and_bad_files(tmp_path):
    folder = write_bank(tmp_path, [item("single", "same")])
    write_bank(folder, [item("numeric", "same")], name="06_y.yaml", chapter="06")
    (folder / "07_z.yaml").write_text("chapter: '07'\nitems: [\n")
    (folder / "08_w.yaml").write_text("chapter: '09'\nitems: []\n")
    with pytest.raises(bank.BankError) as e:
        bank.load_banks(folder)
    text = str(e.value)
    assert "06_y.yaml: item 'same': field 'id': duplicate id (first defined in 05_x.yaml)" in text
    assert "07_z.yaml: cannot read YAML" in text
    assert "08_w.yaml: field 'chapter'" in text


def notebook(path, headings):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": [f"## {h}\n", "text\n"]} for h in headings]
    cells.append({"cell_type": "code", "metadata": {}, "source": "# Not a heading", "outputs": [],
                  "execution_count": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_validate_finds_dead_see_links(tmp_path):
    folder = write_bank(tmp_path / "bank", [item("single", "live", see="chapters/05_x.ipynb#Two-words"),
                                            item("single", "no-heading", see="chapters/05_x.ipynb#Not-Here"),
                                            item("single", "code-comment", see="chapters/05_x.ipynb#Not-a-heading"),
                                            item("single", "no-notebook", see="chapters/05_gone.ipynb#Intro")])
    notebook(tmp_path / "chapters" / "05_x.ipynb", ["Two words"])
    dead = {p.item: p.reason for p in bank.validate(folder, tmp_path)}
    assert set(dead) == {"no-heading", "code-comment", "no-notebook"}
    assert "has no heading 'Not Here'" in dead["no-heading"]
    assert "does not exist" in dead["no-notebook"]


def test_validate_command(tmp_path, capsys):
    folder = write_bank(tmp_path / "bank", [item("single", "live", see="chapters/05_x.ipynb#Intro")])
    assert quiz_cli(["quiz", "validate", "--bank", str(folder), "--root", str(tmp_path)]) == 1
    assert "dead link" in capsys.readouterr().out
    notebook(tmp_path / "chapters" / "05_x.ipynb", ["Intro"])
    assert quiz_cli(["quiz", "validate", "--bank", str(folder), "--root", str(tmp_path)]) == 0
    assert "OK: 1 items" in capsys.readouterr().out


def test_shipped_banks_are_valid_and_varied():
    items = bank.load_banks()
    for chapter in ("00", "02"):
        its = [i for i in items if i.chapter == chapter]
        assert len(its) >= 12
        assert set(Counter(i.kind for i in its)) == {"single", "multi", "numeric", "free_text"}
        assert set(i.difficulty for i in its) == {1, 2, 3, 4, 5}
    # Links may only point at the headings the chapter authors promised (the notebooks may not exist yet).
    promised = {"00": ["What this course is", "The map of chapters", "Your profile and device", "The packaged models",
                       "How labs work", "How quizzes work", "Quiz"],
                "02": ["Token-weighted gradient accumulation", "The training loop", "Checkpoint and resume",
                       "Mixed precision and gradient checkpointing", "Estimating memory",
                       "Data parallel equals accumulation", "Activation memory and sequence length",
                       "Inference memory and the KV cache", "Sharding the training state with ZeRO and FSDP",
                       "Interview angle", "Quiz"]}
    for i in items:
        # other chapters' links, and the tour's (chapter 00) links into the chapter that teaches an item, are
        # checked by validate() and the link tests in test_question_bank.py
        if i.chapter in promised and i.see.startswith(f"chapters/{i.chapter}_"):
            assert i.see.split("#")[1] in [h.replace(" ", "-") for h in promised[i.chapter]], i.id


def test_shipped_numeric_answers_are_consistent():
    """The arithmetic in the bank, recomputed (catches a typo in a value)."""
    by_id = {i.id: i for i in bank.load_banks()}
    assert by_id["ch02-token-weighted-loss"].value == (100 * 2.0 + 300 * 1.0) / 400
    assert by_id["ch02-bytes-per-param"].value == 2 + 2 + 4 + 4 + 4
    assert by_id["ch02-7b-full-ft-memory"].value == 7e9 * 16 / 1e9
    assert by_id["ch02-ddp-effective-batch"].value == 4 * 8 * 2
    assert by_id["ch00-linear-probe-params"].value == 768 * 3 + 3
    assert by_id["ch00-lora-layer-params"].value == 8 * (4096 + 4096)
    assert by_id["ch00-storage-many-tasks"].value == 50 * 7e9 * 2 / 1e9


def test_markdown_headings_anchor_like_jupyterlab(tmp_path):
    nb = tmp_path / "n.ipynb"
    notebook(nb, ["Mixed precision and gradient checkpointing"])
    assert "Mixed-precision-and-gradient-checkpointing" in bank.notebook_anchors(nb)


def test_duplicate_yaml_key_is_an_error_naming_file_and_key(tmp_path):
    folder = write_bank(tmp_path / "bank", [item("single", "dup")])
    text = (folder / "05_x.yaml").read_text()
    (folder / "05_x.yaml").write_text(text.replace("  answer: a\n", "  answer: a\n  answer: b\n"))
    [p] = problems_of_folder(folder)
    assert (p.file, p.field) == ("05_x.yaml", "answer") and "duplicate key 'answer' at line" in p.reason


def problems_of_folder(folder):
    with pytest.raises(bank.BankError) as e:
        bank.load_banks(folder)
    return e.value.problems


@pytest.mark.parametrize("change,field", [(dict(value=float("nan")), "value"), (dict(value=float("inf")), "value"),
                                          (dict(tolerance=float("inf")), "tolerance")])
def test_numeric_value_and_tolerance_must_be_finite(tmp_path, change, field):
    [p] = problems_of(tmp_path, [item("numeric", "n", **change)])
    assert p.field == field and "finite number" in p.reason


@pytest.mark.parametrize("text", ["feedback: yes", "id: no"])
def test_yaml_booleans_where_text_belongs_get_a_hint_to_quote(tmp_path, text):
    folder = write_bank(tmp_path / "bank", [item("single", "yn")])
    key = text.split(":")[0]
    old = "  - id: a\n    text: A\n    feedback: fa\n"
    bank_text = (folder / "05_x.yaml").read_text()
    assert old in bank_text
    new = old.replace("feedback: fa", text) if key == "feedback" else old.replace("id: a", text)
    (folder / "05_x.yaml").write_text(bank_text.replace(old, new).replace("answer: a", "answer: b"))
    problems = problems_of_folder(folder)
    assert any(p.field == f"choices.0.{key}" and "quote" in p.reason for p in problems), problems


def test_id_must_be_a_string(tmp_path):
    [first, *_] = problems_of(tmp_path, [item("single", [1, 2])])
    assert (first.item, first.field) == ("#1", "id")


BILLION_LAUGHS = "\n".join(
    ['chapter: "05"', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]" for p, n in zip("abcde", "bcdef")]
    + ["items:", "  - id: *f", "    kind: single", "    prompt: *f", "    topics: *f", "    answer: *f",
       "    choices: [{id: *f, text: t, feedback: f}, {id: b, text: t, feedback: f}]", ""])


def test_billion_laughs_fails_fast_with_a_short_message(tmp_path):
    """484 bytes whose aliases stand for 10^6 strings: refused without ever building their text."""
    import time
    import tracemalloc

    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / "05_x.yaml").write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 600
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(bank.BankError) as e:
        bank.load_banks(folder)
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 5 and peak < 20e6 and len(str(e.value)) < 5000
    assert any(p.field == "id" for p in e.value.problems)


@pytest.mark.parametrize("chapter,message", [("lora", "is not a chapter number"), (2.5, "is not a chapter number"),
                                             ("99", "has no questions")])
def test_unknown_chapter_lists_the_chapters_there_are(tmp_path, chapter, message):
    folder = write_bank(tmp_path / "bank", [item("single", "one")])
    with pytest.raises(ValueError, match=f"{message}; chapters with questions: 05$"):
        bank.load_banks(folder, [chapter])
    assert [i.id for i in bank.load_banks(folder, [5])] == ["one"]


def test_check_returns_items_and_problems_from_one_parse(tmp_path, monkeypatch):
    folder = write_bank(tmp_path / "bank", [item("single", "live", see="chapters/05_x.ipynb#Intro")])
    notebook(tmp_path / "chapters" / "05_x.ipynb", ["Intro"])
    parsed = []
    real = bank.parse_bank
    monkeypatch.setattr(bank, "parse_bank", lambda path: parsed.append(path) or real(path))
    assert quiz_cli(["quiz", "validate", "--bank", str(folder), "--root", str(tmp_path)]) == 0
    assert len(parsed) == 1
