"""docs/tutorial.ipynb: executed end to end with small settings (real data), and its committed outputs checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
SMALL = {"TUTORIAL_EPOCHS": "1", "TUTORIAL_SUBSET": "2000", "TUTORIAL_LR_STEPS": "30"}


def outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


def test_committed_notebook_carries_the_outputs_of_a_run():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "a code cell was not executed"
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "not executed in order, once"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for c in code for o in c["outputs"]) >= 8
    first = "".join(nb["cells"][0]["source"])
    assert "The outputs below are from a run on 20" in first and "EPOCHS=" in first and "SUBSET=" in first


@pytest.mark.slow
@pytest.mark.realdata
def test_tutorial_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TUTORIAL_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = "".join(o.get("text", "") for o in outputs(nb))
    assert "EPOCHS=1 SUBSET=2000 LR_STEPS=30" in texts
    assert images(nb) >= 8  # samples, augmentation, curves x3, confusion, mistakes, LR test, photos
    out = tmp_path / "out"
    for run in ("cnn1", "cnn2", "cnn2-lr", "mynet"):
        metrics = json.loads((out / run / "test_metrics.json").read_text())
        assert metrics["epochs_run"] == 1 and metrics["n_test"] == 10_000
    three = json.loads((out / "report-three" / "summary.json").read_text())
    assert [m["label"] for m in three["models"]] == ["cnn1", "cnn2", "mynet"] and len(three["comparisons"]) == 3
    assert (out / "report-cnn1-vs-cnn2" / "report.html").is_file()
    digits = json.loads((out / "report-digits" / "summary.json").read_text())  # section 9: the user's own images
    assert [m["label"] for m in digits["models"]] == ["cnn1", "cnn2"] and len(digits["comparisons"]) == 1
    record = json.loads((out / "digits-cnn2" / "config.json").read_text())["data"]
    assert record["kind"] == "folder" and record["size"] == [16, 16] and len(record["classes"]) == 10
    assert "trousers.jpg" in texts and "<image 1>" in texts
