"""fashionlab.measured: measured.json's one reader and writer. The shipped file loads, the writer reproduces it
byte for byte, and a damaged file is a one-line error naming the key, in the package and at the command line."""

from __future__ import annotations

import copy
import json
from importlib.resources import files

import pytest

from fashionlab import measured
from fashionlab.errors import FashionlabError
from fashionlab.measured import Measured, Recipe, Reference, StepMachine

SHIPPED = files("fashionlab").joinpath("measured.json").read_text(encoding="utf-8")


def good() -> dict:
    """A valid file's JSON: one recipe with a CPU reference, one not timed, one not measured."""
    ref = {"seconds": 45.83, "seconds_kind": "train_seconds", "seconds_source": "docs/results/run/cnn1-seed0",
           "step_seconds": 0.027, "step_seconds_source": "docs/benchmarks/step_time.json", "batch_size": 128,
           "precision": "bf16", "machine": "a CPU", "step_machine": {"cpu": "AMD EPYC", "threads": 2, "cuda": None},
           "threads": 2, "torch": "2.x", "date": "2026-11-29 18:33 UTC"}
    timed = {"accuracy_mean": 0.9129, "accuracy_sd": 0.001323, "n_seeds": 3, "seeds": [0, 1, 2],
             "accuracy_source": "docs/results/cnn1", "seconds": 45.83, "seconds_kind": "train_seconds",
             "seconds_source": "docs/results/run/cnn1-seed0", "machine": "a CPU", "torch": "2.x", "date": "2026-11-29",
             "budget_reference": {"cpu": ref}}
    untimed = {k: v for k, v in timed.items() if k != "budget_reference"} | {
        "n_seeds": 1, "seeds": [4], "accuracy_sd": 0.0, "seconds": None, "seconds_kind": "not timed"}
    return {"generated_by": "benchmarks/results_tables.py", "recipes": {"cnn1": timed, "fast": untimed, "sota": None}}


def test_the_shipped_file_loads_typed():
    m = measured.load()
    assert isinstance(m, Measured) and m.generated_by == "benchmarks/results_tables.py"
    assert m.recipes["sota"] is None
    cnn2 = m.recipes["cnn2"]
    assert isinstance(cnn2, Recipe) and cnn2.n_seeds == len(cnn2.seeds) == 3
    assert cnn2.accuracy_source == "docs/results/cnn2" and 0.9 < cnn2.accuracy_mean < 1
    for r in m.recipes.values():
        for ref in (r.budget_reference.values() if r else ()):
            assert isinstance(ref, Reference) and isinstance(ref.step_machine, StepMachine) and ref.step_seconds > 0


def test_the_writer_reproduces_the_shipped_file_byte_for_byte():
    m = measured.load()
    assert measured.dumps(m.recipes, margin=m.budget_margin) == SHIPPED


def test_the_budget_margin_is_checked_and_optional():
    data = good()
    assert measured.parse(data).budget_margin is None  # a file without one: --budget uses no margin
    margin = {"factor": 1.2, "checks": 3, "source": "docs/benchmarks/budget_check.json", "machine": "x",
              "date": "2026-12-05"}
    assert measured.parse(data | {"budget_margin": margin}).budget_margin.factor == 1.2
    for bad, needle in (({**margin, "factor": 0.9}, "budget_margin.factor must be a finite number ≥ 1"),
                        ({**margin, "checks": 0}, "budget_margin.checks must be a whole number ≥ 1"),
                        ({k: v for k, v in margin.items() if k != "source"}, "budget_margin lacks 'source'")):
        with pytest.raises(FashionlabError, match=needle):
            measured.parse(data | {"budget_margin": bad})


def test_write_then_load_round_trips(tmp_path):
    m = measured.parse(good())
    path = tmp_path / "measured.json"
    measured.write(path, m.recipes)
    assert measured.load(path) == m
    assert json.loads(path.read_text()) == good()  # absent budget_reference stays absent, null stays null
    assert m.recipes["fast"].budget_reference == {}
    assert m.recipes["cnn1"].budget_reference["cpu"].step_machine.cuda is None


def damaged(change) -> dict:
    d = copy.deepcopy(good())
    change(d)
    return d


def cnn1(d: dict) -> dict:
    return d["recipes"]["cnn1"]


def ref(d: dict) -> dict:
    return cnn1(d)["budget_reference"]["cpu"]


def put(get, key, value):
    return lambda d: get(d).__setitem__(key, value)


