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


def curves_png(groups: Sequence[Group]) -> bytes:
    """Loss, accuracy (train dashed, validation solid) and learning rate per epoch; one colour per model."""
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    lrs = []
    for group, colour in zip(groups, colours(len(groups))):
        for run in group.runs:
            h = run.history
            for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
                ax.plot(h["epoch"], h[f"train_{key}"], color=colour, ls="--", lw=1.4, alpha=0.85)
                ax.plot(h["epoch"], h[f"val_{key}"], color=colour, ls="-", lw=1.8, alpha=0.85)
            ax_lr.plot(h["epoch"], h["lr"], color=colour, lw=1.8, alpha=0.85)
            lrs.append(h["lr"])
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
    """A 28x28 uint8 test image as a small greyscale PNG (the browser scales it up, pixelated)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
