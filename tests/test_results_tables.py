"""benchmarks/results_tables.py: the committed tables and measured.json are what the committed data gives.

These tests fail when someone edits a figure by hand, changes a committed result without regenerating, or
changes a recipe without re-measuring it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "results_tables.py"


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("results_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_tables"] = module
    spec.loader.exec_module(module)
    return module


def copy_docs(rt, dest: Path) -> Path:
    """The files the script checks, copied into DEST with the same layout."""
    for rel in {r.file for r in rt.REGIONS.values()} | {rt.MEASURED.relative_to(ROOT).as_posix()}:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    return dest


def region_text(rt, text: str, name: str) -> str:
    return text.split(rt.begin_marker(name), 1)[1].split(rt.end_marker(name), 1)[0]


def test_committed_tables_match_the_data(rt):
    assert rt.differences() == [], "run: python benchmarks/results_tables.py"


def test_check_command_passes_on_the_repository():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_tampered_copy_is_detected_and_named(rt, tmp_path):
    root = copy_docs(rt, tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    body = region_text(rt, text, "readme-results")
    assert "94.50 ± 0.09%" in body
    readme.write_text(text.replace(body, body.replace("94.50 ± 0.09%", "94.60 ± 0.09%")))
    results = root / "docs" / "results.md"
    results.write_text(results.read_text().replace(rt.end_marker("results-cnn2-e15"), "", 1))

    assert rt.differences(root) == ["README.md: region readme-results",
                                    f"docs/results.md: region results-cnn2-e15: expected one "
                                    f"{rt.begin_marker('results-cnn2-e15')!r} and one "
                                    f"{rt.end_marker('results-cnn2-e15')!r} line"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(root)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "region readme-results" in proc.stderr and "results-cnn2-e15" in proc.stderr


def test_rewrite_restores_a_tampered_copy(rt, tmp_path):
    root = copy_docs(rt, tmp_path)
    perf = root / "docs" / "performance.md"
    text = perf.read_text()
    perf.write_text(text.replace(region_text(rt, text, "perf-throughput"), "\nhand-typed 1.6–2.8×\n"))
    (root / rt.MEASURED.relative_to(ROOT)).write_text("{}")
    assert set(rt.differences(root)) == {"docs/performance.md: region perf-throughput",
                                         "src/fashionlab/measured.json"}
    assert rt.main(["--root", str(root)]) == 0
    assert rt.differences(root) == [] and perf.read_text() == text


def test_figures_are_formatted_from_the_run_files(rt):
    """Independently of the script: mean ± sample sd over the seed folders found, n stated."""
    found = sorted((ROOT / "docs/results/cnn2").glob("seed*/test_metrics.json"))
    accs = [json.loads(p.read_text())["accuracy"] for p in found]
    expected = (f"{100 * statistics.mean(accs):.2f} ± {100 * statistics.stdev(accs):.2f}% "
                f"(n = {len(accs)} seeds: {', '.join(str(i) for i in range(len(accs)))})")
    assert expected in region_text(rt, (ROOT / "README.md").read_text(), "readme-results")
    assert rt.acc_text([0.9383], "n = 1, seed 0") == "93.83% (n = 1, seed 0)"


def test_measured_json_is_what_the_script_generates(rt):
    committed = (ROOT / "src" / "fashionlab" / "measured.json").read_text()
    assert committed == rt.measured_json()
    shipped = json.loads(files("fashionlab").joinpath("measured.json").read_text())  # as the package reads it
    assert shipped == json.loads(committed)
    recipes = shipped["recipes"]
    assert recipes["sota"] is None  # never trained here
    assert recipes["cnn2"]["n_seeds"] == 3 and recipes["cnn2"]["accuracy_source"] == "docs/results/cnn2"


def test_a_changed_recipe_is_no_longer_measured(rt, monkeypatch):
    from fashionlab.recipes import RECIPES

    monkeypatch.setitem(RECIPES["cnn2"], "epochs", 31)
    figures = rt.measured()
    assert figures["cnn2"] is None and figures["cnn1"] is not None


def test_recipes_command_shows_measured_figures_within_80_columns(monkeypatch, capsys):
    from fashionlab.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    recipes = json.loads(files("fashionlab").joinpath("measured.json").read_text())["recipes"]
    for name, m in recipes.items():
        row = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        if m is None:
            assert row.count("not measured") == 2
        else:
            mean, sd, n = 100 * m["accuracy_mean"], 100 * m["accuracy_sd"], m["n_seeds"]
            assert (f"{mean:.2f} ± {sd:.2f}% ({n} seeds)" if n > 1 else f"{mean:.2f}% (1 seed)") in row
            assert (f"{m['seconds']:.0f} s (" if m["seconds"] is not None else "not timed") in row


def write_seed(folder: Path, recipe: str, seed: int, accuracy: float, wall: float | None, idle: bool = True,
               **changed) -> None:
    from fashionlab.recipes import recipe_overrides

    folder.mkdir(parents=True)
    config = recipe_overrides(recipe) | changed | {"versions": {"torch": "2.x"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "test_metrics.json").write_text(json.dumps({"seed": seed, "accuracy": accuracy,
                                                           "evaluated_at": "2026-11-29T18:00:00"}))
    (folder / "metrics.csv").write_text("epoch,val_acc\n1,0.5\n")
    if wall is not None:
        (folder / "timing.json").write_text(json.dumps({"wall_s": wall, "idle": idle, "threads": 2}))


def test_a_timed_recipe_takes_accuracy_from_every_seed_and_time_from_idle_seeds(rt, tmp_path, monkeypatch):
    results = tmp_path / "docs" / "results"
    monkeypatch.setattr(rt, "ROOT", tmp_path)
    monkeypatch.setattr(rt, "RESULTS", results)
    rt.runs.cache_clear()
    try:
        write_seed(results / "fast95" / "seed0", "fast95", 0, 0.95, 1300.0, idle=False)  # shared: accuracy only
        write_seed(results / "fast95" / "seed1", "fast95", 1, 0.94, 1100.0)
        write_seed(results / "fast95" / "seed2", "fast95", 2, 0.93, 900.0, epochs=3)  # other settings: left out
        e = rt.timed_recipe("fast95")
        assert e.n_seeds == 2 and e.seeds == [0, 1] and e.accuracy_mean == pytest.approx(0.945)
        assert e.seconds == 1100.0 and "idle seeds (1)" in e.seconds_kind
        assert e.accuracy_source == e.seconds_source == "docs/results/fast95"
        write_seed(results / "fast" / "seed0", "fast", 0, 0.93, 50.0, idle=False)
        e = rt.timed_recipe("fast")
        assert e.seconds is None and e.seconds_kind.startswith("not timed")
        assert rt.reference_seconds("cpu", e) is None  # --budget never picks a recipe without an idle time
    finally:
        rt.runs.cache_clear()


def test_the_ensemble_table_compares_each_prefix_with_the_best_member(rt, tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "BENCH", tmp_path)
    d = {"recipe": "fast95", "recipe_settings": {"model": "fastnet32", "epochs": 30}, "changed": {"epochs": 20},
         "member_seeds": [0, 1, 2], "split_seed": 0, "n_val": 6000, "date": "2026-11-29",
         "member_val_acc": [0.95, 0.945, 0.951], "ensemble_val_acc": [0.95, 0.955, 0.958]}
    (tmp_path / "ensemble-fast95.json").write_text(json.dumps(d))
    rt.bench.cache_clear()  # the committed file of the same name may be cached by an earlier test
    try:
        text = rt.perf_ensembles()
    finally:
        rt.bench.cache_clear()
    assert "`fast95` as it was then (fastnet32, 30 epochs; epochs=20), members seeded [0, 1, 2]" in text
    assert "| 3 | 95.10% | 95.80% | +0.70 |" in text and "| 2 | 94.50% | 95.50% | +0.40 |" in text


# ---------------------------------------------------------------------------------------------------------
# the claims study (docs/results/claims-full/): verdicts follow the seed level, Holm over the questions asked

CLAIMS_FULL = ROOT / "docs" / "results" / "claims-full"


def claims_rows(rt) -> dict[str, list[str]]:
    """The README's claims table: arm label -> its cells."""
    body = region_text(rt, (ROOT / "README.md").read_text(), "readme-claims")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in body.splitlines()
            if line.startswith("| ") and "`" in line]
    return {row[1].split("`")[1]: row for row in rows}


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's step-down adjustment written out, independently of fashionlab.stats.holm."""
    order = sorted(range(len(p)), key=p.__getitem__)
    out, running = [0.0] * len(p), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        out[i] = running
    return out


