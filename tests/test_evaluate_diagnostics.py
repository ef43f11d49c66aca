"""`fashionlab evaluate --corruptions`: the suite on a run's test set, written to the run folder, the same twice."""

from __future__ import annotations

import json

import numpy as np

from fashionlab.cli import main
from fashionlab.corruptions import CORRUPTIONS, SEVERITIES


def test_evaluate_corruptions_writes_accuracies_that_match_the_per_image_file(run, capsys):
    assert main(["evaluate", str(run), "--corruptions", "--device", "cpu"]) == 0
    summary = json.loads((run / "corruptions.json").read_text())
    assert summary["corruptions"] == list(CORRUPTIONS) and summary["n_images"] == 100
    correct = np.load(run / "corruptions.npz")
    test = json.loads((run / "test_metrics.json").read_text())
    assert summary["clean_accuracy"] == test["accuracy"] == correct["clean"].mean()  # the clean pass is the test set
    for name in CORRUPTIONS:
        assert sorted(summary[name]) == [str(s) for s in SEVERITIES]
        for s in SEVERITIES:
            assert summary[name][str(s)] == correct[f"{name}/{s}"].mean()
    assert summary["test_sha256"] == test["test_sha256"]
    said = capsys.readouterr().out
    assert "corruptions: clean" in said
    # one line per corruption with the time left, the last without (nothing is left)
    lines = [ln for ln in said.splitlines() if " passes (" in ln]
    assert len(lines) == len(CORRUPTIONS) and all(" left" in ln for ln in lines[:-1]) and " left" not in lines[-1]

    first = (run / "corruptions.json").read_text()
    assert main(["evaluate", str(run), "--corruptions", "--device", "cpu"]) == 0
    assert (run / "corruptions.json").read_text() == first  # seeded: the same corrupted images, the same accuracies


def test_without_the_flag_nothing_is_written(run):
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert not (run / "corruptions.json").exists() and not (run / "corruptions.npz").exists()


def test_calibration_is_fitted_on_validation_and_the_logits_are_kept(run):
    import torch
    import torch.nn.functional as F

    from fashionlab.data import load_fashion_mnist, stratified_split

    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    metrics = json.loads((run / "test_metrics.json").read_text())
    saved = np.load(run / "test_predictions.npz")
    logits, labels = torch.from_numpy(saved["logits"]).double(), torch.from_numpy(saved["labels"])
    assert saved["indices"].tolist() == list(range(100)) and logits.shape == (100, 10)
    # Every metric can be recomputed from the file: accuracy and NLL here, independently of fashionlab's code.
    assert metrics["accuracy"] == (logits.argmax(1) == labels).double().mean().item()
    assert abs(metrics["nll"] - F.cross_entropy(logits, labels).item()) < 1e-6
    # The temperature minimises the NLL of the run's validation split, not the test set's.
    config = json.loads((run / "config.json").read_text())
    data = load_fashion_mnist(config["data_dir"], verify=False, progress=False)
    _, val_idx = stratified_split(data.train_y, config["val_fraction"], config["seed"])
    from fashionlab.evaluate import load_run_model, predict_logits

    model, _ = load_run_model(run, "best", torch.device("cpu"))
    val = predict_logits(model, data.train_x[val_idx], device=torch.device("cpu"), channels_last=False).double()
    t = metrics["temperature"]
    val_nll = [F.cross_entropy(val / (t * f), data.train_y[val_idx]).item() for f in (0.9, 1.0, 1.1)]
    assert val_nll[1] <= min(val_nll) + 1e-9
    assert metrics["temperature_reason"] is None and metrics["ece_calibrated"] is not None


def test_the_python_api_reads_both(run):
    import fashionlab

    assert main(["evaluate", str(run), "--corruptions", "--device", "cpu"]) == 0
    r = fashionlab.load_run(run)
    assert r.corruptions() == json.loads((run / "corruptions.json").read_text())
    cal = r.calibration()
    assert set(cal) == set(r.CALIBRATION_KEYS) and cal["ece"] == r.test_metrics["ece"]
