"""Unlearning data: the data model, the embedded generator and the TOFU loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from moopt.tasks.unlearning.data import DataFormatError, QAItem, UnlearningData
from moopt.tasks.unlearning.embedded import ATTRIBUTES, make_embedded
from moopt.tasks.unlearning.tofu import load_tofu, read_idk_file, resolve_tofu_dir

REPO = Path(__file__).resolve().parents[2]
TOFU = REPO.parent / "shared" / "data" / "tofu"
needs_tofu = pytest.mark.skipif(
    not (TOFU / "forget01.json").is_file(),
    reason=f"TOFU files not found at {TOFU} (the shared data folder beside the repo)",
)


# ---------------------------------------------------------------- data model


def test_qaitem_rejects_bad_fields_naming_them() -> None:
    with pytest.raises(DataFormatError, match="question"):
        QAItem("  ", "an answer")
    with pytest.raises(DataFormatError, match="perturbed_answers"):
        QAItem("q?", "a", perturbed_answers="not a list")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="paraphrased_answer"):
        QAItem("q?", "a", paraphrased_answer=3)  # type: ignore[arg-type]


def test_truth_ratio_base_is_paraphrase_else_answer() -> None:
    assert QAItem("q?", "a", paraphrased_answer="p").truth_ratio_base == "p"
    assert QAItem("q?", "a").truth_ratio_base == "a"


def test_unlearning_data_validation() -> None:
    item = QAItem("q?", "a", perturbed_answers=["b"])
    with pytest.raises(DataFormatError, match="forget set is empty"):
        UnlearningData(forget=[], retain=[item])
    with pytest.raises(DataFormatError, match=r"retain_eval\[1\].*no perturbed"):
        UnlearningData(forget=[item], retain=[], retain_eval=[item, QAItem("x?", "y")])
    with pytest.raises(DataFormatError, match=r"retain\[0\].*str"):
        UnlearningData(forget=[item], retain=["q?"])  # type: ignore[list-item]


def test_subsample_eval_keeps_forget_eval_and_is_seeded() -> None:
    data = make_embedded(n_people=10, n_forget=2, facts_per_person=3)
    small = data.subsample_eval(5, seed=1)
    assert len(small.retain_eval) == 5 and len(small.real_authors_eval) == 5
    assert small.forget_eval == data.forget_eval
    assert all(it in data.retain_eval for it in small.retain_eval)
    assert data.subsample_eval(5, seed=1).retain_eval == small.retain_eval
    assert data.subsample_eval(5, seed=2).retain_eval != small.retain_eval
    with pytest.raises(ValueError, match="0"):
        data.subsample_eval(0)


# ---------------------------------------------------------------- embedded generator


def test_embedded_is_deterministic_by_seed() -> None:
    a, b, c = make_embedded(seed=3), make_embedded(seed=3), make_embedded(seed=4)
    assert a == b
    assert a.forget != c.forget and a.retain != c.retain


def test_embedded_sizes_and_disjoint_people() -> None:
    data = make_embedded(n_people=20, n_forget=2, facts_per_person=6, n_perturbed=3, n_utility=20)
    assert data.sizes() == {
        "forget": 12, "retain": 108, "forget_eval": 12, "retain_eval": 108,
        "real_authors_eval": 20, "world_facts_eval": 20, "idk_answers": 20, "background": 40,
    }
    forget_people = {it.subject for it in data.forget}
    retain_people = {it.subject for it in data.retain}
    assert len(forget_people) == 2 and len(retain_people) == 18
    assert not forget_people & retain_people
    # First names are unique, so an answer naming a first name names one person.
    firsts = [p.split()[0] for p in forget_people | retain_people]
    assert len(set(firsts)) == 20
    assert not {it.question for it in data.forget} & {it.question for it in data.retain}
    assert all(it.task_id == "1" and it.idk_answer in data.idk_answers for it in data.forget)


def test_embedded_items_are_short_and_perturbations_are_wrong() -> None:
    data = make_embedded(n_people=30, facts_per_person=len(ATTRIBUTES), n_perturbed=4)
    for it in data.forget + data.retain:
        assert 3 <= len(it.answer.split()) <= 8, it.answer
        assert it.paraphrased_answer is not None and it.paraphrased_answer != it.answer
        assert len(set(it.perturbed_answers)) == 4
        assert it.paraphrased_answer not in it.perturbed_answers
        # Perturbations reuse the paraphrase's wording: same number of words up to the value.
        assert all(abs(len(p.split()) - len(it.paraphrased_answer.split())) <= 2
                   for p in it.perturbed_answers)
    for it in data.real_authors_eval + data.world_facts_eval:
        assert it.paraphrased_answer is None and it.answer not in it.perturbed_answers
        assert len(it.perturbed_answers) == 4
    sums = [it for it in data.world_facts_eval if "plus" in it.question]
    assert sums and all(
        int(it.answer) == sum(int(w) for w in it.question.rstrip("?").split()[2::2]) for it in sums
    )


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"n_forget": 20}, "n_forget"), ({"facts_per_person": 0}, "facts_per_person"),
     ({"n_perturbed": 50}, "n_perturbed"), ({"seed": "x"}, "seed"), ({"n_people": 1}, "n_people")],
)
def test_embedded_rejects_bad_sizes(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        make_embedded(**kwargs)


# ---------------------------------------------------------------- TOFU loader (real files)


@pytest.fixture(scope="module")
def tofu01() -> UnlearningData:
    return load_tofu(TOFU, "forget01", task_id="1")


@needs_tofu
def test_tofu_forget01_counts(tofu01: UnlearningData) -> None:
    # The retain set is TOFU's retain99: the 4,000 items but the 40 forget items.
    assert tofu01.sizes() == {
        "forget": 40, "retain": 3960, "forget_eval": 40, "retain_eval": 400,
        "real_authors_eval": 100, "world_facts_eval": 117, "idk_answers": 100, "background": 0,
    }
    assert tofu01.forget[0].question.startswith("What is the full name of the author born in")
    assert all(it.task_id == "1" and it.idk_answer in tofu01.idk_answers for it in tofu01.forget)


@needs_tofu
def test_tofu_eval_sets_have_expected_answers(tofu01: UnlearningData) -> None:
    for it in tofu01.forget_eval + tofu01.retain_eval:
        assert it.paraphrased_answer and len(it.perturbed_answers) == 5
    for it in tofu01.real_authors_eval + tofu01.world_facts_eval:
        # Short answer ("William Shakespeare"), no paraphrase: truth ratio uses the answer.
        assert it.paraphrased_answer is None and len(it.perturbed_answers) == 3
        assert it.truth_ratio_base == it.answer and len(it.answer.split()) <= 5
    keys = {(it.question, it.answer) for it in tofu01.forget}
    assert keys == {(it.question, it.answer) for it in tofu01.forget_eval}
    assert not keys & {(it.question, it.answer) for it in tofu01.retain}


@needs_tofu
def test_tofu_drops_forget_items_from_a_retain_file() -> None:
    # retain90.json is the complement of forget10 task 1; forget05 task 3 lies inside it.
    data = load_tofu(TOFU, "forget05", task_id=3, retain_split="retain90")
    assert len(data.forget) == 200 and len(data.retain) == 3400
    keys = {(it.question, it.answer) for it in data.forget}
    assert not keys & {(it.question, it.answer) for it in data.retain + data.retain_eval}
    assert len(load_tofu(TOFU, "forget01", task_id=1, retain_split="retain90").retain) == 3600


def _keys(items) -> list[tuple[str, str]]:
    return [(it.question, it.answer) for it in items]


def _file_keys(name: str, task: str | None = None, *, but: str | None = None
               ) -> list[tuple[str, str]]:
    """(question, answer) of a TOFU file's rows: all, task ``task`` only, or all but ``but``."""
    rows = [json.loads(line) for line in (TOFU / f"{name}.json").read_text().splitlines()]
    return [(r["question"], r["answer"]) for r in rows
            if (task is None or r["task_id"] == task) and (but is None or r["task_id"] != but)]