def fake_summary(seed_p: dict[str, float | None], image_p: dict[str, float], consistent: bool = True) -> dict:
    def level(label: str) -> dict:
        p = seed_p[label]
        return {"n_seeds": 5 if p is not None else 2, "effect": -0.5, "ci_low": -0.8 if p is not None else None,
                "ci_high": -0.2 if p is not None else None, "p": p, "p_adjusted": p, "mde": 0.3, "reason": ""}

    labels = list(seed_p)
    return {"base": "cnn2", "alpha": 0.05,
            "versus_base": [{"label": lb, "p_value": image_p[lb], "seed_level": level(lb)} for lb in labels],
            "comparisons": [{"a": "cnn2", "b": lb, "consistent": consistent} for lb in labels]}


def test_a_claim_verdict_follows_the_seed_level_not_mcnemar(rt):
    s = fake_summary({"seed-only": 0.001, "models-only": 0.5}, {"seed-only": 0.9, "models-only": 1e-6})
    c = rt.claim_rows(s, ["seed-only", "models-only"])
    # removing the ingredient costs 0.5 points at the seed level: the ingredient helps, where that is significant
    assert c["seed-only"].verdict() == "helps" and not c["seed-only"].models_differ
    assert c["models-only"].verdict() == "no detectable effect" and c["models-only"].models_differ
    assert rt.verdict_text(c["seed-only"]) == "**helps**"
    assert rt.verdict_text(c["models-only"]) == "no detectable effect"
    assert rt.mde_text(c["seed-only"]) == "—" and rt.mde_text(c["models-only"]) == "0.30 pts"
    assert rt.effect_text(c["seed-only"]) == "+0.50 [+0.20, +0.80]"  # base − arm, the CI flipped with it


