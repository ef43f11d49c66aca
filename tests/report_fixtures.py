"""Synthetic run folders (docs/design.md's run-folder contract) and a synthetic IDX data set for report tests."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionlab import CLASSES


@dataclass
class Dataset:
    path: Path
    labels: np.ndarray  # int64 [n_test]
    test_sha256: str


def write_idx(path: Path, array: np.ndarray) -> bytes:
    """Uncompressed IDX of uint8 data: magic 0x00000803 (images) / 0x00000801 (labels), big-endian dims."""
    data = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(data)
    return data


def make_dataset(directory: Path, n_test: int = 300, n_train: int = 40, seed: int = 0) -> Dataset:
    """Four IDX files; each image is a bright rectangle whose shape depends on the class, plus noise."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sha = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 50, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels.tolist()):
            images[i, 4 + c : 24 - c // 2, 6 + c // 2 : 22 + c // 3] = rng.integers(150, 256, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            sha[name] = hashlib.sha256(write_idx(directory / name, array)).hexdigest()
    test_sha = f"{sha['t10k-images-idx3-ubyte']}:{sha['t10k-labels-idx1-ubyte']}"
    return Dataset(directory, labels.astype(np.int64), test_sha)


def make_run(root: Path, data: Dataset, *, model: str, seed: int, wrong: np.ndarray, recipe: str | None = None,
             final_val_acc: float = 0.93, epochs: int = 6, test_sha256: str | None = None,
             temperature: float | None = 1.5, corrupted: dict[str, np.ndarray] | None = None) -> Path:
    """An evaluated run folder whose predictions are wrong exactly at the indices `wrong`, with its test logits
    (test_predictions.npz) and `temperature` (None: no validation split); with `corrupted` ("NAME/SEVERITY" ->
    bool [n]), also an `evaluate --corruptions` result."""
    run = root / f"{model}-{recipe or 'custom'}-seed{seed}"
    run.mkdir(parents=True)
    rng = np.random.default_rng([seed, zlib.crc32(model.encode())])
    labels, n = data.labels, len(data.labels)
    pred = labels.copy()
    pred[wrong] = (labels[wrong] + rng.integers(1, 10, size=len(wrong))) % 10
    logits = rng.normal(size=(n, 10))
    logits[np.arange(n), pred] = logits.max(axis=1) + 0.2 + 3 * rng.random(n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.save(run / "test_predictions.npy", pred.astype(np.int64))
    np.save(run / "test_probs.npy", probs.astype(np.float32))

    cm = np.bincount(labels * 10 + pred, minlength=100).reshape(10, 10)
    tp = np.diag(cm).astype(float)
    precision, recall = tp / np.maximum(cm.sum(axis=0), 1), tp / np.maximum(cm.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    params = {"cnn1": 100_000, "cnn2": 400_000}.get(model, 1_000_000)

    e = np.arange(1, epochs + 1)
    val_acc = final_val_acc - (final_val_acc - 0.7) * np.exp(-(e - 1) / 1.5)
    train_acc = val_acc + 0.004 * e
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * (e - 1) / epochs))
    rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"]
    rows += [f"{i},{1 - ta:.6g},{ta:.6g},{1.1 - va:.6g},{va:.6g},{r:.6g},{10 + seed:.6g}"
             for i, ta, va, r in zip(e, train_acc, val_acc, lr)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")

    command = f"fashionlab train --model {model} --seed {seed} --epochs {epochs} --data-dir {data.path} --out {run}"
    config = {
        "model": model, "recipe": recipe, "epochs": epochs, "batch_size": 128, "lr": 1e-3, "optimizer": "adam",
        "scheduler": "cosine", "seed": seed, "out": str(run),
        "data": {"source": str(data.path), "origin": "--data-dir", "sha256": {}, "test_sha256": data.test_sha256,
                 "normalize": {"mean": 0.286, "std": 0.353}},
        "versions": {"fashionlab": "0.1.0", "torch": "2.13.0", "python": "3.11"},
        "command": command,
    }
    (run / "config.json").write_text(json.dumps(config, indent=2))
    metrics = {
        "model": model, "recipe": recipe, "seed": seed, "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(cm[i].sum())} for i, c in enumerate(CLASSES)},
        "confusion_matrix": cm.tolist(), "n_test": n, "checkpoint": "best", "best_epoch": epochs - 1,
        "params": params, "mflops": params / 50_000, "train_seconds": float(epochs * (10 + seed)), "tta": False,
        "test_sha256": test_sha256 or data.test_sha256,
    }
    metrics |= {"temperature": temperature, "temperature_reason": None if temperature else "no validation split"}
    (run / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
    np.savez_compressed(run / "test_predictions.npz", logits=logits.astype(np.float32), labels=labels,
                        indices=np.arange(n))
    if corrupted is not None:
        np.savez_compressed(run / "corruptions.npz", clean=pred == labels, seed=np.array(0), **corrupted)
        (run / "corruptions.json").write_text(json.dumps(
            {"checkpoint": "best", "test_sha256": metrics["test_sha256"], "suite_version": 1, "seed": 0}))
    return run


def wrong_indices(n: int, model: str, seed: int) -> np.ndarray:
    """cnn2 errs on perm[0:20+s], cnn1 on perm[10:70+s]: for seed 0, b = 10 and c = 50 (cnn1 as A)."""
    perm = np.random.default_rng(100).permutation(n)
    return perm[0 : 20 + seed] if model == "cnn2" else perm[10 : 70 + seed]


def corrupted_answers(n: int, model: str, seed: int) -> dict[str, np.ndarray]:
    """An `evaluate --corruptions` result: right where the clean run is right, minus a share that grows with the
    severity; cnn1 loses twice as much to rotation."""
    from fashionlab.corruptions import CORRUPTIONS, SEVERITIES

    rng = np.random.default_rng([seed, len(model)])
    clean = np.ones(n, bool)
    clean[wrong_indices(n, model, seed)] = False
    return {f"{c}/{s}": clean & (rng.random(n) > 0.05 * s * (2 if model == "cnn1" and c == "rotation" else 1))
            for c in CORRUPTIONS for s in SEVERITIES}


def make_runs(root: Path, data: Dataset, models: tuple[str, ...] = ("cnn1", "cnn2"),
              seeds: tuple[int, ...] = (0,), corruptions: bool = False) -> list[Path]:
    """One run per model and seed, model-major, cnn1 plateauing below 90% validation accuracy."""
    n = len(data.labels)
    return [make_run(root, data, model=m, seed=s, wrong=wrong_indices(n, m, s),
                     final_val_acc=0.88 if m == "cnn1" else 0.93,
                     corrupted=corrupted_answers(n, m, s) if corruptions else None)
            for m in models for s in seeds]
