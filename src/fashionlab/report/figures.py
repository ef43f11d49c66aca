"""The report's figures as PNG bytes (matplotlib's object API with the Agg renderer; no pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from fashionlab.report.compare import Group, group_confusion, per_class_stats

DPI = 110
METRIC_NAMES = {"precision": "Precision", "recall": "Recall", "f1": "F1"}


def colours(n: int) -> list[str]:
    """One colour per model, the same in every figure and table."""
    cmap = colormaps["tab10"]
    return [_hex(cmap(i % 10)) for i in range(n)]


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def seed_band(runs: Sequence, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and sd over the runs of one metrics.csv column (runs that stopped early drop out)."""
    length = max(len(r.history["epoch"]) for r in runs)
    table = np.full((len(runs), length), np.nan)
    for i, r in enumerate(runs):
        table[i, : len(r.history[key])] = r.history[key]
    present = np.isfinite(table).sum(axis=0)
    mean = np.nansum(table, axis=0) / np.maximum(present, 1)
    sd = np.sqrt(np.nansum((table - mean) ** 2, axis=0) / np.maximum(present - 1, 1))
    return np.arange(1, length + 1), np.where(present > 0, mean, np.nan), np.where(present > 1, sd, 0.0)


def curves_png(groups: Sequence[Group]) -> bytes:
    """Loss, accuracy (train dashed, validation solid) and learning rate per epoch; one colour per group, the
    mean over its seeds with a mean ± sd band."""
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    lrs = []
    for group, colour in zip(groups, colours(len(groups))):
        for ax, key, ls, lw in ((ax_loss, "train_loss", "--", 1.4), (ax_loss, "val_loss", "-", 1.8),
                                (ax_acc, "train_acc", "--", 1.4), (ax_acc, "val_acc", "-", 1.8),
                                (ax_lr, "lr", "-", 1.8)):
            epochs, mean, sd = seed_band(group.runs, key)
            ax.plot(epochs, mean, color=colour, ls=ls, lw=lw, alpha=0.9)
            if len(group.runs) > 1 and key != "lr":
                ax.fill_between(epochs, mean - sd, mean + sd, color=colour, alpha=0.18, lw=0)
        lrs += [r.history["lr"] for r in group.runs]
    lr = np.concatenate(lrs) if lrs else np.array([])
    if lr.size and lr.min() > 0 and lr.max() / lr.min() > 20:
        ax_lr.set_yscale("log")
    for ax, title in ((ax_loss, "Loss"), (ax_acc, "Accuracy"), (ax_lr, "Learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=c, lw=2.5, label=g.label) for g, c in zip(groups, colours(len(groups)))]
    handles += [Line2D([], [], color="#555", ls="--", label="train"),
                Line2D([], [], color="#555", ls="-", label="validation")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False)
    return _png(fig)


def confusion_png(groups: Sequence[Group], class_names: Sequence[str]) -> bytes:
    """Row-normalized confusion matrices (summed over a model's runs), side by side, annotated."""
    cols = min(len(groups), 3)
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(4.9 * cols, 4.7 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    ticks = np.arange(len(class_names))
    for ax, group in zip(axes, groups):
        counts = group_confusion(group)
        norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}".lstrip("0") if v < 1 else "1", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.55 else "#222")
        ax.set_title(group.label)
        ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, class_names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    return _png(fig)


def per_class_png(groups: Sequence[Group], class_names: Sequence[str]) -> bytes:
    """Grouped bars per class (one bar per model) for precision, recall and F1; error bars = sd over seeds."""
    stats = [per_class_stats(g, class_names) for g in groups]
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    x = np.arange(len(class_names))
    width = 0.8 / len(groups)
    low = min(float(np.nanmin(s[m][0])) for s in stats for m in METRIC_NAMES)
    bottom = max(0.0, math.floor((low - 0.05) * 10) / 10) if math.isfinite(low) else 0.0
    for ax, (metric, title) in zip(axes, METRIC_NAMES.items()):
        for k, (group, s, colour) in enumerate(zip(groups, stats, colours(len(groups)))):
            mean, sd = s[metric]
            ax.bar(x + (k - (len(groups) - 1) / 2) * width, mean, width, color=colour, label=group.label,
                   yerr=sd if len(group.runs) > 1 else None, error_kw={"lw": 1, "capsize": 2})
        ax.set_ylim(bottom, 1.0)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(x, class_names)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=min(len(groups), 8),
               frameon=False)
    return _png(fig)


def thumbnail_png(image: np.ndarray) -> bytes:
    """A uint8 test image, [H, W] or [C, H, W], as a small PNG (the browser scales it up, pixelated)."""
    buf = io.BytesIO()
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3:  # channels first, as the data holds them; a single channel is greyscale
        image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def reliability_png(labels: Sequence[str], calibrations: Sequence[dict]) -> bytes:
    """A reliability diagram per model (summary.json's calibration, seeds pooled): accuracy against mean confidence
    per bin, before (outline) and after (filled) temperature scaling; the diagonal is perfect calibration."""
    shown = [(label, c) for label, c in zip(labels, calibrations) if c["available"]]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(3.4 * cols, 3.3 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    palette = dict(zip(labels, colours(len(labels))))
    for ax, (label, c) in zip(axes, shown):
        edges = np.asarray(c["before"]["bins"]["edges"], dtype=float)
        width = np.diff(edges)
        ax.plot([0, 1], [0, 1], color="#888", lw=1, ls=":")
        for side, fill in (("after", True), ("before", False)):  # the outline on top stays visible
            if c[side] is None:
                continue
            acc = np.array([np.nan if v is None else v for v in c[side]["bins"]["accuracy"]], dtype=float)
            ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", fill=fill,
                   color=palette[label] if fill else None, alpha=0.55 if fill else 1.0,
                   edgecolor="#222" if not fill else palette[label], lw=1.0,
                   label=f"{side}: ECE {c[side]['ece_mean']:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8, loc="upper left", frameon=False)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    return _png(fig)


def robustness_png(robust: dict, labels: Sequence[str]) -> bytes:
    """Accuracy against severity, one panel per corruption, one line per model (mean over its seeds); severity 0
    is the clean test set."""
    names = robust["corruptions"]
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(13, 2.6 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    palette = dict(zip(labels, colours(len(labels))))
    for ax, name in zip(axes, names):
        for m in robust["models"]:
            severities = [0, *robust["severities"]]
            acc = [m["clean"], *(m["accuracy"][name][s] for s in robust["severities"])]
            ax.plot(severities, acc, marker="o", ms=3, lw=1.6, color=palette[m["label"]])
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xticks(range(0, 6))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy")
    handles = [Line2D([], [], color=palette[m["label"]], lw=2.5, label=m["label"]) for m in robust["models"]]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False)
    return _png(fig)
