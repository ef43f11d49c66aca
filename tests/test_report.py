"""`fashionlab compare` on synthetic run folders: files, numbers, sections, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fashionlab.errors import RunError
from fashionlab.report import compare_runs, print_summary
from fashionlab.report.compare import RunResults, group_runs
from fashionlab.stats import mcnemar_exact
from report_fixtures import Dataset, make_dataset, make_run, make_runs, wrong_indices

SECTIONS = ("summary", "significance", "curves", "confusion", "per-class", "mistakes", "provenance")


def compare(runs: list[Path], out: Path, **kwargs) -> dict:
    with pytest.MonkeyPatch.context() as mp:  # synthetic files cannot match the real hashes
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        return compare_runs(runs, out, n_boot=500, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def one_seed(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, dict]:
    root = tmp_path_factory.mktemp("one-seed")
    runs = make_runs(root / "runs", data)
    return runs, root / "report", compare(runs, root / "report")


@pytest.fixture(scope="module")
def two_seeds(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, dict]:
    root = tmp_path_factory.mktemp("two-seeds")
    runs = make_runs(root / "runs", data, seeds=(1, 0))  # given unsorted: pairing must sort the seeds
    return runs, root / "report", compare(runs, root / "report")


@pytest.fixture
def fast_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip matplotlib in tests that are about something else."""
    from fashionlab.report import figures

    tiny = figures.thumbnail_png(np.zeros((2, 2), np.uint8))
    for name in ("curves_png", "confusion_png", "per_class_png"):
        monkeypatch.setattr(figures, name, lambda *args, **kwargs: tiny)


def correct(run: Path, data: Dataset) -> np.ndarray:
    return np.load(run / "test_predictions.npy") == data.labels


def test_writes_three_files_with_every_section(one_seed):
    _, out, summary = one_seed
    assert sorted(p.name for p in out.iterdir()) == [".fashionlab", "report.html", "summary.json", "summary.md"]
    assert json.loads((out / "summary.json").read_text()) == summary
    html = (out / "report.html").read_text()
    for sid in SECTIONS:
        assert re.search(rf'<section id="{sid}">\s*<h2>', html), sid
    assert "http://" not in html and "https://" not in html  # self-contained
    assert html.count("data:image/png;base64,") == 4 + 2 * 16  # 4 figures (with reliability) + 16 mistakes per model
    md = (out / "summary.md").read_text()
    assert "| cnn1 |" in md and "| cnn2 |" in md
    # one seed each: the models differ on the test set, but no word says which training choice is better
    assert "no training-choice verdict on cnn2 against cnn1: only 1 seed pair; at least 3" in md
    assert "these trained models differ on this test set" in md
    for text in (md, html):
        assert not re.search(r"\bis (better|worse) than\b|\b(helps|hurts)\b", text)


def test_one_seed_numbers(one_seed, data):
    runs, _, summary = one_seed
    assert summary["labels_available"] and summary["n_test"] == len(data.labels)
    cnn1, cnn2 = summary["models"]
    assert (cnn1["label"], cnn2["label"]) == ("cnn1", "cnn2")
    for model, run in ((cnn1, runs[0]), (cnn2, runs[1])):
        acc = correct(run, data).mean()
        assert model["accuracy"]["mean"] == pytest.approx(acc) and model["accuracy"]["sd"] == 0
        lo, hi = model["accuracy"]["ci"]
        assert lo < acc < hi
        assert model["train_val_gap"]["mean"] == pytest.approx(0.004 * 6, abs=1e-5)  # last row of metrics.csv
    assert cnn1["accuracy"]["mean"] == pytest.approx(1 - 60 / 300)
    assert cnn1["params"]["mean"] == 100_000 and cnn2["mflops"]["mean"] == 8.0
    assert cnn1["epochs_to_threshold"]["values"] == [None]  # plateaus at 88%
    history = np.loadtxt(runs[1] / "metrics.csv", delimiter=",", skiprows=1)
    assert cnn2["epochs_to_threshold"]["values"] == [int(history[history[:, 4] >= 0.9][0, 0])] == [5]
    assert cnn1["hardest_classes"][0]["f1"] <= cnn1["hardest_classes"][1]["f1"]
    assert len(cnn1["top_confusions"]) == 5

    (pair,) = summary["comparisons"]
    expected = mcnemar_exact(correct(runs[0], data), correct(runs[1], data))
    assert (pair["a"], pair["b"]) == ("cnn1", "cnn2")
    assert pair["pairs"] == [{"seed_a": 0, "seed_b": 0, "b": 10, "c": 50, "p_value": expected.p_value,
                              "significant": True}]
    assert pair["p_value"] == expected.p_value and pair["models_differ"] and not pair["significant"]
    assert pair["diff"] == pytest.approx(-40 / 300)
    assert pair["ci"][0] < pair["diff"] < pair["ci"][1] < 0
    assert pair["models_verdict"] == ("these trained models differ on this test set (cnn2 − cnn1: +13.3 points; "
                                      "McNemar p < 0.001)")
    assert pair["verdict"] == ("no training-choice verdict on cnn2 against cnn1: only 1 seed pair; at least 3 are "
                               "needed to weigh the difference against the seed-to-seed spread")
    level = pair["seed_level"]
    assert (level["n_seeds"], level["seeds"], level["effect"]) == (1, [0], pytest.approx(100 * 40 / 300))
    assert level["p"] is level["p_adjusted"] is level["ci_low"] is level["mde"] is None
    assert summary["family"] == "all-pairs" and pair["warning"] == "" and level["unpaired"] == []