@needs_tofu
@pytest.mark.parametrize(("split", "tasks", "base"), [
    ("forget01", ["1", "7", "10"], "retain90"), ("forget05", ["1", "2", "6"], "retain50"),
    ("forget10", ["1", "2", "9"], "retain10")])
def test_tofu_retain_counterparts(split, tasks, base) -> None:
    """auto = TOFU's retain99/95/90: the 4,000 items minus the forget task; the same set as
    DualOptim's rule (the retain file plus the forget file's other tasks)."""
    full = set(_file_keys("retain90")) | set(_file_keys("forget10", "1"))
    assert len(full) == 4000
    for task in tasks:
        data = load_tofu(TOFU, split, task_id=task)
        forget, retain = set(_keys(data.forget)), _keys(data.retain)
        assert len(retain) == len(set(retain)) == 4000 - len(forget)
        assert set(retain) == full - forget
        assert set(retain) == set(_file_keys(base)) | set(_file_keys(split, but=task))
        name = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}[split]
        assert f"+{name} " in data.source
        assert _keys(load_tofu(TOFU, split, task_id=task, retain_split=name).retain) == retain
    # For forget10 task 1 (TOFU's own forget10) the counterpart is retain90.json, in order.
    assert _keys(load_tofu(TOFU, "forget10", task_id="1").retain) == _file_keys("retain90")
    with pytest.raises(ValueError, match="'retain95' is the retain set of forget05"):
        load_tofu(TOFU, "forget01", retain_split="retain95")


