"""The summary and significance tables as text cells, shared by the HTML, Markdown and terminal outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SUMMARY_HEADER = [
    "Model", "Runs", "Test accuracy [95% CI]", "Macro-F1", "Params", "MFLOPs/image", "Training time",
    "Best epoch", "Train − val gap", "Epochs to 90% val",
]
SIGNIFICANCE_HEADER = ["Model A", "Model B", "Δ accuracy A − B [95% CI]", "McNemar b / c", "McNemar p", "Verdict"]
SUMMARY_SHORT_HEADER = [  # for the terminal
    "Model", "Seeds", "Test acc. [95% CI]", "Macro-F1", "Params", "MFLOPs", "Train time", "Best ep.", "Gap",
    "Ep. to 90%",
]
NUMERIC_SUMMARY = set(range(2, 10))  # right-aligned columns
NUMERIC_SIGNIFICANCE = {2, 3, 4}


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


def fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


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
    rows = []
    for c in summary["comparisons"]:
        lo, hi = c["ci"]
        rows.append([
            c["a"],
            c["b"],
            f"{100 * c['diff']:+.2f} pts [{100 * lo:+.2f}, {100 * hi:+.2f}]",
            "; ".join(f"{p['b']} / {p['c']}" for p in c["pairs"]),
            "; ".join(fmt_p(p["p_value"]) for p in c["pairs"]),
            c["verdict"],
        ])
    return rows


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
        lines += table(SIGNIFICANCE_HEADER, significance_rows(summary), NUMERIC_SIGNIFICANCE)
        lines += ["", f"McNemar's exact test, two-sided, alpha = {summary['alpha']}; paired bootstrap CI of the "
                      "accuracy difference. See report.html for the method."]
    return "\n".join(lines) + "\n"


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """Print the summary and significance tables in the terminal (rich)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=f"Model comparison: {summary['n_test']} test images", header_style="bold",
                  box=box.SIMPLE_HEAD)
    for i, name in enumerate(SUMMARY_SHORT_HEADER):
        table.add_column(name, justify="right" if i in NUMERIC_SUMMARY else "left")
    for row, m in zip(summary_rows(summary), summary["models"]):
        row[1] = ", ".join(map(str, m["seeds"]))
        table.add_row(*map(Text, row))
    console.print(table)
    note = significance_note(summary)
    if note:
        console.print(Text(note, style="yellow"))
        return
    sig = Table(title="Significance (McNemar exact, paired bootstrap 95% CI)", header_style="bold",
                box=box.SIMPLE_HEAD)
    for i, name in enumerate(SIGNIFICANCE_HEADER):
        sig.add_column(name, justify="right" if i in NUMERIC_SIGNIFICANCE else "left")
    for row, c in zip(significance_rows(summary), summary["comparisons"]):
        sig.add_row(*map(Text, row[:-1]), Text(row[-1], style="bold green" if c["significant"] else ""))
    console.print(sig)