def test_two_seeds_mean_sd_and_pairs(two_seeds, data):
    runs, out, summary = two_seeds
    cnn1 = summary["models"][0]
    assert cnn1["seeds"] == [0, 1]
    accs = [correct(run, data).mean() for run in runs[:2]][::-1]  # runs were made seed 1, then seed 0
    assert cnn1["accuracy"]["values"] == pytest.approx(accs)
    assert cnn1["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert cnn1["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert cnn1["train_seconds"]["values"] == [60.0, 66.0]
    (pair,) = summary["comparisons"]
    assert [(p["seed_a"], p["seed_b"]) for p in pair["pairs"]] == [(0, 0), (1, 1)]
    assert [(p["b"], p["c"]) for p in pair["pairs"]] == [(10, 50), (10, 50)]
    assert pair["p_value"] == max(p["p_value"] for p in pair["pairs"])
    mean_diff = np.mean([correct(r, data).mean() for r in runs[:2]]) - np.mean(
        [correct(r, data).mean() for r in runs[2:]])
    assert pair["diff"] == pytest.approx(mean_diff)
    assert pair["verdict"].startswith("no training-choice verdict") and "only 2 seed pairs" in pair["verdict"]
    assert pair["models_verdict"].startswith("these trained models differ") and "2/2 significant" in \
        pair["models_verdict"]
    assert pair["seed_level"]["differences"] == pytest.approx([100 * 40 / 300] * 2)
    html = (out / "report.html").read_text()
    assert all(f'<section id="{sid}">' in html for sid in SECTIONS)
    assert "intersection–union" in html


def test_print_summary(one_seed):
    from rich.console import Console

    console = Console(record=True, width=200)
    print_summary(one_seed[2], console)
    text = console.export_text()
    assert "cnn1" in text and "not reached" in text and "no training-choice verdict" in text
    assert "these trained models differ on this test set" in " ".join(text.split())


def test_different_test_data_refused(data, tmp_path):
    runs = make_runs(tmp_path, data, models=("cnn1",))
    other = make_run(tmp_path, data, model="cnn2", seed=0, wrong=wrong_indices(300, "cnn2", 0),
                     test_sha256="0" * 64 + ":" + "1" * 64)
    with pytest.raises(RunError, match="different test data") as e:
        compare([*runs, other], tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_missing_or_unevaluated_run_refused(data, tmp_path):
    (run,) = make_runs(tmp_path, data, models=("cnn1",))
    with pytest.raises(RunError, match="no such folder"):
        compare([run, tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "bare").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        compare([run, tmp_path / "bare"], tmp_path / "out")
    (run / "test_metrics.json").unlink()
    with pytest.raises(RunError, match=r"has no test_metrics.json: run `fashionlab evaluate .*` first"):
        compare([run], tmp_path / "out")
    with pytest.raises(RunError, match="given twice"):
        compare([run, run], tmp_path / "out")


@pytest.mark.parametrize("change, needle", [
    ({"n_test": "many"}, "n_test must be a positive integer, got 'many'"),
    ({"accuracy": 1.5}, "accuracy and macro_f1 must be numbers in [0, 1]"),
    ({"confusion_matrix": [[1, 2], [3]]}, "confusion_matrix must be a square"),
    ({"per_class": ["shirt"]}, "per_class must map each class"),
    ({"mflops": "a lot"}, "mflops must be numbers"),
    ({"model": 3}, "model and test_sha256 must be strings"),
])
def test_wrong_types_in_test_metrics_are_one_line(data, tmp_path, change, needle):
    (run,) = make_runs(tmp_path, data, models=("cnn1",))
    path = run / "test_metrics.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    with pytest.raises(RunError, match=re.escape(needle)) as e:
        compare([run], tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_without_test_images_the_report_still_renders(data, tmp_path, fast_figures):
    copy = Dataset(tmp_path / "data", data.labels, data.test_sha256)
    shutil.copytree(data.path, copy.path)
    runs = make_runs(tmp_path / "runs", copy)
    shutil.rmtree(copy.path)
    summary = compare(runs, tmp_path / "out")
    assert not summary["labels_available"] and summary["comparisons"] == []
    assert summary["models"][0]["accuracy"]["mean"] == pytest.approx(0.8)  # from test_metrics.json
    assert summary["models"][0]["accuracy"]["ci"] is not None  # one run: follows from its count
    html = (tmp_path / "out" / "report.html").read_text()
    assert "could not be loaded" in html and '<section id="mistakes">' in html


def test_the_report_states_what_each_model_trained_on(one_seed):
    from fashionlab.report.tables import training_text

    runs, out, summary = one_seed
    # synthetic runs record no image counts (as runs from before data.n_train): their epochs from metrics.csv
    assert [m["training"] for m in summary["models"]] == [
        [{"epochs": 6, "n_train": None, "n_val": None, "train_subset": False, "val_subset": False}]] * 2
    assert "Trained: every run 6 epochs." in (out / "report.html").read_text()

    def run(epochs=2, n_train=46_817, n_val=6_000, train_subset=True, val_subset=False):
        return {"epochs": epochs, "n_train": n_train, "n_val": n_val, "train_subset": train_subset,
                "val_subset": val_subset}

    def said(*models):
        return training_text({"models": [{"label": label, "training": t} for label, t in models]})

    assert said(("cnn1", [run()]), ("cnn2", [run()])) == \
        "Trained: every run 2 epochs on a stratified subset of 46,817 training images, validated on 6,000."
    assert said(("cnn1", [run(1, 54_000, 1_000, False, True)])) == \
        "Trained: 1 epoch on 54,000 training images, validated on a stratified subset of 1,000."
    # early stopping, or runs of other settings: each model its own
    assert said(("cnn1", [run(), run(epochs=3)]), ("cnn2", [run()])) == \
        "Trained: cnn1 2 epochs on a stratified subset of 46,817 training images, validated on 6,000 or 3 epochs on " \
        "a stratified subset of 46,817 training images, validated on 6,000; cnn2 2 epochs on a stratified subset " \
        "of 46,817 training images, validated on 6,000."
    assert said(("cnn1", [run(n_val=None)])) == "Trained: 2 epochs on a stratified subset of 46,817 training images."
    assert training_text({"models": [{"label": "old"}]}) == ""  # a summary.json from before the field


def test_a_dataset_the_caller_holds_is_used_not_read_again(data, tmp_path, monkeypatch, fast_figures):
    """`run` hands the report the dataset it trained on: the same report, without reading the data again; a dataset
    with another test set is not used."""
    from fashionlab.data import load_fashion_mnist

    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")
    copy = Dataset(tmp_path / "data", data.labels, data.test_sha256)
    shutil.copytree(data.path, copy.path)
    runs = make_runs(tmp_path / "runs", copy)
    held = load_fashion_mnist(copy.path, download=False, progress=False)
    read = compare_runs(runs, tmp_path / "read", n_boot=200)
    shutil.rmtree(copy.path)  # reading the data again would now fail
    given = compare_runs(runs, tmp_path / "given", n_boot=200, data=held)
    assert given["labels_available"] and given["dataset"]["test_sha256"] == data.test_sha256
    assert {**given, "generated": None} == {**read, "generated": None}
    another = load_fashion_mnist(make_dataset(tmp_path / "another", seed=1).path, download=False, progress=False)
    other = compare_runs(runs, tmp_path / "other", n_boot=200, data=another)  # read from the runs' source: gone
    assert not other["labels_available"] and "no such directory" in other["labels_note"]


def test_labels_same_model_different_recipe_and_escaping(data, tmp_path, fast_figures):
    wrong = wrong_indices(300, "cnn1", 0)
    runs = [make_run(tmp_path, data, model="cnn1", seed=0, wrong=wrong, recipe=r) for r in ("fast", "<big>")]
    summary = compare(runs, tmp_path / "out")
    assert [m["label"] for m in summary["models"]] == ["cnn1 (fast)", "cnn1 (<big>)"]
    (pair,) = summary["comparisons"]  # identical predictions
    assert pair["models_verdict"].startswith("these trained models do not differ significantly")
    assert pair["seed_level"]["effect"] == 0.0 and pair["verdict"].startswith("no training-choice verdict")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "cnn1 (&lt;big&gt;)" in html and "<big>" not in html


def test_group_labels():
    def run(model: str, recipe: str | None, seed: int, path: str, **config) -> RunResults:
        return RunResults(Path(path), config | {"seed": seed, "out": path},
                          {"model": model, "recipe": recipe, "seed": seed}, {}, np.zeros(0), np.zeros(0))

    def labels(*runs: RunResults) -> list[tuple[str, list[int]]]:
        return [(g.label, [r.seed for r in g.runs]) for g in group_runs(runs)]

    assert labels(run("cnn1", None, 1, "a"), run("cnn2", None, 0, "b"), run("cnn1", None, 0, "c")) == [
        ("cnn1", [0, 1]), ("cnn2", [0])]
    assert labels(run("cnn1", "x", 0, "a"), run("cnn1", "y", 0, "b")) == [("cnn1 (x)", [0]), ("cnn1 (y)", [0])]
    # same model, recipe and seed: not replicates, told apart by folder name, then path
    assert labels(run("cnn1", None, 0, "p/a"), run("cnn1", None, 0, "q/a"), run("cnn1", None, 0, "r/b")) == [
        ("cnn1 (p/a)", [0]), ("cnn1 (q/a)", [0]), ("cnn1 (b)", [0])]
    # same model and recipe trained differently: two settings, each with its seeds, named by what differs
    old = dict(augment="flip,crop,erase", tta=False, lr=0.003)
    new = dict(augment="flip,crop", tta=True, lr=0.003)
    assert labels(run("cnn2", "cnn2", 0, "o0", **old), run("cnn2", "cnn2", 0, "n0", **new),
                  run("cnn2", "cnn2", 1, "o1", **old), run("cnn2", "cnn2", 1, "n1", **new, device="cpu")) == [
        ("cnn2 (augment=flip,crop,erase, tta=False)", [0, 1]), ("cnn2 (augment=flip,crop, tta=True)", [0, 1])]


def test_single_run(data, tmp_path, fast_figures):
    (run,) = make_runs(tmp_path, data, models=("cnn2",))
    summary = compare([run], tmp_path / "out")
    assert [m["label"] for m in summary["models"]] == ["cnn2"] and summary["comparisons"] == []
    assert "Only one model" in (tmp_path / "out" / "report.html").read_text()


def test_cmd_compare(one_seed, tmp_path, capsys, fast_figures):
    from fashionlab.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        assert main(["compare", *map(str, one_seed[0]), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out


# ---------------------------------------------------------------- seed level: three or more seeds, unequal groups


def seed_runs(root: Path, data: Dataset, errors: dict[str, dict[int, int]]) -> list[Path]:
    """Runs of cnn1 and cnn2 per seed, each wrong on the first `errors[model][seed]` images of one shuffled order,
    so that their accuracies (and the per-seed differences) are exactly what the test chooses."""
    perm = np.random.default_rng(100).permutation(len(data.labels))
    return [make_run(root, data, model=model, seed=seed, wrong=perm[:k])
            for model, by_seed in errors.items() for seed, k in by_seed.items()]


def test_three_seeds_give_a_training_choice_verdict(data, tmp_path, fast_figures):
    from scipy.stats import ttest_rel

    errors = {"cnn1": {0: 60, 1: 64, 2: 61}, "cnn2": {0: 20, 1: 21, 2: 23}}
    summary = compare(seed_runs(tmp_path / "runs", data, errors), tmp_path / "out")
    (pair,) = summary["comparisons"]
    level = pair["seed_level"]
    acc1 = [1 - errors["cnn1"][s] / 300 for s in range(3)]
    acc2 = [1 - errors["cnn2"][s] / 300 for s in range(3)]
    assert level["n_seeds"] == 3 and level["test"] == "paired t-test"
    assert level["effect"] == pytest.approx(100 * (np.mean(acc2) - np.mean(acc1)))  # B − A, in points
    assert level["p"] == pytest.approx(ttest_rel(acc2, acc1).pvalue) == level["p_adjusted"]
    assert level["ci_low"] < level["effect"] < level["ci_high"]
    assert level["significant"] and pair["significant"]
    assert pair["verdict"].startswith("cnn2 is better than cnn1: +13.4 points, p = ")
    assert "this training choice differs (seed level: 3 seed pairs, paired t-test)" in pair["verdict"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert f"| cnn1 | cnn2 | 3 | {level['effect']:+.2f} pts [{level['ci_low']:+.2f}, {level['ci_high']:+.2f}] |" in md


def test_equal_seed_differences_are_not_significant_by_accident(data, tmp_path, fast_figures):
    """Every seed pair 40 images apart: sd 0. The t-test is undefined; the old code said p = 0, "better"."""
    runs = make_runs(tmp_path / "runs", data, seeds=(0, 1, 2))
    (pair,) = compare(runs, tmp_path / "out")["comparisons"]
    level = pair["seed_level"]
    assert level["sd"] == 0 and level["p"] == 0.25 and level["test"] == "exact sign-flip test"
    assert not pair["significant"] and pair["models_differ"]
    assert pair["verdict"].startswith("no significant difference between cnn1 and cnn2 (p = 0.25)")
    assert "t-test is undefined" in pair["verdict"]


def test_not_significant_shows_the_smallest_detectable_effect(data, tmp_path, fast_figures):
    from fashionlab.stats import min_detectable_effect

    errors = {"cnn1": {0: 30, 1: 20, 2: 40}, "cnn2": {0: 28, 1: 35, 2: 25}}
    summary = compare(seed_runs(tmp_path / "runs", data, errors), tmp_path / "out")
    (pair,) = summary["comparisons"]
    level = pair["seed_level"]
    d = [100 * (errors["cnn1"][s] - errors["cnn2"][s]) / 300 for s in range(3)]
    assert level["differences"] == pytest.approx(d) and level["sd"] == pytest.approx(np.std(d, ddof=1))
    assert level["mde"] == pytest.approx(min_detectable_effect(np.std(d, ddof=1), 3))
    assert not pair["significant"]
    assert f"the smallest effect these 3 seeds could detect is {level['mde']:.2f} points" in pair["verdict"]
    assert f"{level['mde']:.2f} pts" in (tmp_path / "out" / "summary.md").read_text()


def test_seeds_pair_by_number_and_unpaired_runs_are_named(data, tmp_path, fast_figures):
    errors = {"cnn1": {0: 60, 1: 61, 2: 62, 3: 63}, "cnn2": {1: 20, 2: 22, 3: 21, 7: 24}}
    runs = seed_runs(tmp_path / "runs", data, errors)
    summary = compare(runs, tmp_path / "out")
    (pair,) = summary["comparisons"]
    assert [(p["seed_a"], p["seed_b"]) for p in pair["pairs"]] == [(1, 1), (2, 2), (3, 3)]  # by number, not rank
    assert [(p["b"], p["c"]) for p in pair["pairs"]] == [(0, 41), (0, 40), (0, 42)]
    level = pair["seed_level"]
    assert level["seeds"] == [1, 2, 3]
    assert level["differences"] == pytest.approx([100 * 41 / 300, 100 * 40 / 300, 100 * 42 / 300])
    unpaired = [str(runs[0]), str(runs[-1])]  # cnn1 seed 0, cnn2 seed 7
    assert level["unpaired"] == unpaired
    for path in unpaired:
        assert path in pair["warning"]
    assert "cnn1 seed 0" in pair["warning"] and "cnn2 seed 7" in pair["warning"]
    # the unpaired runs still count in the mean accuracies and the per-image difference of means
    assert pair["diff"] == pytest.approx(np.mean([1 - k / 300 for k in errors["cnn1"].values()])
                                         - np.mean([1 - k / 300 for k in errors["cnn2"].values()]))
    md = (tmp_path / "out" / "summary.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "**Warning:** unequal seeds in cnn1 and cnn2" in md and "Warning:</b> unequal seeds" in html
    assert "| cnn1 | cnn2 | 3 (2 unpaired) |" in md


def test_two_single_runs_with_different_seeds_still_get_mcnemar(data, tmp_path, fast_figures):
    runs = seed_runs(tmp_path / "runs", data, {"cnn1": {0: 60}, "cnn2": {5: 20}})
    (pair,) = compare(runs, tmp_path / "out")["comparisons"]
    assert [(p["seed_a"], p["seed_b"]) for p in pair["pairs"]] == [(0, 5)] and pair["models_differ"]
    assert pair["seed_level"]["n_seeds"] == 0 and pair["seed_level"]["effect"] is None
    assert pair["warning"] == "" and "no seed number is in both groups" in pair["verdict"]