@needs_tofu
def test_tofu_options() -> None:
    whole = load_tofu(TOFU.parent, "forget01", task_id=None, retain_subset=50, seed=1)
    assert len(whole.forget) == 400 and len({it.task_id for it in whole.forget}) == 10
    assert len(whole.retain) == 50
    again = load_tofu(TOFU, "forget01", task_id=None, retain_subset=50, seed=1)
    assert again.retain == whole.retain
    with pytest.raises(DataFormatError, match=r"task_id '11'.*'10'"):
        load_tofu(TOFU, "forget01", task_id=11)
    with pytest.raises(ValueError, match="forget02"):
        load_tofu(TOFU, "forget02")


# ---------------------------------------------------------------- TOFU loader (broken files)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _fake_tofu(root: Path) -> Path:
    """A minimal, valid TOFU folder (2 forget items in task 1, 1 in task 2)."""
    root.mkdir(parents=True, exist_ok=True)
    forget = [{"task_id": t, "question": f"Q{i}?", "answer": f"A{i}."}
              for i, t in enumerate(["1", "1", "2"])]
    pert = [{**r, "paraphrased_answer": f"P{i}.", "perturbed_answer": [f"X{i}.", f"Y{i}."]}
            for i, r in enumerate(forget)]
    retain = [{"question": f"R{i}?", "answer": f"B{i}."} for i in range(4)]
    retain_pert = [{**r, "paraphrased_answer": "p.", "perturbed_answer": ["x.", "y."]}
                   for r in retain[:2]]
    world = [{"question": "Capital of France?", "answer": "Paris",
              "perturbed_answer": ["Rome", "Oslo", "Lima"], "original_answer": "It is Paris."}]
    for split in ("forget01", "forget05", "forget10"):
        _write_jsonl(root / f"{split}.json", forget)
        _write_jsonl(root / f"{split}_perturbed.json", pert)
    for split in ("retain90", "retain50", "retain10"):
        _write_jsonl(root / f"{split}.json", retain)
    _write_jsonl(root / "retain_perturbed.json", retain_pert)
    _write_jsonl(root / "real_authors_perturbed.json", world)
    _write_jsonl(root / "world_facts_perturbed.json", world)
    (root / "idontknow.jsonl").write_text("I don't know.\nNo idea.\n", encoding="utf-8")
    return root


