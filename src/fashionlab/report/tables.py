"""The summary and significance tables as text cells, shared by the HTML, Markdown and terminal outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fashionlab.data.inspect import card_problems
from fashionlab.numfmt import (
    abbreviated_count,
    accuracy_mean_sd,
    compact_duration,
    count,
    mean_sd,
    mflops,
    p_value,
    percent_number,
    plural,
    points,
    points_ci,
)
from fashionlab.stats import mean_sd as stats_mean_sd

SUMMARY_HEADER = [
    "Model", "Runs", "Test accuracy [95% CI]", "Macro-F1", "Params", "MFLOPs/image", "Training time",
    "Best epoch", "Train − val gap", "Epochs to 90% val",
]
CHOICE_HEADER = ["A", "B", "Seed pairs", "Δ B − A [95% CI]", "p", "p (Holm)", "Smallest detectable effect",
                 "Verdict"]
MODELS_HEADER = ["A", "B", "Δ B − A [95% CI]", "McNemar b / c", "McNemar p", "p (Holm)", "Result"]
SUMMARY_SHORT_HEADER = [  # for the terminal
    "Model", "Seeds", "Test acc. [95% CI]", "Macro-F1", "Params", "MFLOPs", "Train time", "Best ep.", "Gap",
    "Ep. to 90%",
]
NUMERIC_SUMMARY = set(range(2, 10))  # right-aligned columns
NUMERIC_CHOICE = {2, 3, 4, 5, 6}
NUMERIC_MODELS = {2, 3, 4, 5}
CHOICE_EXPLAINED = (
    "Seed level: runs are paired by seed number, and the effect is the mean over the seed pairs of the accuracy "
    "of B minus that of A. Its 95% CI comes from a hierarchical bootstrap (seed pairs with replacement, then "
    "test images with replacement, the same images for every run), scaled to a t interval over the seed pairs, so "
    "it covers seed-to-seed and test-set sampling. p: a paired t-test over the seed pairs (the exact sign-flip "
    "test when every seed difference is equal); it needs 3+ seed pairs. Smallest detectable effect: the effect "
    "these seeds would find with 80% power at alpha (before Holm), from the spread of the seed differences. "
    "Better and worse rest on this test alone."
)
MODELS_EXPLAINED = (
    "Per image: McNemar's exact test on each seed pair asks whether these particular trained models disagree on "
    "test images more often one way than the other; with several seeds its p is the largest over the pairs, and "
    "the models differ only if every pair is significant in the same direction. The CI of the difference of mean "
    "accuracies bootstraps the test images only. It says nothing about another training run of the same choice."
)


def dataset_name(summary: dict[str, Any]) -> str:
    """What the compared models were trained on, for titles: Fashion-MNIST, or the user's dataset as named."""
    card = summary.get("dataset") or {}
    return str(card.get("name") or "Fashion-MNIST")


def family_text(summary: dict[str, Any]) -> str:
    """Which pairs were tested, and so what Holm adjusts over."""
    n, k = len(summary["models"]), len(summary["comparisons"])
    if summary["family"] == "base":
        return (f"Versus the base ({summary['base']}): each of the other {n - 1} groups against it, Holm-adjusted "
                f"over these {k} pairs (family `base`; `--family all-pairs` tests every pair).")
    return (f"Every pair of the {n} groups, Holm-adjusted over the {k} pairs (family `all-pairs`; `--family base` "
            "tests each group against the first only).")


def _pm(stat: dict[str, Any], fmt: Callable[[float], str], fmt_sd: Callable[[float], str] | None = None,
        unit: str = "") -> str:
    """numfmt.mean_sd of a summary statistic ({"mean", "sd", "n"})."""
    return mean_sd(stat["mean"], stat["sd"], stat["n"], fmt, fmt_sd, unit)


def effect_ci(seed_level: dict[str, Any]) -> str:
    """The seed-level effect (already in points) and its CI: 'n/a' without a seed pair, no CI below 3 pairs."""
    s = seed_level
    return points_ci(s["effect"], s.get("ci_low"), s.get("ci_high"))


def _mde(seed_level: dict[str, Any]) -> str:
    s = seed_level
    if s.get("significant"):
        return "-"
    return f"{s['mde']:.2f} pts" if s["mde"] is not None else "n/a"


def _accuracy(stat: dict[str, Any]) -> str:
    text = accuracy_mean_sd(stat["mean"], stat["sd"], stat["n"])
    if stat.get("ci"):
        lo, hi = stat["ci"]
        text += f" [{percent_number(lo)}, {percent_number(hi)}]"
    return text


