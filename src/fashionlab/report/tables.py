"""The summary and significance tables as text cells, shared by the HTML, Markdown and terminal outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SUMMARY_HEADER = [
    "Model", "Runs", "Test accuracy [95% CI]", "Macro-F1", "Params", "MFLOPs/image", "Training time",
    "Best epoch", "Train − val gap", "Epochs to 90% val",
]
SIGNIFICANCE_HEADER = ["Model A", "Model B", "Δ accuracy A − B [95% CI]", "McNemar b / c", "McNemar p",
                       "p (Holm)", "Seed t-test p (Holm)", "Verdict"]
VERSUS_BASE_HEADER = ["Group", "Changed", "Δ vs base [95% CI]", "p (Holm)", "Seed p (Holm)"]
SUMMARY_SHORT_HEADER = [  # for the terminal
    "Model", "Seeds", "Test acc. [95% CI]", "Macro-F1", "Params", "MFLOPs", "Train time", "Best ep.", "Gap",
    "Ep. to 90%",
]
NUMERIC_SUMMARY = set(range(2, 10))  # right-aligned columns
NUMERIC_SIGNIFICANCE = {2, 3, 4, 5, 6}
NUMERIC_VERSUS_BASE = {2, 3, 4}
TESTS_EXPLAINED = (
    "Test-image test: McNemar's exact test on each seed pair asks whether the two disagree on test images more "
    "often one way than the other; with several seeds its p is the largest over the pairs. Seed test: a paired "
    "t-test on per-seed accuracies asks whether the difference is larger than the seed-to-seed spread (it needs "
    "2+ seeds per group and has little power with 3). Every p is Holm-Bonferroni adjusted over all pairs of groups "
    "(each test apart), and verdicts use the adjusted test-image p."
)


def _pm(stat: dict[str, Any], fmt: Callable[[float], str], fmt_sd: Callable[[float], str] | None = None,
        unit: str = "") -> str:
    """'mean unit' for one value, 'mean ± sd unit' for several, 'n/a' for none."""
    if stat["mean"] is None:
        return "n/a"
    if stat["n"] == 1:
        return f"{fmt(stat['mean'])}{unit}"
    return f"{fmt(stat['mean'])} ± {(fmt_sd or fmt)(stat['sd'])}{unit}"


def fmt_count(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _human(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _mflops(v: float) -> str:
    return f"{v:,.1f}" if v >= 1 else f"{v:.3f}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _points(v: float) -> str:
    return f"{100 * v:+.1f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _diff_ci(diff: float, ci: list[float]) -> str:
    lo, hi = ci
    return f"{100 * diff:+.2f} pts [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def _accuracy(stat: dict[str, Any]) -> str:
    text = _pm(stat, _pct, unit="%")
    if stat.get("ci"):
        lo, hi = stat["ci"]
        text += f" [{_pct(lo)}, {_pct(hi)}]"
    return text


def _convergence(stat: dict[str, Any]) -> str:
    if stat["n"] == 0:
        return "not reached"
    text = _pm(stat, fmt_count)
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
            _human(m["params"]["mean"]) if m["params"]["mean"] is not None else "n/a",
            _mflops(m["mflops"]["mean"]) if m["mflops"]["mean"] is not None else "n/a",
            _pm(m["train_seconds"], _duration),
            _pm(m["best_epoch"], fmt_count),
            _pm(m["train_val_gap"], _points, lambda v: f"{100 * v:.1f}", unit=" pts"),
            _convergence(m["epochs_to_threshold"]),
        ]
        for m in summary["models"]
    ]


def significance_rows(summary: dict[str, Any]) -> list[list[str]]:
    return [
        [
            c["a"],
            c["b"],
            _diff_ci(c["diff"], c["ci"]),
            "; ".join(f"{p['b']} / {p['c']}" for p in c["pairs"]),
            "; ".join(fmt_p(p["p_value"]) for p in c["pairs"]),
            fmt_p(c["p_adjusted"]),
            fmt_p(c["seed_test"]["p_adjusted"]),
            c["verdict"],
        ]
        for c in summary["comparisons"]
    ]


def versus_base_rows(summary: dict[str, Any]) -> list[list[str]]:
    changed = {m["label"]: m["changed"] for m in summary["models"]}
    return [[v["label"], changed.get(v["label"]) or "-", _diff_ci(v["diff"], v["ci"]), fmt_p(v["p_adjusted"]),
             fmt_p(v["seed_p_adjusted"])] for v in summary["versus_base"]]


def significance_note(summary: dict[str, Any]) -> str:
    """Why there is no significance table, or ''."""
    if not summary["labels_available"]:
        return f"McNemar's test needs the test labels, which could not be loaded: {summary['labels_note']}"
    if len(summary["models"]) < 2:
        return "Only one model: nothing to compare."
    return ""


def to_markdown(summary: dict[str, Any]) -> str:
    def cells(row: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    def table(header: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
        align = ["---:" if i in numeric else "---" for i in range(len(header))]
        return [cells(header), cells(align), *map(cells, rows)]

    lines = [
        "# Model comparison", "",
        f"Test set: {summary['n_test']} images (sha256 `{summary['test_sha256'][:16]}…`); "
        f"generated {summary['generated']} by fashionlab {summary['fashionlab']}.", "",
        "## Summary", "",
        *table(SUMMARY_HEADER, summary_rows(summary), NUMERIC_SUMMARY), "",
        "Several runs of a model: mean ± sd over seeds. 95% CI: percentile bootstrap over the test images "
        f"({summary['n_boot']} resamples). Train − val gap: last epoch, in accuracy points.", "",
        "## Significance", "",
    ]
    note = significance_note(summary)
    if note:
        lines.append(note)
    else:
        if len(summary["models"]) > 1:
            lines += [f"### Versus the base ({summary['base']})", "",
                      *table(VERSUS_BASE_HEADER, versus_base_rows(summary), NUMERIC_VERSUS_BASE), "",
                      "### Every pair", ""]
        lines += table(SIGNIFICANCE_HEADER, significance_rows(summary), NUMERIC_SIGNIFICANCE)
        lines += ["", f"Two-sided tests, alpha = {summary['alpha']}; paired bootstrap CI of the accuracy difference. "
                      + TESTS_EXPLAINED + " See report.html for the method."]
    return "\n".join(lines) + "\n"


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

    rows = [[m["label"], str(len(m["seeds"])), _pm(m["accuracy"], _pct, unit="%"),
             "–".join(map(_pct, m["accuracy"]["ci"])) if m["accuracy"].get("ci") else "n/a",
             _duration(m["train_seconds"]["mean"]) if m["train_seconds"]["mean"] is not None else "n/a",
             _convergence(m["epochs_to_threshold"])] for m in summary["models"]]
    console.print(table(f"{summary['n_test']} test images", ["Group", "Seeds", "Test accuracy", "95% CI",
                                                             "Train time", "Ep. to 90%"], rows))
    note = significance_note(summary)
    if note:
        console.print(Text(note, style="yellow"))
        return
    several = len(summary["models"]) > 2
    shown = [c for c in summary["comparisons"] if c["a"] == summary["base"]] if several else summary["comparisons"]
    rows = [[f"{c['b']} − {c['a']}", _diff_ci(-c["diff"], [-c["ci"][1], -c["ci"][0]]), fmt_p(c["p_adjusted"]),
             fmt_p(c["seed_test"]["p_adjusted"])] for c in shown]
    title = f"Versus the base ({summary['base']})" if several else "Significance"
    console.print(table(title, ["Difference", "Δ accuracy [95% CI]", "p (Holm)", "Seed p"], rows))
    for c in shown:
        console.print(Text(f"• {c['verdict']}", style="bold green" if c["significant"] else ""))
    if several:
        console.print(f"All {len(summary['comparisons'])} pairs: summary.md and report.html.")