def test_fake_tofu_folder_loads(tmp_path: Path) -> None:
    data = load_tofu(_fake_tofu(tmp_path / "tofu"), task_id="1")
    assert [it.question for it in data.forget] == ["Q0?", "Q1?"]
    assert data.forget_eval[1].perturbed_answers == ["X1.", "Y1."]
    # The default retain set is everything but the forget task: the 4 retain items and
    # task 2's item; the retain file alone on request.
    assert [it.question for it in data.retain] == ["R0?", "R1?", "R2?", "R3?", "Q2?"]
    assert len(load_tofu(tmp_path, task_id="1", retain_split="retain90").retain) == 4
    assert len(data.retain_eval) == 2
    assert data.idk_answers == ["I don't know.", "No idea."]
    assert resolve_tofu_dir(tmp_path) == tmp_path / "tofu"


def test_broken_json_line_names_file_and_line(tmp_path: Path) -> None:
    root = _fake_tofu(tmp_path)
    lines = (root / "forget01.json").read_text().splitlines()
    lines[1] = lines[1][:-1]  # drop the closing brace of line 2
    (root / "forget01.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"forget01\.json:2: invalid JSON"):
        load_tofu(root)


def test_missing_key_names_file_line_and_key(tmp_path: Path) -> None:
    root = _fake_tofu(tmp_path)
    rows = [json.loads(x) for x in (root / "retain_perturbed.json").read_text().splitlines()]
    del rows[1]["paraphrased_answer"]
    _write_jsonl(root / "retain_perturbed.json", rows)
    with pytest.raises(DataFormatError, match=r"retain_perturbed\.json:2: missing key "
                                              r"'paraphrased_answer'"):
        load_tofu(root)


def test_bad_perturbed_list_names_file_and_line(tmp_path: Path) -> None:
    root = _fake_tofu(tmp_path)
    rows = [json.loads(x) for x in (root / "world_facts_perturbed.json").read_text().splitlines()]
    rows[0]["perturbed_answer"] = ["Rome", 7]
    _write_jsonl(root / "world_facts_perturbed.json", rows)
    with pytest.raises(DataFormatError,
                       match=r"world_facts_perturbed\.json:1: perturbed_answer\[1\]"):
        load_tofu(root)


def test_broken_json_array_names_position(tmp_path: Path) -> None:
    root = _fake_tofu(tmp_path)
    broken = '[\n {"question": "R?", "answer": "B."},\n {"question": }\n]'
    (root / "retain90.json").write_text(broken)
    with pytest.raises(DataFormatError, match=r"retain90\.json: invalid JSON at line 3 column"):
        load_tofu(root)
    (root / "retain90.json").write_text('[{"question": "R?", "answer": "B."}, ["not", "a dict"]]')
    with pytest.raises(DataFormatError, match=r"retain90\.json: item 1: expected a JSON object"):
        load_tofu(root)


def test_missing_and_empty_files_are_named(tmp_path: Path) -> None:
    root = _fake_tofu(tmp_path)
    (root / "idontknow.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"idontknow\.jsonl"):
        load_tofu(root)
    (root / "idontknow.jsonl").write_text('"I do not know."\n{"answer": 5}\n')
    with pytest.raises(DataFormatError, match=r"idontknow\.jsonl:2"):
        read_idk_file(root / "idontknow.jsonl")
    (root / "real_authors_perturbed.json").write_text("\n\n")
    with pytest.raises(DataFormatError, match=r"real_authors_perturbed\.json: file holds no"):
        load_tofu(root)
    shutil.rmtree(root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tofu(root)


def test_mismatched_forget_eval_is_reported(tmp_path: Path) -> None:
    root = _fake_tofu(tmp_path)
    rows = [json.loads(x) for x in (root / "forget01_perturbed.json").read_text().splitlines()]
    rows[0]["question"] = "Another question?"
    _write_jsonl(root / "forget01_perturbed.json", rows)
    with pytest.raises(DataFormatError, match=r"forget01_perturbed\.json does not match"):
        load_tofu(root)


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOOPT_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="MOOPT_DATA_DIR"):
        load_tofu(None)
    _fake_tofu(tmp_path / "tofu")
    monkeypatch.setenv("MOOPT_DATA_DIR", str(tmp_path))
    assert len(load_tofu(None, task_id="2").forget) == 1


@pytest.mark.parametrize("module", ["data", "embedded", "tofu"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(f"moopt.tasks.unlearning.{module}")
    result = doctest.testmod(mod)
    assert result.failed == 0