def _convergence(stat: dict[str, Any]) -> str:
    if stat["n"] == 0:
        return "not reached"
    text = _pm(stat, count)
    return text if stat["n"] == len(stat["values"]) else f"{text} ({stat['n']}/{len(stat['values'])} reached)"


def runs_cell(model: dict[str, Any]) -> str:
    seeds = model["seeds"]
    return f"{len(seeds)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def summary_rows(summary: dict[str, Any]) -> list[list[str]]:
    return [
        [
            m["label"],
            runs_cell(m),
            _accuracy(m["accuracy"]),
            _pm(m["macro_f1"], lambda v: f"{v:.4f}"),
            abbreviated_count(m["params"]["mean"]),
            mflops(m["mflops"]["mean"]),
            _pm(m["train_seconds"], compact_duration),
            _pm(m["best_epoch"], count),
            _pm(m["train_val_gap"], points, lambda v: percent_number(v, 1), unit=" pts"),
            _convergence(m["epochs_to_threshold"]),
        ]
        for m in summary["models"]
    ]


def training_text(summary: dict[str, Any]) -> str:
    """What each model trained on, in one sentence: "Trained: every run 2 epochs on a stratified subset of 46,817
    training images, validated on 6,000." (each model's own when they differ; "" for a summary without it)."""
    def said(t: dict[str, Any]) -> str:
        text = plural(t["epochs"], "epoch")
        if t.get("n_train") is not None:
            text += f" on {'a stratified subset of ' if t['train_subset'] else ''}{t['n_train']:,} training images"
        if t.get("n_val"):
            text += f", validated on {'a stratified subset of ' if t['val_subset'] else ''}{t['n_val']:,}"
        return text

    models = [m for m in summary["models"] if m.get("training")]
    per_model = [(m["label"], sorted({said(t) for t in m["training"]})) for m in models]
    if not per_model:
        return ""
    if len({tuple(texts) for _, texts in per_model}) == 1 and len(per_model[0][1]) == 1:
        return f"Trained: {'every run ' if len(per_model) > 1 or len(models[0]['training']) > 1 else ''}" \
               f"{per_model[0][1][0]}."
    return "Trained: " + "; ".join(f"{label} {' or '.join(texts)}" for label, texts in per_model) + "."


def choice_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Does this training choice differ: one row per pair of the family, seed level."""
    rows = []
    for c in summary["comparisons"]:
        s = c["seed_level"]
        n = str(s["n_seeds"]) + (f" ({len(s['unpaired'])} unpaired)" if s["unpaired"] else "")
        rows.append([c["a"], c["b"], n, effect_ci(s), p_value(s["p"]), p_value(s["p_adjusted"]), _mde(s),
                     c["verdict"]])
    return rows


def models_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Do these trained models differ on this test set: one row per pair of the family, per image (B − A)."""
    return [
        [
            c["a"],
            c["b"],
            points_ci(-100 * c["diff"], -100 * c["ci"][1], -100 * c["ci"][0]),
            "; ".join(f"{p['b']} / {p['c']}" for p in c["pairs"]) or "n/a",
            "; ".join(p_value(p["p_value"]) for p in c["pairs"]) or "n/a",
            p_value(c["p_adjusted"]),
            c["models_verdict"],
        ]
        for c in summary["comparisons"]
    ]


CALIBRATION_HEADER = ["Model", "Runs", "ECE [95% CI]", "Temperature", "ECE after temperature [95% CI]"]
NUMERIC_CALIBRATION = {2, 3, 4}
CALIBRATION_EXPLAINED = (
    "ECE: top-label expected calibration error over 15 equal-width confidence bins, the mean gap between "
    "confidence and accuracy (0 is perfectly calibrated), mean over seeds; 95% CI: percentile bootstrap over the "
    "test images (the same images for every seed). Temperature: the one scalar T each run's evaluation fitted on "
    "its own validation split (never on test); the second ECE is of softmax(logits / T), which is what `predict` "
    "reports. From each run's test_predictions.npz."
)
ROBUSTNESS_MODELS_HEADER = ["Model", "Clean accuracy", "Mean over the corruptions", "mCE vs the base"]
NUMERIC_ROBUSTNESS_MODELS = {1, 2, 3}
ROBUSTNESS_HEADER = ["Corruption", "Accuracy of A", "Accuracy of B", "Δ B − A, seed level [95% CI]",
                     "Seed p (Holm)", "McNemar b / c", "McNemar p (Holm)", "Verdict"]