def drop(get, key):
    return lambda d: get(d).pop(key)


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.pop("recipes"), "the file lacks 'recipes'"),
    (put(lambda d: d, "recipes", []), "recipes must be an object"),
    (put(lambda d: d, "generated_by", 3), "generated_by must be a string"),
    (put(lambda d: d, "extra", 1), "the file has an unexpected key 'extra'"),
    (put(lambda d: d["recipes"], "cnn1", [0.9]), "recipes.cnn1 must be an object"),
    (drop(cnn1, "seconds"), "recipes.cnn1 lacks 'seconds'"),
    (drop(cnn1, "accuracy_mean"), "recipes.cnn1 lacks 'accuracy_mean'"),
    (put(cnn1, "accuracy_mean", "0.91"), "recipes.cnn1.accuracy_mean must be a finite number"),
    (put(cnn1, "accuracy_mean", 1.5), "recipes.cnn1.accuracy_mean must be a finite number ≥ 0 and ≤ 1, not 1.5"),
    (put(cnn1, "accuracy_sd", -0.1), "recipes.cnn1.accuracy_sd must be"),
    (put(cnn1, "accuracy_mean", True), "recipes.cnn1.accuracy_mean must be"),
    (put(cnn1, "n_seeds", 2), "recipes.cnn1.n_seeds is 2 but recipes.cnn1.seeds lists 3"),
    (put(cnn1, "n_seeds", 3.0), "recipes.cnn1.n_seeds must be a whole number"),
    (put(cnn1, "seeds", "0,1,2"), "recipes.cnn1.seeds must be a list"),
    (put(cnn1, "seeds", [0, "1", 2]), "recipes.cnn1.seeds[1] must be a whole number"),
    (put(cnn1, "seconds", 0), "recipes.cnn1.seconds must be a finite number > 0 or null"),
    (put(cnn1, "seconds", "45 s"), "recipes.cnn1.seconds must be"),
    (put(cnn1, "machine", None), "recipes.cnn1.machine must be a string"),
    (put(cnn1, "colour", "red"), "recipes.cnn1 has an unexpected key 'colour'"),
    (put(cnn1, "budget_reference", {}), "recipes.cnn1.budget_reference must be a non-empty object"),
    (put(cnn1, "budget_reference", {"cpu": 1}), "recipes.cnn1.budget_reference.cpu must be an object"),
    (drop(ref, "step_seconds"), "recipes.cnn1.budget_reference.cpu lacks 'step_seconds'"),
    (put(ref, "step_seconds", 0), "recipes.cnn1.budget_reference.cpu.step_seconds must be a finite number > 0"),
    (put(ref, "batch_size", 0), "recipes.cnn1.budget_reference.cpu.batch_size must be a whole number ≥ 1"),
    (put(ref, "step_machine", {"cpu": "x", "threads": "2", "cuda": None}),
     "recipes.cnn1.budget_reference.cpu.step_machine.threads must be a whole number"),
    (drop(lambda d: ref(d)["step_machine"], "cuda"), "recipes.cnn1.budget_reference.cpu.step_machine lacks 'cuda'"),
])
def test_a_damaged_file_is_a_one_line_error_naming_the_key(tmp_path, change, needle):
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(damaged(change)))
    with pytest.raises(FashionlabError) as e:
        measured.load(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("measured.json is damaged: ") and needle in msg, msg
    assert msg.endswith("regenerate it (python benchmarks/results_tables.py) or reinstall fashionlab")


@pytest.mark.parametrize("text, needle", [
    ("", "not JSON"),
    ('{"generated_by": "x", "recipes": {', "not JSON"),
    (json.dumps(good()).replace("0.9129", "NaN"), "NaN is not a number JSON allows"),
    (json.dumps(good()).replace("45.83", "Infinity", 1), "Infinity is not a number JSON allows"),
    ("[1, 2]", "the file must be an object"),
])
def test_text_that_is_not_the_schema_is_one_line(text, needle):
    with pytest.raises(FashionlabError) as e:
        measured.loads(text)
    assert "\n" not in str(e.value) and needle in str(e.value), str(e.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(FashionlabError, match=r"^cannot read '.*absent.json': No such file or directory \(") as e:
        measured.load(tmp_path / "absent.json")
    assert "\n" not in str(e.value)


def test_the_writer_refuses_what_the_reader_would():
    recipes = measured.parse(good()).recipes
    recipes["cnn1"].seeds = [0]  # n_seeds still 3
    with pytest.raises(FashionlabError, match="recipes.cnn1.n_seeds is 3 but"):
        measured.dumps(recipes)
    recipes["cnn1"].seeds = [0, 1, 2]
    recipes["cnn1"].accuracy_mean = float("nan")
    with pytest.raises(FashionlabError, match="NaN is not a number JSON allows"):
        measured.dumps(recipes)


def test_commands_report_a_damaged_shipped_file_in_one_line(tmp_path, monkeypatch, capsys):
    """`fashionlab recipes` and `train --budget` read the file only through measured.load."""
    from fashionlab.cli import main

    bad = tmp_path / "measured.json"
    bad.write_text(json.dumps(damaged(put(cnn1, "n_seeds", "3"))))
    real = measured.load
    monkeypatch.setattr(measured, "load", lambda path=None: real(bad if path is None else path))
    assert main(["recipes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: measured.json is damaged: recipes.cnn1.n_seeds") and len(err.splitlines()) == 1
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--budget", "1h", "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "measured.json is damaged" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
