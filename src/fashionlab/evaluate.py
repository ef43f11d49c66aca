"""Test-set evaluation of a run folder: metrics, report, confusion matrix, curves, predictions."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab.about import CLASSES
from fashionlab.config import MAX_ENSEMBLE
from fashionlab.cpugraph import CpuGraph, onednn_fusion
from fashionlab.data import as_input
from fashionlab.data.stream import batches, materialize, ranges
from fashionlab.device import autocast, inference_precision, resolve_device
from fashionlab.errors import RunError
from fashionlab.models import (
    Classifier,
    Ensemble,
    build_model,
    count_params,
    forward_mflops,
    known_model,
    model_names,
)
from fashionlab.models.external import is_external
from fashionlab.numfmt import time_left
from fashionlab.runfolder import RunFolder

# Images per forward pass when predicting. On a CPU, small batches keep each layer's activations in cache: batch
# norm, ReLU and pooling are memory-bound, and at 1024 they took most of CNN_2's time in a profile. The batch is
# chosen from benchmarks/predict_speed.py's sweep (docs/performance.md, "Predicting a folder"), natively and with
# the instruction sets capped at AVX2. A GPU wants large batches.
CPU_INFERENCE_BATCH = 128
GPU_INFERENCE_BATCH = 1024


def inference_batch(device) -> int:
    return CPU_INFERENCE_BATCH if torch.device(device).type == "cpu" else GPU_INFERENCE_BATCH


@torch.no_grad()
def predict_logits(model: nn.Module, x_uint8: torch.Tensor, *, device, precision: str = "fp32", tta: bool = False,
                   channels_last: bool = True, batch_size: int | None = None,
                   graph: CpuGraph | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) of a Classifier for uint8 images [N, 28, 28]; with tta, averaged with the
    mirror image. batch_size: images per forward pass (default: inference_batch(device)). graph: the model's
    CpuGraph, for a model whose weights are fixed: on a CPU a built-in model predicting many images then runs as
    one fused graph (cpugraph: the same numbers to float rounding, faster; benchmarks/predict_speed.py); None:
    eagerly (training's validation, whose weights change every epoch)."""
    batch_size = batch_size or inference_batch(device)
    was_training = model.training
    model.eval()
    out, fused = [], None
    for part in batches(x_uint8, ranges(len(x_uint8), batch_size)):  # FileImages: decoded ahead by workers
        x, n = as_input(part.to(device)), len(part)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if graph is not None and not out:  # built on the first call with enough images, then reused
            fused = graph.get(x, precision, len(x_uint8))
        on_graph = fused is not None and n <= fused[1]
        if on_graph and n < fused[1]:
            # the graph sees one input shape: a new one would be profiled unfused first, so an image's logits
            # would depend on the calls before (and each shape costs memory)
            x = torch.cat([x, x.new_zeros((fused[1] - n, *x.shape[1:]))])
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        net = fused[0] if on_graph else model
        with onednn_fusion(on_graph), autocast(device, "fp32" if on_graph else precision):
            logits = net(x).float()
            if tta:
                logits = (logits + net(x.flip(3)).float()) / 2
        out.append(logits[:n].cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def load_run_model(run_dir: Path, checkpoint: str = "best", device=None, *, trust_model_code: bool = False,
                   net: nn.Module | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as (with its normalization); refuse unknown or mismatched
    models. An external model's code is imported only with trust_model_code (RunFolder.model_spec)."""
    folder = RunFolder(run_dir)
    run_dir, path = folder.path, folder.checkpoint_path(checkpoint)
    ckpt = folder.load_checkpoint(checkpoint)
    name, cfg = ckpt["model_name"], ckpt.get("config", {})
    if cfg.get("model", name) != name:
        raise RunError(f"{path} is inconsistent: weights of {name!r} but config says {cfg.get('model')!r}")
    if not known_model(name):
        raise RunError(f"{path} holds unknown model {name!r}; this fashionlab knows {', '.join(model_names())}")
    spec = folder.model_spec(trust_model_code, None if is_external(name) else {"model": name}) if net is None else None
    kwargs = dict(dropout=cfg.get("dropout"), **cfg.get("extra", {}))  # types checked by load_checkpoint
    shape, classes = input_shape(ckpt), class_names(ckpt)
    if spec is not None and not is_external(spec):  # a registered model is built for the run's data
        kwargs |= {"in_channels": shape[0], "num_classes": len(classes), "image_size": tuple(shape[1:])}
    members = cfg.get("ensemble", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= MAX_ENSEMBLE:
        raise RunError(f"{path} is damaged: its config's ensemble is {members!r}, not 1 to {MAX_ENSEMBLE} members")

    try:  # first on the meta device: no memory, so absurd sizes or bad kwargs cannot hurt
        with torch.device("meta"):
            expected = Classifier.for_channels(_architecture(spec, kwargs, members, net).to("meta"), shape[0])
        expected = expected.state_dict() if _wrapped(ckpt["model"]) else expected.net.state_dict()
    except Exception as e:  # noqa: BLE001 - a checkpoint whose own config cannot build its model is damaged
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RunError(f"{path}: model {name!r} cannot be built from its saved config: {first}") from None
    problem = state_dict_mismatch(expected, ckpt["model"])
    if problem:
        raise RunError(f"{path} does not match model {name!r}: {problem}")
    # a caller's single net receives the weights itself (the Python API's load_model(model=...)); else fresh ones
    arch = net if net is not None and members == 1 else _architecture(spec, kwargs, members, net)
    model = Classifier.for_channels(arch, shape[0])
    try:
        model.load_weights(ckpt["model"], ckpt["normalize"])
    except RuntimeError as e:
        raise RunError(f"{path} does not match model {name!r}: {str(e).splitlines()[0]}") from None
    model.to(device or "cpu").eval()
    if cfg.get("channels_last", True):
        model.to(memory_format=torch.channels_last)
    return model, ckpt


def input_shape(ckpt: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the images a checkpoint's model takes: saved with it since own data; Fashion-MNIST's before."""
    return tuple(ckpt.get("input_shape") or (1, 28, 28))


def class_names(ckpt: dict[str, Any]) -> list[str]:
    """The names of a checkpoint's outputs, in order: saved with it since own data; Fashion-MNIST's before."""
    return list(ckpt.get("classes") or CLASSES)


def _architecture(spec, kwargs: dict[str, Any], members: int, template: nn.Module | None) -> nn.Module:
    """A new instance of the run's architecture: built from its spec, or copied from the caller's `template`;
    an ensemble run's is `members` of them."""
    make = (lambda: build_model(spec, **kwargs)) if template is None else (lambda: copy.deepcopy(template))
    return make() if members == 1 else Ensemble([make() for _ in range(members)])


def _wrapped(state: dict[str, torch.Tensor]) -> bool:
    """Saved from a Classifier (keys net.*, normalize.*), not from a bare architecture (older checkpoints)."""
    return any(k.startswith("net.") for k in state)


def state_dict_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """The first difference in names or shapes between a model's state dict and a checkpoint's, or None."""
    missing = [k for k in expected if k not in got]
    if missing:
        return f"the checkpoint lacks {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        return f"the checkpoint has unexpected {unexpected[0]!r}"
    for k, t in expected.items():
        if tuple(got[k].shape) != tuple(t.shape):
            return f"{k!r} has shape {list(got[k].shape)} in the checkpoint, {list(t.shape)} in the model"
    return None


def evaluate_run(run_dir: Path | str, checkpoint: str = "best", *, data=None, device=None,
                 verbose: bool = True, trust_model_code: bool = False, net: nn.Module | None = None,
                 corruptions: bool = False) -> dict[str, Any]:
    """Evaluate a run's checkpoint once on the untouched test set and write the test artefacts; with
    `corruptions`, also on the seeded corruption suite (corruptions.json and the per-image correctness)."""
    folder = RunFolder(run_dir).require()
    run_dir, config = folder.path, folder.config()
    if data is None:
        from fashionlab.data.load import load_for_run

        data = load_for_run(config, progress=verbose)
    if corruptions:
        check_corruptions(data)
    if not isinstance(device, torch.device):  # a name, from --device or the run's config: is it available here?
        device = resolve_device(device or config["device"])
    model, ckpt = load_run_model(run_dir, checkpoint, device, trust_model_code=trust_model_code, net=net)
    precision = inference_precision(config["precision"], device)
    graph = CpuGraph(model)  # one fused graph for the test set, the validation split and the corruptions
    logits = predict_logits(model, data.test_x, device=device, precision=precision, tta=config["tta"],
                            channels_last=config["channels_last"], graph=graph)
    y = data.test_y.cpu()
    probs = F.softmax(logits, 1)
    pred = probs.argmax(1).numpy()
    metrics = test_metrics(y.numpy(), pred, config, ckpt, model, folder, data.test_sha256, checkpoint,
                           list(data.classes))
    metrics["test_loss"] = F.cross_entropy(logits, y).item()
    metrics |= calibration(logits, y, validation_logits(model, data, config, device, precision, graph))
    write_outputs(folder, y.numpy(), pred, probs.numpy(), metrics, list(data.classes))
    folder.write_test_logits(logits.numpy(), y.numpy())
    if verbose:
        print(f"test accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
              f"({checkpoint} checkpoint, epoch {metrics['best_epoch']}) -> {run_dir}")
    if corruptions:
        evaluate_corruptions(folder, model, data, device, precision, config, checkpoint, verbose, graph)
    return metrics


def check_corruptions(data) -> None:
    """--corruptions needs 28x28 test images: blur radii, shifts, pixelation and JPEG are scaled for 28 px
    (corruptions.py). Checked before any work starts."""
    size = tuple(data.test_x.shape[-2:])
    if size != (28, 28):
        raise RunError(f"--corruptions: the suite's severities are scaled for 28x28 images; this run's are "
                       f"{size[0]}x{size[1]} (train at --image-size 28 to use it)")


def evaluate_corruptions(folder: RunFolder, model: nn.Module, data, device, precision: str, config: dict,
                         checkpoint: str, verbose: bool, graph: CpuGraph | None = None) -> dict[str, Any]:
    """Accuracy on every corruption and severity of the suite (the same corrupted images for every model: seeded,
    independent of batching), predicted exactly as the clean test set is; writes corruptions.json and
    corruptions.npz (per-image correctness, what McNemar per corruption needs)."""
    from fashionlab import corruptions as suite

    def predict(x_uint8: torch.Tensor) -> torch.Tensor:
        return predict_logits(model, x_uint8, device=device, precision=precision, tta=config["tta"],
                              channels_last=config["channels_last"], graph=graph).argmax(1)

    start = time.perf_counter()

    def progress(done: int, total: int, label: str) -> None:  # one line per corruption, readable in a log too
        if verbose and label.endswith(f"/{suite.SEVERITIES[-1]}"):
            left = (time.perf_counter() - start) / done * (total - done)  # the mean pass so far, times those to go
            print(f"corruptions: {done}/{total} passes ({label.split('/')[0]} done)"
                  + (time_left(left) if done < total else ""), flush=True)

    correct = suite.corruption_correctness(predict, materialize(data.test_x), data.test_y.cpu(), progress=progress)
    summary = suite.summarize_corruptions(correct) | {"checkpoint": checkpoint, "test_sha256": data.test_sha256}
    folder.write_corruptions(summary, correct.to_arrays())
    if verbose:
        print(f"corruptions: clean {summary['clean_accuracy']:.4f}, mean over {len(summary['corruptions'])} "
              f"corruptions x 5 severities {summary['mean_corruption_accuracy']:.4f} "
              f"-> {folder.file(folder.CORRUPTIONS)}")
    return summary


def validation_logits(model: nn.Module, data, config: dict, device, precision: str, graph: CpuGraph | None = None):
    """(logits, labels) of the run's own validation split (the one its training held out: same fraction and seed),
    predicted as the test set is; None for a run without one. Calibration is fitted on these, never on test."""
    from fashionlab.data.load import split

    if not config.get("val_fraction") and getattr(data, "val_x", None) is None:
        return None
    seed = config["seed"] if config.get("split_seed") is None else config["split_seed"]
    s = split(data, config["val_fraction"], seed,  # the training's own definition (data.load.split)
              val_subset=config.get("val_subset"))  # (a run from before --val-subset has none)
    logits = predict_logits(model, s.val_x, device=device, precision=precision, tta=config["tta"],
                            channels_last=config["channels_last"], graph=graph)
    return logits, s.val_y.cpu()


def calibration(test_logits: torch.Tensor, test_y: torch.Tensor, val) -> dict[str, Any]:
    """test_metrics.json's calibration keys: nll, brier, ece (15 bins, top label) and, with a temperature fitted on
    the validation split, temperature, ece_calibrated, nll_calibrated (null, with temperature_reason, without)."""
    from fashionlab.calibration import calibration_metrics

    val_logits, val_y = val if val is not None else (None, None)
    return calibration_metrics(test_logits.double().numpy(), test_y.numpy(),
                               None if val_logits is None else val_logits.double().numpy(),
                               None if val_y is None else val_y.numpy())


def test_metrics(y: np.ndarray, pred: np.ndarray, config: dict, ckpt: dict, model: nn.Module, folder: RunFolder,
                 test_sha256: str, checkpoint: str, classes: list[str] = CLASSES) -> dict[str, Any]:
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    k = range(len(classes))
    rep = classification_report(y, pred, labels=k, target_names=classes, output_dict=True, zero_division=0)
    rows = folder.history()
    return {
        "model": config["model"], "recipe": config.get("recipe"), "seed": config.get("seed"),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=k, average="macro", zero_division=0)),
        "per_class": {c: {"precision": rep[c]["precision"], "recall": rep[c]["recall"], "f1": rep[c]["f1-score"],
                          "support": int(rep[c]["support"])} for c in classes},
        "confusion_matrix": confusion_matrix(y, pred, labels=k).tolist(),
        "n_test": int(len(y)),
        "checkpoint": checkpoint,
        "best_epoch": int(ckpt.get("epoch", 0)),
        "val_acc": checkpoint_val_acc(ckpt),
        "epochs_run": len(rows),
        "params": count_params(model),
        "mflops": round(forward_mflops(copy.deepcopy(model).to("cpu").float(), input_shape(ckpt)), 3),
        "train_seconds": round(sum(float(r["seconds"]) for r in rows), 2),
        "tta": bool(config.get("tta", False)),
        "test_sha256": test_sha256,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def checkpoint_val_acc(ckpt: dict) -> float | None:
    """The validation accuracy that chose this checkpoint (an ensemble's: the averaged members'), or None: last.pt
    and runs without a validation split have none. Kept beside the test figure so a reader sees both."""
    val = ckpt.get("val_acc")
    return float(val) if val is not None and math.isfinite(val) else None


def write_outputs(folder: RunFolder, y: np.ndarray, pred: np.ndarray, probs: np.ndarray, metrics: dict,
                  classes: list[str] = CLASSES) -> None:
    folder.write_test_outputs(metrics, pred, probs, *run_outputs(y, pred, metrics, folder.history(), classes))


def run_outputs(y: np.ndarray, pred: np.ndarray, metrics: dict, history: list[dict[str, str]],
                classes: list[str] = CLASSES) -> tuple[str, Any, Any]:
    """What a run's test evaluation writes besides numbers: its classification report (text), and its confusion
    matrix and training curves (matplotlib Figures), from the labels, predictions, metrics and metrics.csv rows."""
    from sklearn.metrics import classification_report

    report = classification_report(y, pred, labels=range(len(classes)), target_names=classes, digits=4,
                                   zero_division=0)
    return (report, confusion_figure(np.array(metrics["confusion_matrix"]), metrics["model"], classes),
            curves_figure(history, metrics["model"]))


def confusion_figure(cm: np.ndarray, title: str, classes: list[str] = CLASSES):
    """Counts and row-normalized confusion matrix side by side, as a matplotlib Figure (no pyplot state)."""
    from matplotlib.figure import Figure

    k = len(classes)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(15, 6.5))
    axes = fig.subplots(1, 2)
    for ax, mat, label, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalized (recall)", ".2f")):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        if k <= 30:  # beyond that the numbers cannot be read: the colours still show the pattern
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ticks = range(k) if k <= 60 else []
        ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, [classes[i] for i in ticks], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {label}")
    fig.tight_layout()
    return fig


def curves_figure(rows: list[dict[str, str]], title: str):
    """Loss and accuracy per epoch, train vs validation, as a matplotlib Figure (no pyplot state)."""
    from matplotlib.figure import Figure

    epochs = [int(r["epoch"]) for r in rows]
    col = {k: [float(r[k]) for r in rows] for k in ("train_loss", "val_loss", "train_acc", "val_acc")}
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for ax, kind in zip(axes, ("loss", "acc")):
        ax.plot(epochs, col[f"train_{kind}"], "--o", ms=3, label="train")
        ax.plot(epochs, col[f"val_{kind}"], "-o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if kind == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{title}: training curves")
    fig.tight_layout()
    return fig