NUMERIC_ROBUSTNESS = {1, 2, 3, 4, 5, 6}
ROBUSTNESS_EXPLAINED = (
    "Each corruption of the seeded suite (`evaluate --corruptions`: the same corrupted test images for every run) "
    "at its 5 severities. A and B: accuracy over the 5 severities, mean over seeds. The seed-level effect, CI and "
    "p are those of the significance section (seeds paired by number; paired t-test, 3+ seed pairs); McNemar "
    "counts each image at each severity as one pair (b = A right, B wrong), so its p is approximate. Both levels "
    "are Holm-adjusted over every pair and corruption tested. mCE: the mean over corruptions of the summed error "
    "over severities relative to the base's (Hendrycks & Dietterich 2019); below 1 is more robust than the base."
)


def _ece_cell(side: dict[str, Any] | None) -> str:
    if side is None:
        return "n/a"
    lo, hi = side["ece_ci"]
    return f"{side['ece_mean']:.4f} [{lo:.4f}, {hi:.4f}]"


def calibration_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per model with its calibration; models without say why in the last cell."""
    rows = []
    for m in summary["models"]:
        c = m.get("calibration") or {"available": False, "reason": "not computed"}
        if not c["available"]:
            rows.append([m["label"], runs_cell(m), "n/a", "n/a", f"n/a: {c['reason']}"])
            continue
        temps = [t for t in c["temperature"] if t is not None]
        t_text = mean_sd(*stats_mean_sd(temps), len(temps), lambda v: f"{v:.3f}") if temps else "n/a"
        rows.append([m["label"], runs_cell(m), _ece_cell(c["before"]), t_text,
                     _ece_cell(c["after"]) if c["after"] else f"n/a: {c['after_reason']}"])
    return rows


def robustness_model_rows(robust: dict[str, Any]) -> list[list[str]]:
    return [[m["label"], percent_number(m["clean"]) + "%", _pm(m["mean_corrupted"], percent_number, unit="%"),
             f"{m['mce']:.3f}" if m["mce"] is not None else "n/a"] for m in robust["models"]]


def robustness_pairs(robust: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs tested, in order: one robustness table each."""
    return list(dict.fromkeys((t["a"], t["b"]) for t in robust["comparisons"]))


def robustness_rows(robust: dict[str, Any], a: str, b: str) -> list[list[str]]:
    """B against A, one row per corruption."""
    models = {m["label"]: m for m in robust["models"]}
    rows = []
    for t in robust["comparisons"]:
        if (t["a"], t["b"]) != (a, b):
            continue
        c, s = t["corruption"], t["seed_level"]
        acc = [sum(models[x]["accuracy"][c].values()) / len(models[x]["accuracy"][c]) for x in (a, b)]
        rows.append([c, *(percent_number(v) + "%" for v in acc), effect_ci(s), p_value(s["p_adjusted"]),
                     "; ".join(f"{p['b']} / {p['c']}" for p in t["pairs"]) or "n/a", p_value(t["p_adjusted"]),
                     t["verdict"]])
    return rows


def warnings(summary: dict[str, Any]) -> list[str]:
    return [c["warning"] for c in summary["comparisons"] if c["warning"]]


def significance_note(summary: dict[str, Any]) -> str:
    """Why there is no significance table, or ''."""
    if not summary["labels_available"]:
        return f"McNemar's test needs the test labels, which could not be loaded: {summary['labels_note']}"
    if len(summary["models"]) < 2:
        return "Only one model: nothing to compare."
    return ""


