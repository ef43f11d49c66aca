"""`fashionlab compare`: a self-contained HTML report, summary.md and summary.json for several run folders."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fashionlab.files import atomic_write_json, atomic_write_text, check_new_folder, make_folder
from fashionlab.report.compare import build_comparison
from fashionlab.report.tables import print_summary, to_markdown

__all__ = ["compare_runs", "print_summary"]


def compare_runs(run_dirs: Sequence[Path | str], out_dir: Path | str, *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, family: str | None = None, data=None) -> dict[str, Any]:
    """Compare evaluated run folders; writes report.html, summary.md and summary.json into `out_dir`
    (each atomically) and returns the summary (the numbers of summary.json). Bad input raises RunError.
    family: "base" or "all-pairs", the pairs tested; None: base for a variant study, else all pairs.
    data: the dataset the runs were trained on, when the caller holds it (`run`): used if its test set is theirs,
    instead of reading and checking it again."""
    from fashionlab.report.html import render_report  # matplotlib is imported only when a report is made

    out = Path(out_dir)
    check_new_folder(out, "report folder")  # new, empty, or one fashionlab made: never a folder of the user's
    comp = build_comparison(run_dirs, n_boot=n_boot, alpha=alpha, seed=seed, family=family, data=data)
    make_folder(out)
    atomic_write_json(out / "summary.json", comp.summary)
    atomic_write_text(out / "summary.md", to_markdown(comp.summary))
    atomic_write_text(out / "report.html", render_report(comp))
    return comp.summary


def default_report_dir() -> Path:
    return Path("reports") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