def test_claims_are_adjusted_over_the_questions_asked_only(rt):
    s = fake_summary({"a": 0.02, "b": 0.04, "c": 0.001}, {"a": 0.02, "b": 0.04, "c": 0.001})
    two = rt.claim_rows(s, ["a", "b"])  # c is another question (CNN_1 for scale): not in this family
    assert [two["a"].p, two["b"].p] == pytest.approx([0.04, 0.04])
    assert [two["a"].mcnemar_p, two["b"].mcnemar_p] == pytest.approx([0.04, 0.04])
    three = rt.claim_rows(s, ["a", "b", "c"])
    assert [three[k].p for k in "abc"] == pytest.approx([0.04, 0.04, 0.003])
    inconsistent = rt.claim_rows(fake_summary({"a": 0.5}, {"a": 1e-9}, consistent=False), ["a"])["a"]
    assert not inconsistent.models_differ  # the seed pairs disagree in sign: not "these models differ"


def test_fewer_than_three_seeds_give_no_verdict(rt):
    c = rt.claim_rows(fake_summary({"a": None}, {"a": 1e-9}), ["a"])["a"]
    assert c.verdict() == "no verdict" and rt.verdict_text(c) == "no verdict (only 2 seed pairs; 3 needed)"
    assert rt.seed_p_text(c) == "n/a" and c.models_differ


def test_the_committed_claims_table_follows_the_seed_level(rt):
    """Independently of the script: Holm over the 4 ingredients' seed-level p from summary.json, by hand; each
    verdict word is what that p and the effect's sign say, whatever the McNemar column says."""
    s = json.loads((CLAIMS_FULL / "summary.json").read_text())
    assert s["base"] == "cnn2" and s["family"] == "base"
    versus = {v["label"]: v for v in s["versus_base"]}
    labels = ["no-augment", "no-bn", "no-dropout", "no-schedule"]
    adjusted = dict(zip(labels, holm_by_hand([versus[lb]["seed_level"]["p"] for lb in labels])))
    rows = claims_rows(rt)
    assert sorted(rows) == sorted(labels)
    for lb in labels:
        sl, row = versus[lb]["seed_level"], rows[lb]
        assert sl["n_seeds"] == 5
        ingredient_adds = -sl["effect"]
        assert row[3].startswith(f"{ingredient_adds:+.2f}".replace("-", "−"))
        assert row[4] == ("p < 0.001" if adjusted[lb] < 0.001 else f"p = {adjusted[lb]:.3f}")
        expected = "no detectable effect"
        if adjusted[lb] < s["alpha"]:
            expected = "helps" if ingredient_adds > 0 else "hurts"
        assert row[-1].strip("*") == expected
        assert row[6].split(" ")[0] in ("yes", "no")  # the per-image result, a column of its own
    # the two levels part somewhere in this study, so the test above would catch a verdict taken from McNemar
    assert any((rows[lb][-1].strip("*") != "no detectable effect") != rows[lb][6].startswith("yes") for lb in labels)


