"""`fashionlab run --variant`: which choices matter, with Holm-corrected significance across many groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fashionlab.cli import main
from fashionlab.errors import ConfigError
from fashionlab.stats import holm
from fashionlab.study import parse_variant, plan

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
    ("x=augment", "--variant x: .augment.: expected KEY=VALUE"),
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
                 "--variant", "no-bn=bn=false", "--variant", "no-aug=augment=none,dropout=0", "--family", "all-pairs"])
    said = capsys.readouterr()
    assert code == 0, said.err
    # each run says where it stands in the job, and once every run left has a finished run of its kind, the time left
    heads = [line for line in said.out.splitlines() if line.startswith("== ")]
    assert [h.split(" -> ")[0] for h in heads] == [
        f"== {name} seed {seed} (run {i + 1} of 6): 1 epoch"
        for i, (name, seed) in enumerate((n, s) for n in ("cnn2", "no-bn", "no-aug") for s in (0, 1))]
    assert ["left in the runs" in h for h in heads] == [False] * 5 + [True]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn2", "no-bn", "no-aug"]
    assert summary["base"] == "cnn2"
    changed = {m["label"]: m["changed"] for m in summary["models"]}
    assert changed["no-bn"] == "extra={'bn': False}" and changed["no-aug"] == "augment=none, dropout=0.0"
    assert [v["label"] for v in summary["versus_base"]] == ["no-bn", "no-aug"]
    # --family reaches the report: all 3 pairs, where a variant study's default is the 2 against the base
    assert summary["family"] == "all-pairs"
    assert [(c["a"], c["b"]) for c in summary["comparisons"]] == [("cnn2", "no-bn"), ("cnn2", "no-aug"),
                                                                   ("no-bn", "no-aug")]
    raw = [c["p_value"] for c in summary["comparisons"]]
    assert [c["p_adjusted"] for c in summary["comparisons"]] == pytest.approx(holm_by_definition(raw))
    for c in summary["comparisons"]:  # 2 seeds: no training-choice verdict, whatever McNemar says
        assert c["seed_level"]["n_seeds"] == 2 and c["seed_level"]["p"] is None and not c["significant"]
        assert c["verdict"].startswith("no training-choice verdict") and "at least 3" in c["verdict"]
    md = (out / "report" / "summary.md").read_text()
    assert "Every pair of the 3 groups" in md and "Holm" in md
    assert (out / "cnn2-no-bn-seed1" / "test_metrics.json").is_file()


def test_the_time_left_in_the_runs_goes_by_the_finished_runs_of_each_kind():
    from fashionlab.config import build_config
    from fashionlab.study import runs_left

    c = [build_config({"model": m, "out": "/tmp/x", **({"label": label} if label else {})})
         for m, label in (("cnn1", None), ("cnn2", None), ("cnn2", "no-bn"), ("cnn2", "no-bn"))]
    assert runs_left(c, {}) == "" and runs_left([], {"cnn1": [5.0]}) == ""
    assert runs_left(c[1:], {"cnn1": [5.0], "cnn2": [40.0]}) == ""  # no-bn (cnn2 with a change) has not run
    # two no-bn runs at the mean of the finished one's seeds, and a cnn2 run: 2 x 50 + 40 s
    took = {"cnn1": [5.0], "cnn2": [40.0], "no-bn": [45.0, 55.0]}
    assert runs_left(c[1:], took) == " | ~2 min 20 s left in the runs"
    assert runs_left(c[3:], took) == " | ~50 s left in the runs"


def test_run_refuses_an_existing_run_folder_before_training(tmp_path, synthetic_env, capsys):
    out = tmp_path / "job"
    (out / "cnn1-seed0").mkdir(parents=True)
    (out / "cnn1-seed0" / "mine.txt").write_text("mine\n")
    assert main(["run", "--models", "cnn1", "--out", str(out)]) == 2
    assert "not empty and was not made by fashionlab" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["cnn1-seed0", "mine.txt"]


def holm_by_definition(p: list[float]) -> list[float]:
    """Holm's adjusted p, brute force from its definition: for hypothesis i, the largest over every j with
    p_j <= p_i of min(1, (m - #{k: p_k < p_j}) p_j)."""
    m = len(p)
    return [max(min(1.0, (m - sum(q < pj for q in p)) * pj) for pj in p if pj <= pi) for pi in p]


def holm_rejects(p: list[float], alpha: float) -> set[int]:
    """Holm's step-down procedure as defined: test the smallest p against alpha / m, the next against
    alpha / (m - 1), and so on; stop at the first that fails."""
    rejected = set()
    for rank, i in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        if p[i] > alpha / (len(p) - rank):
            break
        rejected.add(i)
    return rejected


def test_holm_matches_the_definition():
    p = [0.01, 0.04, 0.03, 0.5]
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = list(rng.random(rng.integers(1, 9)) ** 3)
        if rng.random() < 0.3:  # ties
            p[-1] = p[0]
        adj = holm(p)
        assert adj == pytest.approx(holm_by_definition(p), rel=1e-12)
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
            assert {i for i, a in enumerate(adj) if a <= alpha} == holm_rejects(p, alpha)


def test_holm_by_definition_is_a_real_oracle():
    # a wrong Holm (plain Bonferroni; or step-down without the running maximum) must disagree with it
    p = [0.01, 0.011, 0.5]
    assert holm_by_definition(p) == pytest.approx([0.03, 0.03, 0.5])
    assert [min(1, 3 * x) for x in p] != pytest.approx(holm_by_definition(p))
    p = [0.02, 0.021]  # without the running max the second would get 1 * 0.021 < 2 * 0.02
    assert holm_by_definition(p) == pytest.approx([0.04, 0.04])


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
        assert f"{v['seed_level']['effect']:+.2f} pts" in text
        assert " ".join(v["verdict"].split()) in flat  # the whole verdict, wrapped but not cut
        assert " ".join(v["models_verdict"].split()) in flat


def test_a_variant_study_tests_each_group_against_the_base(four_groups):
    """Labelled groups after the first: the family is each against the base, 3 pairs, not all 6."""
    assert four_groups["family"] == "base"
    comparisons = four_groups["comparisons"]
    assert [(c["a"], c["b"]) for c in comparisons] == [("cnn2", "no-augment"), ("cnn2", "no-batch-norm"),
                                                       ("cnn2", "cnn1")]
    assert [c["p_adjusted"] for c in comparisons] == pytest.approx(holm_by_definition([c["p_value"] for c in
                                                                                        comparisons]))
    seed_p = [c["seed_level"]["p"] for c in comparisons]
    assert [c["seed_level"]["p_adjusted"] for c in comparisons] == pytest.approx(holm_by_definition(seed_p))
    for c in comparisons:
        # every seed pair differs by the same number of images: sd 0, so the exact sign-flip p, 2 / 2**3, not 0
        assert c["seed_level"]["test"] == "exact sign-flip test" and c["seed_level"]["p"] == 0.25
        assert c["significant"] == c["seed_level"]["significant"] == (c["seed_level"]["p_adjusted"] < 0.05)
        assert c["models_differ"] == (c["p_adjusted"] < 0.05 and c["consistent"])
        assert "Holm-adjusted over 3 tests" in c["verdict"] and "is better than" not in c["verdict"]


def test_family_all_pairs_on_request(four_groups):
    from fashionlab.report.compare import build_comparison

    runs = [r for m in four_groups["models"] for r in m["runs"]]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        summary = build_comparison(runs, n_boot=50, family="all-pairs").summary
        with pytest.raises(ConfigError, match="--family must be one of base, all-pairs"):
            build_comparison(runs, family="some")
    assert summary["family"] == "all-pairs" and len(summary["comparisons"]) == 6
    assert all("Holm-adjusted over 6 tests" in c["verdict"] for c in summary["comparisons"])


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
    proc = subprocess.run([sys.executable, "-m", "fashionlab", "compare", *runs, "--out", str(tmp_path / "r"),
                           "--family", "all-pairs"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tables = proc.stdout.split("\nreport: ")[0]  # then the report's paths, as long as the user's folders
    assert all(len(line) <= 80 for line in tables.splitlines()), proc.stdout
    assert "…" not in proc.stdout and "Holm" in proc.stdout
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["family"] == "all-pairs" and len(summary["comparisons"]) == 6
