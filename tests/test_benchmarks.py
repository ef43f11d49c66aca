"""The benchmark scripts run and print the JSON they promise (speed itself is measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_real_run(real_data_dir, tmp_path_factory) -> Path:
    """One epoch of cnn1 on 500 real images: a run folder for the scripts that read one."""
    from fashionlab.cli import main

    run = tmp_path_factory.mktemp("bench") / "run"
    assert main(["train", "--model", "cnn1", "--epochs", "1", "--train-subset", "500", "--device", "cpu", "--quiet",
                 "--data-dir", str(real_data_dir), "--out", str(run)]) == 0
    return run


def run_script(name, *args):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.realdata
def test_time_to_accuracy_quick(real_data_dir, tmp_path):
    save = tmp_path / "results" / "fast"
    out = run_script("time_to_accuracy.py", "--quick", "--data-dir", str(real_data_dir), "--save", str(save))
    (run,) = out["fashionlab"]["runs"]
    assert run["epochs"] == 1 and 0.1 < run["test_acc"] <= 1 and run["wall_s"] > run["train_s"] > 0
    assert run["idle"] is True and out["fashionlab"]["mean_wall_s"] == run["wall_s"]
    assert len(out["reference"]["history"]) == 1
    saved = save / "seed0"
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "metrics.csv", "test_metrics.json", "timing.json"]
    timing = json.loads((saved / "timing.json").read_text())
    assert timing["wall_s"] == run["wall_s"] and timing["idle"] is True
    assert timing["command"].startswith("fashionlab train --recipe fast --seed 0 ")
    assert json.loads((saved / "test_metrics.json").read_text())["accuracy"] == run["test_acc"]
    # a second run never overwrites a saved seed: refused before any training, in one line
    before = (saved / "timing.json").read_bytes()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--quick", "--shared",
                           "--save", str(save)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "already exist" in proc.stderr and "Traceback" not in proc.stderr
    assert (saved / "timing.json").read_bytes() == before


@pytest.mark.realdata
def test_ladder_quick_times_every_rung(real_data_dir):
    out = run_script("ladder.py", "--quick", "--data-dir", str(real_data_dir))
    assert [r["rung"][0] for r in out["rungs"]] == ["1", "2", "3", "4"]
    assert all(r["seconds_per_epoch"] > 0 and r["images_per_epoch"] == 1000 for r in out["rungs"])
    assert out["rungs"][0]["loader"] and not out["rungs"][1]["loader"] and out["rungs"][2]["bf16"]
    from fashionlab.recipes import recipe_overrides

    fast = out["rungs"][3]
    assert fast["model"] == "fastnet" and fast["batch_size"] == recipe_overrides("fast")["batch_size"]


def test_throughput_quick():
    out = run_script("throughput.py", "--quick")
    assert out["results"] and all(r["train_img_s"] > 0 and r["inference_img_s"] > 0 for r in out["results"])
    assert out["peak_rss_mb"] > 0


def test_throughput_measures_thread_counts_and_conv_backends_and_names_the_cpu():
    out = run_script("throughput.py", "--quick", "--threads", "1,2", "--backends", "onednn,native")
    cells = {(r["threads"], r["backend"]) for r in out["results"]}
    assert cells == {(1, "onednn"), (1, "native"), (2, "onednn"), (2, "native")}
    assert all(r["train_img_s"] > 0 for r in out["results"]) and out["thread_counts"] == [1, 2]
    assert out["cpu_kind"]["model_name"] and isinstance(out["cpu_kind"]["flags"], list)


def test_throughput_reports_compile_time_apart():
    out = run_script("throughput.py", "--quick", "--compile", "--inference-only", "--precisions", "fp32",
                     "--memory-formats", "contiguous")
    (row,) = out["results"]
    assert out["compile"] is True and row["inference_compile_s"] > 0 and row["inference_img_s"] > 0
    assert row["inference_eager_img_s"] > 0  # the eager rate of the same cell, same run


@pytest.mark.realdata
def test_ablate_quick_prints_one_line_per_variant(real_data_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate.py"), "--quick", "--data-dir",
                           str(real_data_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["variant"] for r in lines] == ["baseline", "lr x2"]
    assert all(len(r["val_acc"]) == 1 and 0 < r["best_val_acc"] <= 1 for r in lines)


def test_ablate_rejects_a_malformed_variant():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate.py"), "--variant", "x={oops"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--variant" in proc.stderr


@pytest.mark.realdata
def test_photo_gap_reports_both_accuracies(real_data_dir, tiny_real_run):
    run = tiny_real_run
    out = run_script("photo_gap.py", str(run), "--n", "20", "--data-dir", str(real_data_dir))
    assert out["n"] == 20 and 0 <= out["photo_acc"] <= 1 and 0 <= out["raw_acc"] <= 1
    assert out["gap_points"] == pytest.approx(100 * (out["raw_acc"] - out["photo_acc"]), abs=0.01)


def test_throughput_int8_is_inference_only():
    out = run_script("throughput.py", "--quick", "--precisions", "int8", "--models", "cnn2", "--memory-formats",
                     "contiguous")
    (row,) = out["results"]
    assert row["precision"] == "int8" and row["inference_img_s"] > 0 and "train_img_s" not in row


@pytest.mark.realdata
def test_int8_accuracy_reports_both(real_data_dir, tiny_real_run):
    run = tiny_real_run
    out = run_script("int8_accuracy.py", str(run), "--calibration", "256", "--data-dir", str(real_data_dir))
    assert out["n_test"] == 10000 and out["fp32_acc"] > 0.5 and abs(out["int8_acc"] - out["fp32_acc"]) < 0.05


@pytest.mark.realdata
def test_tta_views_scores_every_view_set_on_validation_only(real_data_dir, tiny_real_run):
    out = run_script("tta_views.py", str(tiny_real_run), "--data-dir", str(real_data_dir))
    assert [r["views"] for r in out["results"]][:2] == ["identity", "flip (the recipes' --tta)"]
    assert all(0 <= r["val_acc"] <= 1 for r in out["results"]) and out["n_val"] == 6000
    assert out["run_settings"]["model"] == "cnn1" and out["run_settings"]["val_fraction"] == 0.1


def test_step_time_update_replaces_only_the_recipes_it_times(tmp_path):
    """--update re-times one recipe in place and keeps the others' entries (from their own sitting) as they were."""
    path = tmp_path / "step_time.json"
    other = {"step_seconds": 0.5, "batch_size": 128}
    path.write_text(json.dumps({"benchmark": "step_time", "date": "2026-11-29",
                                "recipes": {"cnn2": other, "cnn1": {"step_seconds": 9.0}}}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--recipes", "cnn1",
                           "--repeats", "1", "--warmup", "1", "--steps", "1", "--device", "cpu", "--update", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    recipes = json.loads(path.read_text())["recipes"]
    assert recipes["cnn2"] == other | {"measured": "2026-11-29"}  # its own sitting's date, not the file's new one
    assert recipes["cnn1"]["step_seconds"] != 9.0
    assert recipes["cnn1"]["measured"].endswith("UTC") and recipes["cnn1"]["settings"]["model"] == "cnn1"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--recipes", "cnn1",
                           "--update", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--update" in proc.stderr and "Traceback" not in proc.stderr


def test_make_run_times_a_make_target_in_a_fresh_clone_and_leaves_no_clone_behind():
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("fashionlab-make-*"))
    out = run_script("make_run.py", "--target", "clean")  # the cheapest target: the clone is a throwaway
    assert out["command"] == "make clean" and out["returncode"] == 0 and out["wall_s"] >= 0
    assert len(out["commit"]) == 40 and "rm -rf" in "\n".join(out["output_tail"])
    assert set(Path(tempfile.gettempdir()).glob("fashionlab-make-*")) == before


@pytest.mark.realdata
def test_ensemble_trains_members_on_one_split_and_reuses_them(real_data_dir, tmp_path):
    out = tmp_path / "ens"
    first = run_script("ensemble.py", "--quick", "--members", "2", "--out", str(out), "--data-dir", str(real_data_dir))
    assert first["member_seeds"] == [0, 1] and first["split_seed"] == 0 and first["n_val"] == 6000
    assert len(first["member_val_acc"]) == len(first["ensemble_val_acc"]) == 2
    assert first["ensemble_val_acc"][0] == first["member_val_acc"][0]
    for k in (0, 1):
        cfg = json.loads((out / "members" / f"member{k}" / "config.json").read_text())
        assert (cfg["seed"], cfg["split_seed"]) == (k, 0)
    mtime = (out / "members" / "member0" / "checkpoints" / "best.pt").stat().st_mtime_ns
    again = run_script("ensemble.py", "--quick", "--members", "2", "--out", str(out), "--data-dir", str(real_data_dir))
    assert again["ensemble_val_acc"] == first["ensemble_val_acc"]  # members reused, not retrained
    assert (out / "members" / "member0" / "checkpoints" / "best.pt").stat().st_mtime_ns == mtime


def test_ensemble_rejects_a_member_out_of_range(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ensemble.py"), "--members", "2", "--only", "2",
                           "--out", str(tmp_path / "e")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.realdata
def test_predict_speed_times_decode_and_each_batch_size(real_data_dir):
    d = run_script("predict_speed.py", "--images", "40", "--recipes", "cnn1", "--batches", "16,64", "--repeats", "1",
                   "--break-even", "8,40", "--data-dir", str(real_data_dir))
    (row,) = d["results"]
    assert d["images"] == 40 and row["recipe"] == "cnn1" and set(row["model_seconds_by_batch"]) == {"16", "64"}
    assert row["decode_seconds"] > 0 and row["predict_model_seconds"] > 0 and row["fp32_seconds"] > 0
    assert row["eager_seconds"] > 0 and row["fp32_eager_seconds"] > 0 and row["int8_seconds"] > 0
    assert set(row["break_even"]) == {"8", "40"} and all(v["eager"] > 0 and v["graph"] > 0
                                                          for v in row["break_even"].values())
    assert row["default_batch"] == 128 and d["cpu"]["model_name"]


@pytest.mark.realdata
def test_quick_epochs_trains_each_arm_on_its_share_and_records_its_best_validation_accuracy(real_data_dir):
    d = run_script("quick_epochs.py", "--models", "cnn1", "--seeds", "1", "--train-images", "400", "--data-dir",
                   str(real_data_dir))
    got = {r["arm"]: (r["epochs"], r["train_images"]) for r in d["results"]}
    assert got == {"one-epoch-all": (1, 400), "two-epochs-half": (2, 200), "two-epochs-90": (2, 360)}
    assert all(0 < r["best_val_acc"] <= 1 and r["model"] == "cnn1" and r["seed"] == 0 for r in d["results"])
    assert d["cpu"]["model_name"] and set(d["arms"]) == set(got)
