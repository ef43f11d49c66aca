"""benchmarks/robustness.py: the README's robustness answer is what the committed runs give, and its verdicts
follow the seed-level test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "results_tables.py"  # the region is one of its; robustness.py renders it
sys.path.insert(0, str(ROOT / "benchmarks"))

import robustness  # noqa: E402

from fashionlab.corruptions import CORRUPTIONS, SEVERITIES  # noqa: E402


def test_check_passes_on_the_repository():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def fake_study(root: Path, flip_gain: dict[int, int]) -> None:
    """5 seeds per arm on 1,000 images: the augmented arm is right on `flip_gain[seed]` more mirrored images."""
    rng = np.random.default_rng(0)
    for arm in (robustness.WITH, robustness.WITHOUT):
        for seed in range(5):
            folder = root / robustness.STUDY / arm / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps({"augment": "flip,crop"}))
            base = rng.random(1000) < 0.9
            arrays = {"clean": base}
            for c in CORRUPTIONS:
                for s in SEVERITIES:
                    arr = base.copy()
                    if c == "horizontal_flip":
                        arr[:] = False
                        arr[:500 + (flip_gain[seed] if arm == robustness.WITH else 0)] = True
                    arrays[f"{c}/{s}"] = arr
            np.savez(folder / "corruptions.npz", **arrays)


def test_a_consistent_gain_is_helps_and_a_noisy_one_is_not(tmp_path):
    fake_study(tmp_path / "a", {s: 300 + 10 * s for s in range(5)})
    text = robustness.render(tmp_path / "a")
    row = next(line for line in text.splitlines() if line.startswith("| horizontal flip"))
    assert row.endswith("| **helps** |") and "+3" in row
    fake_study(tmp_path / "b", {0: 300, 1: -300, 2: 250, 3: -280, 4: 10})
    row = next(line for line in robustness.render(tmp_path / "b").splitlines() if line.startswith("| horizontal flip"))
    assert row.endswith("| no detectable effect |")  # large per-image differences, but not across seeds