def to_markdown(summary: dict[str, Any]) -> str:
    from html import escape

    def md(text: str) -> str:
        """User-given text (labels, model names, paths, in cells, verdicts and warnings) as inert Markdown: HTML
        escaped, so `<img onerror=...>` shows as text in every Markdown viewer, as report.html shows it."""
        return escape(str(text), quote=False).replace("`", "\\`")

    def cells(row: list[str]) -> str:
        return "| " + " | ".join(md(c).replace("|", "\\|") for c in row) + " |"

    def table(header: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
        align = ["---:" if i in numeric else "---" for i in range(len(header))]
        return [cells(header), cells(align), *map(cells, rows)]

    card = summary.get("dataset")
    lines = [
        f"# {md(dataset_name(summary))} model comparison", "",
        f"Test set: {summary['n_test']} images (sha256 `{md(summary['test_sha256'][:16].replace('`', ''))}…`); "
        f"generated {md(summary['generated'])} by fashionlab {md(summary['fashionlab'])}.", "",
        *([f"Data: {md(str(card['name']))} ({md(str(card['kind']))}), {len(card['classes'])} classes, "
           f"{card['channels']} channel(s), {'x'.join(map(str, card['size']))} pixels; problems: "
           + md("; ".join(card_problems(card)) or "none found") + ".", ""] if card else []),
        "## Summary", "",
        *table(SUMMARY_HEADER, summary_rows(summary), NUMERIC_SUMMARY), "",
        *([md(training_text(summary)), ""] if training_text(summary) else []),
        "Several runs of a model: mean ± sd over seeds. 95% CI: percentile bootstrap over the test images "
        f"({summary['n_boot']} resamples). Train − val gap: last epoch, in accuracy points.", "",
        "## Significance", "",
    ]
    note = significance_note(summary)
    if note:
        lines.append(note)
    else:
        lines += [md(family_text(summary)), ""]
        lines += [f"**Warning:** {md(w)}." for w in warnings(summary)] + ([""] if warnings(summary) else [])
        lines += ["### Does this training choice differ? (seed level)", "",
                  *table(CHOICE_HEADER, choice_rows(summary), NUMERIC_CHOICE), "", CHOICE_EXPLAINED, "",
                  "### Do these trained models differ on this test set? (per image)", "",
                  *table(MODELS_HEADER, models_rows(summary), NUMERIC_MODELS), "", MODELS_EXPLAINED, "",
                  f"Two-sided tests, alpha = {summary['alpha']}, bootstraps of {summary['n_boot']} resamples. "
                  "See report.html for the method."]
    lines += ["", "## Calibration", "", *table(CALIBRATION_HEADER, calibration_rows(summary), NUMERIC_CALIBRATION),
              "", CALIBRATION_EXPLAINED, "", "## Robustness", ""]
    robust = robustness_of(summary)
    if not robust["available"]:
        lines.append(f"Not measured: {md(robust['reason'])}.")
    else:
        lines += [*table(ROBUSTNESS_MODELS_HEADER, robustness_model_rows(robust), NUMERIC_ROBUSTNESS_MODELS), ""]
        for a, b in robustness_pairs(robust):
            lines += [f"### {md(b)} against {md(a)}", "",
                      *table(ROBUSTNESS_HEADER, robustness_rows(robust, a, b), NUMERIC_ROBUSTNESS), ""]
        lines.append(ROBUSTNESS_EXPLAINED)
    return "\n".join(lines) + "\n"


def robustness_of(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json's robustness; a summary written before it existed has none."""
    return summary.get("robustness") or {"available": False, "reason": "not computed"}


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """Print the summary, significance and verdicts in the terminal; every table fits 80 columns whole.

    The terminal shows the numbers that decide (accuracy, CI, p, verdict); summary.md and report.html have all.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()

    def table(title: str, header: list[str], rows: list[list[str]]) -> Table:
        t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for i, name in enumerate(header):  # numbers never wrap or get cut; only labels may wrap
            t.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0, overflow="fold")
        for row in rows:
            t.add_row(*map(Text, row))
        return t

    rows = [[m["label"], str(len(m["seeds"])), accuracy_mean_sd(m["accuracy"]["mean"], m["accuracy"]["sd"],
                                                                 m["accuracy"]["n"]),
             "–".join(map(percent_number, m["accuracy"]["ci"])) if m["accuracy"].get("ci") else "n/a",
             compact_duration(m["train_seconds"]["mean"]),
             _convergence(m["epochs_to_threshold"])] for m in summary["models"]]
    console.print(table(f"{summary['n_test']} test images", ["Group", "Seeds", "Test accuracy", "95% CI",
                                                             "Train time", "Ep. to 90%"], rows))
    if training_text(summary):
        console.print(Text(training_text(summary)))
    note = significance_note(summary)
    if note:
        console.print(Text(note, style="yellow"))
        return
    several = summary["family"] == "all-pairs" and len(summary["models"]) > 2
    shown = [c for c in summary["comparisons"] if c["a"] == summary["base"]] if several else summary["comparisons"]
    rows = [[f"{c['b']} − {c['a']}", effect_ci(c["seed_level"]), p_value(c["seed_level"]["p_adjusted"]),
             p_value(c["p_adjusted"])] for c in shown]
    title = f"Versus the base ({summary['base']})" if len(summary["models"]) > 2 else "Significance"
    console.print(table(f"{title}: seed level, Holm-adjusted p",
                        ["Difference", "Δ over seeds [95% CI]", "Seed p", "McNemar p"], rows))
    for w in warnings(summary):
        console.print(Text(f"warning: {w}", style="yellow"))
    for c in shown:
        console.print(Text(f"• {c['verdict']}", style="bold green" if c["significant"] else ""))
        console.print(Text(f"  {c['models_verdict']}"))
    if several:
        console.print(f"All {len(summary['comparisons'])} pairs: summary.md and report.html.")
