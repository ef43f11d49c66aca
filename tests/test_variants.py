"""`fashionlab run --variant`: which choices matter, with Holm-corrected significance across many groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from fashionlab.cli import main
from fashionlab.errors import ConfigError
from fashionlab.pipeline import parse_variant, plan
from fashionlab.stats import holm, paired_t

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import make_dataset, make_run, wrong_indices  # noqa: E402


@pytest.mark.parametrize("text, name, options", [
    ("no-aug=augment=none", "no-aug", {"augment": "none"}),
    ("fc=augment=flip,crop,dropout=0.1", "fc", {"augment": "flip,crop", "dropout": 0.1}),
    ("no-bn=bn=false", "no-bn", {"extra": {"bn": False}}),
    ("w=width=64,lr=3e-3,tta=true", "w", {"extra": {"width": 64}, "lr": 3e-3, "tta": True}),
    ('j=extra={"bn": false},label-smoothing=0', "j", {"extra": {"bn": False}, "label_smoothing": 0}),
])
def test_parse_variant(text, name, options):
    assert parse_variant(text) == (name, options)


@pytest.mark.parametrize("text, needle", [
    ("no-aug", "expected NAME=KEY=VALUE"),
    ("=augment=none", "expected NAME=KEY=VALUE"),
    ("x=augment", "is not KEY=VALUE"),
    ("x=seed=3", "seed is set by the job"),
    ("x=out=/tmp/x", "out is set by the job"),
    ("bad name=lr=1", "expected NAME=KEY=VALUE"),
])
def test_parse_variant_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_variant(text)


def test_plan_builds_every_run_before_training(tmp_path):
    configs = plan(["cnn2"], ["no-bn=bn=false", "no-aug=augment=none"], seeds=2, quick=False, epochs=4,
                   out_dir=tmp_path, device="cpu", data_dir=None)
    assert [(c.label, c.seed, Path(c.out).name) for c in configs] == [
        (None, 0, "cnn2-seed0"), (None, 1, "cnn2-seed1"),
        ("no-bn", 0, "cnn2-no-bn-seed0"), ("no-bn", 1, "cnn2-no-bn-seed1"),
        ("no-aug", 0, "cnn2-no-aug-seed0"), ("no-aug", 1, "cnn2-no-aug-seed1"),
    ]
    assert all(c.epochs == 4 and c.recipe == "cnn2" for c in configs)  # the recipe, then --epochs
    assert configs[2].extra == {"bn": False} and configs[4].augment == "none" and configs[0].augment == "flip,crop"
    assert not list(tmp_path.iterdir())  # planning writes nothing


@pytest.mark.parametrize("variants, needle", [
    (["x=bn=false", "x=dropout=0"], "'x' is given twice"),
    (["x=lr=-1"], "--lr must be"),
    (["x=wings=3"], "does not take these options"),
])
def test_plan_refuses_bad_variants(tmp_path, variants, needle):
    with pytest.raises(ConfigError, match=needle):
        plan(["cnn2"], variants, seeds=1, quick=False, epochs=None, out_dir=tmp_path, device="cpu", data_dir=None)


def test_run_with_variants_end_to_end(tmp_path, synthetic_env, capsys):
    out = tmp_path / "job"
    code = main(["run", "--models", "cnn2", "--seeds", "2", "--epochs", "1", "--device", "cpu", "--out", str(out),
                 "--variant", "no-bn=bn=false", "--variant", "no-aug=augment=none,dropout=0"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn2", "no-bn", "no-aug"]
    assert summary["base"] == "cnn2"
    changed = {m["label"]: m["changed"] for m in summary["models"]}
    assert changed["no-bn"] == "extra={'bn': False}" and changed["no-aug"] == "augment=none, dropout=0.0"
    assert [v["label"] for v in summary["versus_base"]] == ["no-bn", "no-aug"]
    raw = [c["p_value"] for c in summary["comparisons"]]
    assert [c["p_adjusted"] for c in summary["comparisons"]] == pytest.approx(holm(raw))
    assert all(c["seed_test"]["n"] == 2 for c in summary["comparisons"])
    md = (out / "report" / "summary.md").read_text()
    assert "Versus the base (cnn2)" in md and "Holm" in md
    assert (out / "cnn2-no-bn-seed1" / "test_metrics.json").is_file()


def test_run_refuses_an_existing_run_folder_before_training(tmp_path, synthetic_env, capsys):
    out = tmp_path / "job"
    (out / "cnn1-seed0").mkdir(parents=True)
    (out / "cnn1-seed0" / "mine.txt").write_text("mine\n")
    assert main(["run", "--models", "cnn1", "--out", str(out)]) == 2
    assert "not empty and was not made by fashionlab" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["cnn1-seed0", "mine.txt"]


def test_holm_matches_the_definition():
    p = [0.01, 0.04, 0.03, 0.5]
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = list(rng.random(rng.integers(1, 8)) ** 3)
        adj = holm(p)
        assert all(r <= a <= min(1, len(p) * r) + 1e-12 for r, a in zip(p, adj))  # between raw and Bonferroni
        order = np.argsort(p)
        assert np.all(np.diff(np.array(adj)[order]) >= -1e-12)  # monotone in the raw p


def test_paired_t_matches_scipy():
    a, b = [0.91, 0.915, 0.92], [0.90, 0.912, 0.905]
    assert paired_t(a, b).p_value == pytest.approx(ttest_rel(a, b).pvalue)
    assert paired_t([0.9], [0.8]).p_value is None
    assert paired_t([0.9, 0.8], [0.9, 0.8]).p_value == 1.0


@pytest.fixture(scope="module")
def four_groups(tmp_path_factory):
    from fashionlab.report import compare_runs

    root = tmp_path_factory.mktemp("four")
    data = make_dataset(root / "data")
    runs = []
    for label, model, shift in (("cnn2", "cnn2", 0), ("no-augment", "cnn2", 4), ("no-batch-norm", "cnn2", 30),
                                ("cnn1", "cnn1", 0)):
        for seed in (0, 1, 2):
            run = make_run(root / label, data, model=model, seed=seed,
                           wrong=wrong_indices(len(data.labels), model, seed + shift))
            config = json.loads((run / "config.json").read_text())
            config["label"] = None if label in ("cnn1", "cnn2") else label
            (run / "config.json").write_text(json.dumps(config))
            runs.append(run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        return compare_runs(runs, root / "report", n_boot=200)


def test_terminal_tables_fit_80_columns_without_cutting_numbers(four_groups):
    from rich.console import Console

    console = Console(width=80, record=True)
    from fashionlab.report import print_summary

    print_summary(four_groups, console)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for m in four_groups["models"]:
        assert f"{100 * m['accuracy']['mean']:.2f} ± {100 * m['accuracy']['sd']:.2f}%" in text
        lo, hi = m["accuracy"]["ci"]
        assert f"{100 * lo:.2f}–{100 * hi:.2f}" in text
    flat = " ".join(text.split())
    for v in four_groups["versus_base"]:
        assert f"{100 * v['diff']:+.2f} pts" in text
        assert " ".join(v["verdict"].split()) in flat  # the whole verdict, wrapped but not cut


def test_verdicts_use_the_adjusted_p(four_groups):
    for c in four_groups["comparisons"]:
        assert c["p_adjusted"] >= c["p_value"]
        assert c["significant"] == (c["p_adjusted"] < 0.05 and c["consistent"])
        assert "Holm-adjusted over 6 pairs" in c["verdict"]


@pytest.mark.parametrize("command", [["recipes"], ["models"]])
def test_listing_tables_fit_80_columns(command):
    import os
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "fashionlab", *command], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(len(line) <= 80 for line in proc.stdout.splitlines()), proc.stdout
    assert "…" not in proc.stdout, proc.stdout


def test_compare_command_fits_80_columns(four_groups, tmp_path):
    import os
    import subprocess

    runs = [r for m in four_groups["models"] for r in m["runs"]]
    env = {**os.environ, "COLUMNS": "80", "FASHIONLAB_SKIP_VERIFY": "1"}
    proc = subprocess.run([sys.executable, "-m", "fashionlab", "compare", *runs, "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tables = proc.stdout.split("\nreport: ")[0]  # then the report's paths, as long as the user's folders
    assert all(len(line) <= 80 for line in tables.splitlines()), proc.stdout
    assert "…" not in proc.stdout and "Holm" in proc.stdout
