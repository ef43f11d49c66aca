"""The report beyond accuracy (issue 29): calibration (ECE with a bootstrap CI, before and after each run's
temperature, reliability diagrams) and robustness (per corruption, both levels of inference, Holm-adjusted), checked
against independent implementations written here and scipy; and `fashionlab run --corruptions` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from fashionlab.cli import main
from fashionlab.corruptions import CORRUPTIONS, SEVERITIES
from fashionlab.report import compare_runs
from report_fixtures import corrupted_answers, make_dataset, make_run, wrong_indices
from test_own_data import write_digits

N_TEST = 300
SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def synthetic_data_ok(monkeypatch):
    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")  # the fixtures' IDX files are not Fashion-MNIST's


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_test=N_TEST)


@pytest.fixture(scope="module")
def three_seeds(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = [make_run(root, data, model=m, seed=s, wrong=wrong_indices(N_TEST, m, s),
                     temperature=1.3 + 0.1 * s, corrupted=corrupted_answers(N_TEST, m, s))
            for m in ("cnn1", "cnn2") for s in SEEDS]
    out = root / "report"
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse fixture is per test
        mp.setenv("FASHIONLAB_SKIP_VERIFY", "1")
        summary = compare_runs(runs, out, n_boot=300)
    return runs, out, summary


# ---------------------------------------------------------------- an independent ECE


def naive_ece(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE by a loop over the bins (bin b: b/15 <= confidence < (b+1)/15, 1.0 in the last)."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, right = p.max(1), (p.argmax(1) == labels)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= 1.0))
        if inside.any():
            total += inside.sum() / len(labels) * abs(right[inside].mean() - conf[inside].mean())
    return total


def naive_holm(p: list[float]) -> list[float]:
    order = np.argsort(p)
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def logits_of(run: Path) -> np.ndarray:
    with np.load(run / "test_predictions.npz") as z:
        return z["logits"]


def test_ece_before_and_after_the_runs_own_temperature(three_seeds, data):
    runs, _, summary = three_seeds
    for model, group in zip(summary["models"], (runs[:3], runs[3:])):
        c = model["calibration"]
        assert c["available"] and c["temperature"] == pytest.approx([1.3, 1.4, 1.5])
        before = [naive_ece(logits_of(r), data.labels) for r in group]
        after = [naive_ece(logits_of(r) / t, data.labels) for r, t in zip(group, (1.3, 1.4, 1.5))]
        assert c["before"]["ece"] == pytest.approx(before, abs=1e-6)
        assert c["after"]["ece"] == pytest.approx(after, abs=1e-6)
        assert c["before"]["ece_mean"] == pytest.approx(np.mean(before), abs=1e-6)
        assert sum(c["before"]["bins"]["count"]) == 3 * N_TEST  # the seeds pooled


def test_the_ece_ci_is_a_bootstrap_of_the_seed_mean_over_shared_images(three_seeds, data):
    """Recomputed here by brute force: each resample draws image indices once and scores all three seeds on them."""
    runs, _, summary = three_seeds
    logits = [logits_of(r) for r in runs[:3]]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, N_TEST, size=(300, N_TEST))
    samples = [np.mean([naive_ece(z[i], data.labels[i]) for z in logits]) for i in idx]
    lo, hi = np.quantile(samples, [0.025, 0.975])
    assert summary["models"][0]["calibration"]["before"]["ece_ci"] == pytest.approx([lo, hi], abs=1e-9)


def test_calibration_says_why_when_it_cannot_be_computed(data, tmp_path):
    no_t = make_run(tmp_path, data, model="cnn1", seed=0, wrong=wrong_indices(N_TEST, "cnn1", 0), temperature=None)
    old = make_run(tmp_path, data, model="cnn2", seed=0, wrong=wrong_indices(N_TEST, "cnn2", 0))
    (old / "test_predictions.npz").unlink()  # evaluated before evaluation wrote logits
    summary = compare_runs([no_t, old], tmp_path / "report", n_boot=50)
    c1, c2 = (m["calibration"] for m in summary["models"])
    assert c1["available"] and c1["after"] is None and "no validation split" in c1["after_reason"]
    assert not c2["available"] and str(old) in c2["reason"] and "evaluate" in c2["reason"]
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "n/a: no temperature was fitted: no validation split" in md
    assert "## Robustness" in md and "Not measured: no corruptions.npz in" in md


# ---------------------------------------------------------------- robustness


def answers(run: Path, corruption: str) -> np.ndarray:
    with np.load(run / "corruptions.npz") as z:
        return np.concatenate([z[f"{corruption}/{s}"] for s in SEVERITIES])


def test_robustness_numbers_match_scipy(three_seeds):
    runs, _, summary = three_seeds
    r = summary["robustness"]
    assert r["available"] and r["corruptions"] == list(CORRUPTIONS) and r["base"] == "cnn1"
    tests = r["comparisons"]
    assert [t["corruption"] for t in tests] == list(CORRUPTIONS) and {(t["a"], t["b"]) for t in tests} == {
        ("cnn1", "cnn2")}
    raw_seed_p, raw_image_p = [], []
    for t in tests:
        a = [answers(run, t["corruption"]) for run in runs[:3]]
        b = [answers(run, t["corruption"]) for run in runs[3:]]
        diffs = [100 * (y.mean() - x.mean()) for x, y in zip(a, b)]
        assert t["seed_level"]["effect"] == pytest.approx(np.mean(diffs))
        expected_p = sps.ttest_rel([100 * y.mean() for y in b], [100 * x.mean() for x in a]).pvalue
        assert t["seed_level"]["p"] == pytest.approx(expected_p, rel=1e-9, abs=0)
        raw_seed_p.append(expected_p)
        pair_p = []
        for x, y, pair in zip(a, b, t["pairs"]):
            n_b, n_c = int((x & ~y).sum()), int((~x & y).sum())
            assert (pair["b"], pair["c"]) == (n_b, n_c)
            pair_p.append(sps.binomtest(min(n_b, n_c), n_b + n_c, 0.5).pvalue)
            assert pair["p_value"] == pytest.approx(pair_p[-1], rel=1e-9, abs=0)
        raw_image_p.append(max(pair_p))
    assert [t["seed_level"]["p_adjusted"] for t in tests] == pytest.approx(naive_holm(raw_seed_p), rel=1e-9, abs=0)
    assert [t["p_adjusted"] for t in tests] == pytest.approx(naive_holm(raw_image_p), rel=1e-9, abs=0)
    rotation = next(t for t in tests if t["corruption"] == "rotation")
    assert rotation["seed_level"]["significant"] and rotation["verdict"].startswith("cnn2 more robust")


def test_robustness_accuracies_and_mce(three_seeds):
    runs, _, summary = three_seeds
    r = summary["robustness"]
    cnn1, cnn2 = r["models"]
    for model, group in ((cnn1, runs[:3]), (cnn2, runs[3:])):
        for c in ("gaussian_noise", "rotation"):
            for s in SEVERITIES:
                expected = np.mean([np.load(run / "corruptions.npz")[f"{c}/{s}"].mean() for run in group])
                assert model["accuracy"][c][s] == pytest.approx(expected)
    # mCE: mean over corruptions of (summed error of the model) / (summed error of the base), the base's being 1
    ratios = [sum(1 - cnn2["accuracy"][c][s] for s in SEVERITIES) / sum(1 - cnn1["accuracy"][c][s] for s in SEVERITIES)
              for c in CORRUPTIONS]
    assert cnn1["mce"] == pytest.approx(1.0) and cnn2["mce"] == pytest.approx(np.mean(ratios))


def test_report_and_markdown_show_robustness(three_seeds):
    _, out, summary = three_seeds
    html = (out / "report.html").read_text()
    assert '<section id="robustness">' in html and '<section id="calibration">' in html
    assert html.count("data:image/png;base64,") == 5 + 2 * 16  # curves, confusion, per-class, reliability, severity
    md = (out / "summary.md").read_text()
    assert "### cnn2 against cnn1" in md and md.count("| rotation |") == 1
    assert html.count("No Grad-CAM maps of the most-confused pairs") == 2  # results without checkpoints: said why
    assert json.loads((out / "summary.json").read_text())["robustness"]["models"][0]["label"] == "cnn1"
    # better/worse words only where the seed level says so
    for t in summary["robustness"]["comparisons"]:
        assert ("more robust" in t["verdict"] or "less robust" in t["verdict"]) == t["seed_level"]["significant"]


def test_stale_or_missing_corruption_results_are_not_compared(data, tmp_path):
    runs = [make_run(tmp_path, data, model=m, seed=0, wrong=wrong_indices(N_TEST, m, 0),
                     corrupted=corrupted_answers(N_TEST, m, 0)) for m in ("cnn1", "cnn2")]
    info = json.loads((runs[1] / "corruptions.json").read_text())
    (runs[1] / "corruptions.json").write_text(json.dumps(info | {"checkpoint": "last"}))
    summary = compare_runs(runs, tmp_path / "r1", n_boot=50)
    assert not summary["robustness"]["available"] and "earlier evaluation" in summary["robustness"]["reason"]
    (runs[1] / "corruptions.npz").unlink()
    (runs[1] / "corruptions.json").unlink()
    summary = compare_runs(runs, tmp_path / "r2", n_boot=50)
    assert f"no corruptions.npz in {runs[1]}" in summary["robustness"]["reason"]


def test_a_damaged_corruptions_file_is_a_one_line_error(data, tmp_path, capsys):
    runs = [make_run(tmp_path, data, model=m, seed=0, wrong=wrong_indices(N_TEST, m, 0),
                     corrupted=corrupted_answers(N_TEST, m, 0)) for m in ("cnn1", "cnn2")]
    (runs[0] / "corruptions.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "report")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read") and "corruptions.npz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "report").exists()


# ---------------------------------------------------------------- run --corruptions, end to end


def test_run_with_corruptions_compares_robustness(tmp_path):
    root = write_digits(tmp_path / "digits", splits=False, indices=range(300))
    out = tmp_path / "study"
    assert main(["run", "--data", str(root), "--image-size", "28", "--models", "cnn1,cnn2", "--epochs", "1",
                 "--corruptions", "--out", str(out)]) == 0
    for run in ("cnn1-seed0", "cnn2-seed0"):
        saved = json.loads((out / run / "corruptions.json").read_text())
        assert set(CORRUPTIONS) <= set(saved) and saved["n_images"] == 60
    summary = json.loads((out / "report" / "summary.json").read_text())
    r = summary["robustness"]
    assert r["available"] and len(r["comparisons"]) == len(CORRUPTIONS)
    assert all(t["seed_level"]["p"] is None and t["verdict"] == "no verdict (1 seed pair; 3 needed)"
               for t in r["comparisons"])
    assert summary["models"][0]["calibration"]["available"]
    # the mistakes gallery explains the most-confused pairs with Grad-CAM from each run's checkpoint
    html = (out / "report" / "report.html").read_text()
    assert "What it looked at" in html and html.count('<img class="wide"') >= 2
    assert "No Grad-CAM maps" not in html


def test_run_corruptions_needs_28_pixel_images_and_says_so_before_training(tmp_path, capsys):
    root = write_digits(tmp_path / "digits", splits=False, indices=range(100))
    out = tmp_path / "study"
    assert main(["run", "--data", str(root), "--image-size", "16", "--models", "cnn1", "--epochs", "1",
                 "--corruptions", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scaled for 28x28 images" in err[0]
    assert not out.exists()