def test_the_claims_text_states_the_study_from_its_files(rt):
    body = region_text(rt, (ROOT / "README.md").read_text(), "readme-claims")
    configs = {p.parent.parent.name: json.loads(p.read_text()) for p in CLAIMS_FULL.glob("*/seed*/config.json")}
    assert {c["tta"] for c in configs.values()} == {False} and "flip test-time augmentation off in every arm" in body
    assert f"{configs['cnn2']['epochs']} epochs, the recipe's full length" in body
    assert f"(CNN_1: its recipe's {configs['cnn1']['epochs']})" in body
    n = {arm: len(list((CLAIMS_FULL / arm).glob("seed*/test_metrics.json"))) for arm in configs}
    assert f"6 groups × {n['cnn2']} seeds" in body and set(n.values()) == {n["cnn2"]}
    gpus = {json.loads(p.read_text())["machine"]["gpu"] for p in CLAIMS_FULL.glob("study-*.json")}
    dates = {json.loads(p.read_text())["evaluated_at"][:10] for p in CLAIMS_FULL.glob("*/seed*/test_metrics.json")}
    assert f"trained on one {' / '.join(sorted(gpus))}" in body and f"on {', '.join(sorted(dates))}." in body


def test_a_summary_of_other_runs_is_refused(rt):
    s = json.loads((CLAIMS_FULL / "summary.json").read_text())
    rt.claim_runs(s)  # the committed summary is of the committed runs
    s["models"][1]["accuracy"]["values"][0] += 0.0001
    with pytest.raises(ValueError, match="not the committed runs"):
        rt.claim_runs(s)


def test_tuning_results_are_read_from_the_csv_and_bad_rows_are_refused(rt, tmp_path):
    good = ROOT / "docs" / "tuning" / "results.csv"
    rows = rt.read_tuning_results(good)
    grid = [r for r in rows if r["experiment"] == "grid"]
    assert len(grid) == 8 and all(isinstance(r["best_epoch"], int) for r in grid)
    # the sweep's best cell in the generated guide is the CSV's, independently of the script
    best = max(grid, key=lambda r: r["best_val_acc"])
    body = region_text(rt, (ROOT / "docs" / "tuning.md").read_text(), "tuning-grid")
    assert f"**{best['best_val_acc']:.4f}**" in body
    lines = good.read_text().splitlines()
    for broken, message in ((lines[1].replace(",0.8777,6,", ",0.8777,,", 1), "no best_epoch"),
                            (lines[1].replace(",0.8777,6,", ",0.8777,six,", 1), "line 2"),
                            (lines[1].replace(",0.8777,6,", ",1.8777,6,", 1), "outside 0..1"),
                            (lines[1].replace(",0.8777,6,", ",0.8777,7,", 1), "best epoch 7 of 6")):
        bad = tmp_path / "results.csv"
        bad.write_text("\n".join([lines[0], broken, *lines[2:]]) + "\n")
        with pytest.raises(ValueError, match=message):
            rt.read_tuning_results(bad)


def test_a_tuning_claim_the_data_no_longer_supports_stops_the_script(rt, monkeypatch):
    rows = [dict(r) for r in rt.tuning_rows()]
    for r in rows:  # batch 256 now wins at lr 1e-3 (0.8790 > 0.8777), still below its best: the text is false
        if r["run"] == "grid_bs256_lr1e-3":
            r["best_val_acc"] = 0.8790
    monkeypatch.setattr(rt, "tuning_rows", lambda: tuple(rows))
    with pytest.raises(ValueError, match="docs/tuning.md claims that batch 64 won at every LR"):
        rt.tuning_grid()


