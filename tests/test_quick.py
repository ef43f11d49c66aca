"""`fashionlab run --quick` is time-boxed: epochs and a stratified subset chosen from steps timed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashionlab.config import build_config
from fashionlab.study import MIN_STEPS, MIN_SUBSET, MIN_VAL, OVERHEAD, quick_choice


def configs(*models: str, batch: int = 100):
    return [build_config({"model": m, "batch_size": batch, "out": f"/tmp/x-{m}"}) for m in models]


FM = {"n_train": 54_000, "n_val": 6_000, "n_test": 10_000}  # Fashion-MNIST's split at --val-fraction 0.1


def test_all_epochs_on_all_images_when_they_fit():
    c = configs("cnn1", "cnn2")
    choice = quick_choice(c, {"cnn1": 0.001, "cnn2": 0.002}, {"cnn1": 1e-5, "cnn2": 2e-5}, minutes=2, **FM)
    assert choice["epochs"] == 3 and choice["train_subset"] is None and choice["val_subset"] is None
    # 540 steps of 1 + 2 ms per epoch, 3 epochs; 3 validations of 6,000 images, then 10,000 test and 6,000
    # validation images once more, each predicted in 0.01 + 0.02 ms
    assert choice["estimate_seconds"] == pytest.approx(OVERHEAD * 3 * 540 * 0.003 + (3 * 6000 + 16_000) * 3e-5)


def test_fewer_epochs_then_a_subset_when_the_machine_is_slow():
    c = configs("cnn1", "cnn2")
    no_predict = {"cnn1": 0.0, "cnn2": 0.0}
    # 540 steps an epoch at 0.1 + 0.1 s: 108 s of steps per epoch, with the overhead 119 s; 2 minutes fit one
    one = quick_choice(c, {"cnn1": 0.1, "cnn2": 0.1}, no_predict, minutes=2, **FM)
    assert one["epochs"] == 1 and one["train_subset"] is None
    # at 0.12 s no epoch fits: 1 epoch on 45,354 images (454 steps, 119.9 s) trains on about as many as 2 on 22,627
    # or 3 on 15,051 (within TIE), and on the most distinct images
    choice = quick_choice(c, {"cnn1": 0.12, "cnn2": 0.12}, no_predict, minutes=2, **FM)
    assert (choice["epochs"], choice["train_subset"], choice["val_subset"]) == (1, 45_354, None)
    assert 120 * 0.95 <= choice["estimate_seconds"] <= 120
    # hopelessly slow: 1 epoch of MIN_STEPS steps, and the estimate says so honestly
    slow = quick_choice(c, {"cnn1": 10.0, "cnn2": 10.0}, no_predict, minutes=2, **FM)
    assert slow["epochs"] == 1 and slow["train_subset"] == MIN_STEPS * 100 and slow["estimate_seconds"] > 120


def test_a_box_with_room_left_after_one_epoch_trains_more_epochs_on_a_subset():
    """One epoch on every image fits with a third of the box to spare: two epochs on the largest subset that fits
    train on 1.44 times as many images (benchmarks/quick_epochs.py: 2 epochs on 90% beat 1 on all in every seed)."""
    c = configs("cnn1", "cnn2")
    no_predict = {"cnn1": 0.0, "cnn2": 0.0}
    # 540 steps of 0.07 + 0.07 s with the 1.1 overhead: 83.2 s an epoch. Two epochs fit on 38,861 images (389
    # steps each, 119.8 s: 77,722 image-steps), three on 25,874 (259 steps, 119.7 s: 77,622, within TIE): the
    # more distinct images win
    choice = quick_choice(c, {"cnn1": 0.07, "cnn2": 0.07}, no_predict, minutes=2, **FM)
    assert (choice["epochs"], choice["train_subset"], choice["val_subset"]) == (2, 38_861, None)
    assert choice["estimate_seconds"] == pytest.approx(OVERHEAD * 2 * 389 * 0.14)
    # a little more room is not worth half the images: at 0.1 s one epoch on all (118.8 s) is within TIE of two
    # epochs on 27,172
    assert quick_choice(c, {"cnn1": 0.1, "cnn2": 0.1}, no_predict, minutes=2, **FM)["train_subset"] is None


def test_validation_and_the_test_evaluation_count_and_then_the_validation_split_shrinks():
    """On a slow machine predicting is a large part of the job (measured: an AVX2-capped CPU at 0.3 CPU spent
    more time validating and evaluating cnn2 with flip TTA than training it). The test set is never cut."""
    c = configs("cnn1", "cnn2")
    step, predict = {"cnn1": 0.2, "cnn2": 0.8}, {"cnn1": 0.0008, "cnn2": 0.005}
    choice = quick_choice(c, step, predict, minutes=2, **FM)
    assert MIN_VAL <= choice["val_subset"] < 6_000 and choice["train_subset"] >= MIN_SUBSET
    assert choice["epochs"] * -(-choice["train_subset"] // 100) >= MIN_STEPS
    assert choice["estimate_seconds"] <= 120
    # the estimate, by hand: training, validation after each epoch and once more, the whole test set
    e, n, v = choice["epochs"], choice["train_subset"], choice["val_subset"]
    steps = -(-n // 100)
    assert choice["estimate_seconds"] == pytest.approx(OVERHEAD * e * steps * 1.0 + 0.0058 * ((e + 1) * v + 10_000))
    # with the full validation split the same training would not fit
    assert OVERHEAD * e * steps * 1.0 + 0.0058 * ((e + 1) * 6_000 + 10_000) > 120
    # slower still: nothing fits; the smallest job, and the estimate says it is over
    worst = quick_choice(c, step, {"cnn1": 0.01, "cnn2": 0.02}, minutes=2, **FM)
    assert (worst["epochs"], worst["train_subset"], worst["val_subset"]) == (1, MIN_STEPS * 100, MIN_VAL)
    assert worst["estimate_seconds"] > 120


def test_the_time_spent_timing_counts_in_the_box():
    c = configs("cnn1", "cnn2")
    step, predict = {"cnn1": 0.01, "cnn2": 0.045}, {"cnn1": 1e-4, "cnn2": 4e-4}
    free = quick_choice(c, step, predict, minutes=2, **FM)
    spent = quick_choice(c, step, predict, minutes=2, spent=20, **FM)
    # 3 epochs: 98 s of steps and 17 s of predictions fit in 120 s, but not after 20 s of timing: then 3 epochs on
    # the 45,630 images (457 steps each) that fit
    assert (free["epochs"], free["train_subset"]) == (3, None)
    assert (spent["epochs"], spent["train_subset"]) == (3, 45_630)
    assert spent["estimate_seconds"] == pytest.approx(20 + OVERHEAD * 3 * 457 * 0.055 + 5e-4 * (4 * 6_000 + 10_000))


def test_the_corruption_suite_counts_in_the_box():
    """run --quick --corruptions: every run predicts the test set once more for each corruption and severity, and
    makes the corrupted copies first; both count, and the test set is still never cut."""
    c = configs("cnn1", "cnn2")
    step, predict = {"cnn1": 0.02, "cnn2": 0.04}, {"cnn1": 1e-5, "cnn2": 2e-5}
    clean = quick_choice(c, step, predict, minutes=2, **FM)
    suite = quick_choice(c, step, predict, minutes=2, test_passes=61, corrupt_seconds=5e-5, **FM)
    assert clean["epochs"] == 3 and clean["train_subset"] is None
    # by hand: 10,000 test images x (61 passes x 0.03 ms + 2 runs x 0.05 ms of corrupting) = 19.3 s more, so three
    # epochs on all images (540 steps of 60 ms with the 1.1 overhead each) no longer fit, and three on the 50,394
    # that do (504 steps) train on more images than two on all
    assert (suite["epochs"], suite["train_subset"]) == (3, 50_394)
    assert suite["estimate_seconds"] == pytest.approx(OVERHEAD * 3 * 504 * 0.06 + (4 * 6_000 + 61 * 10_000) * 3e-5
                                                      + 2 * 10_000 * 5e-5)
    assert clean["estimate_seconds"] + 19.3 > 120 > suite["estimate_seconds"]
    # the test evaluation and the corruptions timed apart from validation (a fused graph, faster): 10,000 x 61 at
    # 0.01 ms instead of 0.03 ms, 12.2 s less, and three epochs on all images fit again
    graph = quick_choice(c, step, predict, minutes=2, test_passes=61, corrupt_seconds=5e-5,
                         eval_predict_seconds={"cnn1": 0.5e-5, "cnn2": 0.5e-5}, **FM)
    assert (graph["epochs"], graph["train_subset"]) == (3, None)
    assert graph["estimate_seconds"] == pytest.approx(OVERHEAD * 3 * 540 * 0.06 + 3 * 6_000 * 3e-5
                                                      + (6_000 + 61 * 10_000) * 1e-5 + 2 * 10_000 * 5e-5)


def test_the_corruption_suite_is_timed_on_every_corruption_and_severity(monkeypatch):
    import torch

    import fashionlab.corruptions as corruptions
    from fashionlab.budget import measure_corruption_seconds

    seen = []
    real = corruptions.corrupt
    monkeypatch.setattr(corruptions, "corrupt", lambda x, name, severity, *a, **k: seen.append(
        (name, severity, len(x))) or real(x, name, severity, *a, **k))
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    assert measure_corruption_seconds(images) > 0
    assert sorted(seen) == sorted((n, s, 8) for n in corruptions.CORRUPTIONS for s in corruptions.SEVERITIES)


def test_run_quick_corruptions_times_the_suite_and_says_so(synthetic_env, monkeypatch):
    import fashionlab.budget as budget
    from fashionlab.data.load import load_for
    from fashionlab.study import CORRUPTION_SAMPLE, plan, time_box

    monkeypatch.setattr(budget, "measure_step_seconds", lambda cfg, **k: 0.05)
    monkeypatch.setattr(budget, "measure_predict_seconds", lambda cfg, **k: 1e-4)
    sample = []
    monkeypatch.setattr(budget, "measure_corruption_seconds", lambda x: sample.append(x.shape) or 2e-3)
    monkeypatch.setattr(budget, "measure_output_seconds", lambda *a: 0.0)
    c = plan(["cnn1"], [], seeds=1, quick=True, epochs=None, out_dir=Path("/tmp/unused"), device="cpu",
             data_dir=None)
    data, said = load_for(c[0]), []
    time_box(c, 1, data, said.append)
    assert sample == [] and "corruption" not in said[0]
    time_box(c, 1, data, said.append, corruptions=True)
    assert sample == [(CORRUPTION_SAMPLE, 28, 28)]  # real test images, as the dataset holds them
    assert ", the corruption suite included (60 corrupted copies of each test image, 2 ms an image to make), in " \
           "about" in said[1]
    # the job's start, its imports and the reading of the data count too (run_study passes when it began)
    import time

    chosen = time_box(c, 1, data, said.append, started=time.perf_counter() - 59.9)
    assert "startup, timing, figures and report included" in said[2] and "startup" not in said[0]
    assert chosen[0].epochs == 1 and "more than the box" in said[2]  # 3 epochs fit the minute (said[0]), not 0.1 s
    assert c[0].epochs == 3 and "3 epochs" in said[0]


def test_each_runs_figures_and_the_report_count_in_the_box(synthetic_env, monkeypatch):
    """What follows the predictions (each run's figures and files, the report) is counted in units of one run's
    evaluation figures timed here: FIXED_UNITS a run and a model (the report's groups)."""
    import fashionlab.budget as budget
    import fashionlab.study as study
    from fashionlab.data.load import load_for

    c = configs("cnn1", "cnn2")
    step, predict = {"cnn1": 0.02, "cnn2": 0.04}, {"cnn1": 1e-5, "cnn2": 2e-5}
    free = quick_choice(c, step, predict, minutes=2, **FM)
    fixed = quick_choice(c, step, predict, minutes=2, fixed_seconds=30, **FM)
    # by hand: 3 epochs on all (540 steps of 60 ms with the 1.1 overhead) and 34,000 predictions at 0.03 ms take
    # 107.9 s; with 30 s more, three epochs on the 44,839 images (449 steps) that fit (two on all train on 20% fewer)
    assert (free["epochs"], free["train_subset"]) == (3, None)
    assert (fixed["epochs"], fixed["train_subset"]) == (3, 44_839)
    assert fixed["estimate_seconds"] == pytest.approx(30 + OVERHEAD * 3 * 449 * 0.06 + (4 * 6_000 + 10_000) * 3e-5)

    monkeypatch.setattr(budget, "measure_step_seconds", lambda cfg, **k: 0.05)
    monkeypatch.setattr(budget, "measure_predict_seconds", lambda cfg, **k: 1e-4)
    timed, seen = [], {}
    monkeypatch.setattr(budget, "measure_output_seconds", lambda classes, n, epochs: timed.append((classes, n, epochs))
                        or 0.5)
    real = study.quick_choice
    monkeypatch.setattr(study, "quick_choice", lambda *a, **k: seen.update(k) or real(*a, **k))
    runs = study.plan(["cnn1", "cnn2"], [], seeds=3, quick=True, epochs=None, out_dir=Path("/tmp/unused"),
                      device="cpu", data_dir=None)
    data = load_for(runs[0])
    study.time_box(runs, 1, data, lambda line: None)
    assert timed == [(list(data.classes), len(data.test_y), 3)]
    # 6 runs of 2 models
    assert seen["fixed_seconds"] == pytest.approx(0.5 * (6 * study.FIXED_UNITS["run"] + 2 * study.FIXED_UNITS["model"]))


def test_the_figure_unit_renders_what_a_run_writes(monkeypatch):
    import fashionlab.files as files
    from fashionlab.budget import measure_output_seconds

    figures = []
    real = files.figure_png
    monkeypatch.setattr(files, "figure_png", lambda fig: figures.append(fig) or real(fig))
    classes = [f"class {i}" for i in range(7)]
    assert measure_output_seconds(classes, 500, 3) > 0
    confusion, curves = figures  # a run's confusion matrix (counts and recall) and its curves, as write_outputs draws
    assert [t.get_text() for t in confusion.axes[0].get_yticklabels()] == classes
    assert len(confusion.axes[0].texts) == 7 * 7 and list(curves.axes[0].lines[0].get_xdata()) == [1, 2, 3]


def test_subsets_stay_within_what_the_classes_allow():
    """An imbalanced dataset: a class-balanced subset can be no larger than its smallest class times the classes."""
    c = configs("cnn1")
    choice = quick_choice(c, {"cnn1": 0.5}, {"cnn1": 0.001}, minutes=1, n_train=20_000, n_val=3_000, n_test=500,
                          train_limit=1_200, val_limit=1_100)
    assert choice["train_subset"] <= 1_200 and (choice["val_subset"] or 3_000) <= 3_000
    small = quick_choice(c, {"cnn1": 0.5}, {"cnn1": 0.05}, minutes=1, n_train=20_000, n_val=3_000, n_test=500,
                         train_limit=800, val_limit=400)
    assert small["train_subset"] == 800 and small["val_subset"] == 400


def test_the_cli_says_what_it_chose_and_the_runs_follow(tmp_path, synthetic_env, capsys, monkeypatch):
    from types import SimpleNamespace

    import fashionlab.budget as budget
    import fashionlab.study as study
    from fashionlab.cli import main

    monkeypatch.setattr(budget, "measure_step_seconds", lambda cfg, **k: {"cnn1": 0.05, "cnn2": 0.2}[cfg.model])
    # the box counts the job's own start too (imports, reading the data): held at 0 s here, so the choice is the
    # timings' alone
    monkeypatch.setattr(study, "time", SimpleNamespace(perf_counter=lambda: 0.0))
    monkeypatch.setattr(budget, "measure_output_seconds", lambda *a: 0.0)  # the figures and report: counted apart
    test_sets = []
    monkeypatch.setattr(budget, "measure_predict_seconds", lambda cfg, evaluation_images=None, **k: test_sets.append(
        evaluation_images) or {"cnn1": 1e-4, "cnn2": 4e-4}[cfg.model] / (2 if evaluation_images else 1))
    out = tmp_path / "job"
    assert main(["run", "--quick", "--quick-minutes", "0.05", "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    # cnn2's recipe predicts with flip TTA, cnn1's not; the test evaluation is timed for the 200 test images
    assert test_sets == [None, 200, None, 200]
    assert "quick: one training step here takes cnn1 50 ms, cnn2 200 ms (batch 128) and predicting an image " \
           "cnn1 0.1 ms, cnn2 0.4 ms (both flip views) in validation, cnn1 0.05 ms, cnn2 0.2 ms in the test " \
           "evaluation;" in said
    assert "2 runs of 2 epochs on all 540 training images should train and evaluate in about" in said
    for model in ("cnn1", "cnn2"):
        cfg = json.loads((out / f"{model}-seed0" / "config.json").read_text())
        # 540 training images, batch 128: 5 steps an epoch x (50 + 200 ms) x 1.1 = 1.375 s an epoch, and 60
        # validation images at 0.5 ms, 0.03 s; then 60 + 200 test images at 0.25 ms, 0.07 s: in 3 s two epochs fit,
        # three not
        assert cfg["epochs"] == 2 and cfg["train_subset"] is None and cfg["val_subset"] is None
    assert main(["run", "--quick-minutes", "1"]) == 2  # without --quick


def test_steps_are_timed_on_the_datasets_images(monkeypatch):
    """--quick on your own data times the model built for its channels, size and classes, not Fashion-MNIST's."""
    import fashionlab.trainsetup as trainsetup
    from fashionlab.budget import measure_step_seconds

    seen = []
    real = trainsetup.train_step
    monkeypatch.setattr(trainsetup, "train_step", lambda model, opt, scaler, x, y, *a: seen.append(
        (tuple(x.shape), int(y.max()) if len(y) else -1, model(x).shape[1])) or real(model, opt, scaler, x, y, *a))
    cfg = build_config({"model": "cnn2", "batch_size": 64, "device": "cpu", "precision": "fp32"})
    assert measure_step_seconds(cfg, warmup=1, steps=1, shape=(3, 20, 12), n_classes=4) > 0
    assert {(s, c) for s, _, c in seen} == {((64, 3, 20, 12), 4)} and max(m for _, m, _ in seen) < 4
    seen.clear()
    measure_step_seconds(cfg, warmup=1, steps=1)
    assert {(s, c) for s, _, c in seen} == {((64, 1, 28, 28), 10)}


def test_predictions_are_timed_as_validation_predicts(monkeypatch):
    """measure_predict_seconds runs evaluate.predict_logits on images of the dataset's shape, with the run's TTA."""
    import fashionlab.evaluate as evaluate
    from fashionlab.budget import measure_predict_seconds

    seen = []
    real = evaluate.predict_logits
    monkeypatch.setattr(evaluate, "predict_logits", lambda model, x, **k: seen.append(
        (tuple(x.shape), k["tta"])) or real(model, x, **k))
    cfg = build_config({"model": "cnn1", "device": "cpu", "precision": "fp32", "tta": True})
    assert measure_predict_seconds(cfg, images=64, shape=(3, 20, 12), n_classes=4) > 0
    assert seen[-1] == ((64, 3, 20, 12), True) and all(t for _, t in seen)


def test_the_test_evaluation_is_timed_through_the_graph_evaluate_builds(monkeypatch):
    """On a CPU, evaluate predicts the test set (and the corruptions) through one fused graph (cpugraph) when it
    has at least MIN_IMAGES images: the box times that path for it, eagerly below that."""
    import fashionlab.cpugraph as cpugraph
    import fashionlab.evaluate as evaluate
    from fashionlab.budget import measure_predict_seconds

    graphs = []
    real = evaluate.predict_logits
    monkeypatch.setattr(evaluate, "predict_logits", lambda model, x, **k: graphs.append(
        k["graph"] and k["graph"].builds) or real(model, x, **k))
    cfg = build_config({"model": "cnn1", "device": "cpu", "precision": "fp32", "tta": True})
    assert measure_predict_seconds(cfg, images=64, evaluation_images=cpugraph.MIN_IMAGES) > 0
    assert graphs == [1, 1]  # built once, before the untimed and the timed call
    graphs.clear()
    measure_predict_seconds(cfg, images=64, evaluation_images=cpugraph.MIN_IMAGES - 1)
    assert graphs == [0, 0]  # too few test images for a graph: eagerly, as evaluate would


def test_a_validation_subset_is_what_validation_and_calibration_use(tmp_path, synthetic_env, monkeypatch):
    """--val-subset N: a stratified N of the validation split, recorded in config.json, and the same N images
    when `evaluate` fits the calibration temperature later."""
    import torch

    import fashionlab.evaluate as evaluate
    from fashionlab.cli import main
    from fashionlab.data.load import load_for, split

    run = tmp_path / "run"
    assert main(["train", "--model", "cnn1", "--model-arg", "width=8", "--epochs", "1", "--val-subset", "20",
                 "--device", "cpu", "--quiet", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["val_subset"] == 20 and cfg["data"]["n_val"] == 20
    data = load_for(build_config({"device": "cpu"}))
    whole, sub = split(data, 0.1, cfg["seed"]), split(data, 0.1, cfg["seed"], val_subset=20)
    assert len(sub.val_y) == 20 and torch.bincount(sub.val_y).tolist() == [2] * 10  # stratified
    rows = {bytes(x.numpy()) for x in whole.val_x}
    assert all(bytes(x.numpy()) in rows for x in sub.val_x)  # drawn from the validation split
    assert torch.equal(sub.train_x, whole.train_x)  # the training images are the same
    fitted = []
    real = evaluate.calibration
    monkeypatch.setattr(evaluate, "calibration", lambda logits, y, val: fitted.append(val[1]) or real(logits, y, val))
    assert main(["evaluate", str(run)]) == 0
    assert torch.equal(fitted[0], sub.val_y)


def test_val_subset_errors_are_one_line(tmp_path, synthetic_env, capsys):
    from fashionlab.cli import main

    for args, says in ((["--val-subset", "5"], "--val-subset must be at least 10"),
                       (["--val-subset", "100", "--val-fraction", "0"], "--val-subset needs a validation split"),
                       (["--val-subset", "100000"], "--val-subset 100000 is more than the")):
        assert main(["train", "--model", "cnn1", "--epochs", "1", "--device", "cpu", "--quiet",
                     "--out", str(tmp_path / "never"), *args]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "never").exists()


def test_quick_on_your_own_folder_with_its_own_validation_split(tmp_path, capsys):
    """--quick times the dataset's own split (its val folder here, not --val-fraction of train) and, when nothing
    fits, the subsets it takes stay within what the classes allow: the runs train, and nothing is left half-made."""
    from PIL import Image

    from fashionlab.cli import main
    from test_own_data import digits

    x, y = digits()
    root = tmp_path / "digits"
    for i in range(len(y)):
        split = ("test", "val", "train", "train", "train")[i % 5]
        (root / split / str(y[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(root / split / str(y[i]) / f"{i:04d}.png")
    out = tmp_path / "job"
    assert main(["run", "--data", str(root), "--image-size", "16", "--quick", "--quick-minutes", "0.001",
                 "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "more than the box" in said
    val_counts = [sum(1 for i in range(len(y)) if i % 5 == 1 and y[i] == c) for c in range(10)]
    train_counts = [sum(1 for i in range(len(y)) if i % 5 >= 2 and y[i] == c) for c in range(10)]
    for model in ("cnn1", "cnn2"):
        cfg = json.loads((out / f"{model}-seed0" / "config.json").read_text())
        # the smallest job: 1 epoch on the largest class-balanced subsets (the smallest class, once per class)
        assert cfg["epochs"] == 1
        assert cfg["train_subset"] == 10 * min(train_counts) and cfg["data"]["n_train"] == 10 * min(train_counts)
        assert cfg["val_subset"] == 10 * min(val_counts) and cfg["data"]["n_val"] == 10 * min(val_counts)
    # the report states what the box chose
    trained = (f"Trained: every run 1 epoch on a stratified subset of {10 * min(train_counts):,} training images, "
               f"validated on a stratified subset of {10 * min(val_counts):,}.")
    assert trained in (out / "report" / "summary.md").read_text()
    assert trained in (out / "report" / "report.html").read_text()
    assert trained.split(",")[0] in said