def test_superseded_runs_are_each_listed_with_the_commit_they_came_from(rt):
    """docs/results/superseded/ holds replaced recipe versions copied out of git history; sources.json names each."""
    folder = ROOT / "docs" / "results" / "superseded"
    src = json.loads((folder / "sources.json").read_text())
    assert {p.name for p in folder.iterdir() if p.is_dir()} == set(src["folders"])
    assert {p.name for p in folder.glob("*.json")} - {"sources.json"} == set(src["files"])
    for name, s in src["folders"].items():
        rs = rt.superseded(name)
        assert len(s["commit"]) >= 7 and [r.seed for r in rs] == [0, 1, 2]
        assert all(r.config["recipe"] == s["recipe"] for r in rs)


def test_a_performance_claim_the_data_no_longer_supports_stops_the_script(rt, monkeypatch):
    """docs/performance.md says ensembling lifted fastnet32's plateau: an ensemble file without a gain stops it."""
    real = rt.bench

    def bench(name):
        d = real(name)
        if name == "ensemble-fast95.json":
            d = d | {"ensemble_val_acc": [min(d["member_val_acc"])] * len(d["ensemble_val_acc"])}
        return d

    monkeypatch.setattr(rt, "bench", bench)
    with pytest.raises(ValueError, match="the docs claim"):
        rt.perf_method_notes()


def test_tuning_results_table_follows_results_csv(rt, tmp_path):
    # docs/tuning/results.md is rendered from results.csv: a figure edited by hand there is caught.
    root = copy_docs(rt, tmp_path)
    page = root / "docs" / "tuning" / "results.md"
    text = page.read_text()
    first = rt.tuning_experiment("grid")[0]
    row = f"| {first['setting']} | {first['best_val_acc']} |"
    assert row in region_text(rt, text, "tuning-results")
    page.write_text(text.replace(row, f"| {first['setting']} | {first['best_val_acc'] + 0.01:.4f} |"))
    assert rt.differences(root) == ["docs/tuning/results.md: region tuning-results"]


def test_the_claims_statistics_are_what_the_committed_predictions_give(real_data):
    """summary.json (which the README's claims section is rendered from) against the raw data, with scipy as the
    oracle: from each committed run's test_predictions.npy and the real test labels, the per-seed differences, the
    seed-level paired t-test and every seed pair's exact McNemar test of each arm against the base."""
    from scipy import stats

    s = json.loads((CLAIMS_FULL / "summary.json").read_text())
    assert s["test_sha256"] == real_data.test_sha256  # the labels these predictions were scored against
    y = real_data.test_y.numpy()
    correct = {arm.name: {int(p.parent.name.removeprefix("seed")): np.load(p) == y
                          for p in arm.glob("seed*/test_predictions.npy")}
               for arm in CLAIMS_FULL.iterdir() if arm.is_dir()}
    base = correct[s["base"]]
    compared = [c for c in s["comparisons"] if c["a"] == s["base"]]
    assert sorted(c["b"] for c in compared) == sorted(set(correct) - {s["base"]})
    for c in compared:
        arm, sl = correct[c["b"]], c["seed_level"]
        seeds = sorted(base)
        assert sl["seeds"] == seeds == sorted(arm)
        acc_a, acc_b = (np.array([100 * runs[k].mean() for k in seeds]) for runs in (base, arm))
        assert sl["differences"] == pytest.approx(acc_b - acc_a, abs=0.005)  # stored to 2 decimals
        assert sl["effect"] == pytest.approx(np.mean(acc_b - acc_a), abs=1e-9)
        assert sl["p"] == pytest.approx(stats.ttest_rel(acc_b, acc_a).pvalue, rel=1e-6)
        for pair in c["pairs"]:
            a, b = base[pair["seed_a"]], arm[pair["seed_b"]]
            only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
            assert {pair["b"], pair["c"]} == {only_a, only_b}
            exact = stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
            assert pair["p_value"] == pytest.approx(exact, rel=1e-9)
