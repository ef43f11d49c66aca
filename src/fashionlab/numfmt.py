"""Numbers as text: the one place each format fashionlab writes is defined (the report, `fashionlab recipes`,
`train --budget` and the benchmarks' generated tables).

Conventions, for every function here:
- accuracies are fractions (0..1) and are shown in percent; a difference of two accuracies is shown in
  percentage points ("pts"), always with its sign;
- None, NaN and ±infinity are written as MISSING ("n/a"), never as "nan" or a crash;
- a negative duration is "-" and the duration of its magnitude;
- minus signs are ASCII "-"; `true_minus` turns them into "−" (U+2212) for typeset Markdown;
- rounding is Python's (round half to even on the binary value), and a negative value that rounds to zero keeps
  its sign ("-0.0"), as Python's format does.

Plain fixed decimals of a number that needs no convention (a macro-F1 of "0.9412") stay f-strings at their use.
"""

from __future__ import annotations

import math
from collections.abc import Callable

MISSING = "n/a"


def missing(value: float | None) -> bool:
    """Whether VALUE has no number to show: None, NaN or ±infinity."""
    return value is None or not math.isfinite(value)


# ---------------------------------------------------------------------------------------------------------
# accuracies, in percent and points


def percent(fraction: float | None, digits: int = 2) -> str:
    """0.945 -> '94.50%'."""
    return MISSING if missing(fraction) else f"{100 * fraction:.{digits}f}%"


def percent_number(fraction: float | None, digits: int = 2) -> str:
    """0.945 -> '94.50': percent without the sign, for a column or range whose unit is said once."""
    return MISSING if missing(fraction) else f"{100 * fraction:.{digits}f}"


def points(fraction_diff: float | None, digits: int = 1) -> str:
    """A difference of two accuracies (fractions) in signed percentage points: 0.012 -> '+1.2', -0.0034 -> '-0.3'."""
    return MISSING if missing(fraction_diff) else f"{100 * fraction_diff:+.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    """A number already in points (or any signed quantity), with its sign: 1.234 -> '+1.23'."""
    return MISSING if missing(value) else f"{value:+.{digits}f}"


def points_ci(value: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    """An effect and its confidence interval, all already in points: '+1.23 pts [+0.10, +2.36]'; without an
    interval (low None) '+1.23 pts (no CI)'; without an effect 'n/a'."""
    if missing(value):
        return MISSING
    if low is None:
        return f"{signed(value, digits)} pts (no CI)"
    return f"{signed(value, digits)} pts [{signed(low, digits)}, {signed(high, digits)}]"


def mean_sd(mean: float | None, sd: float | None, n: int, fmt: Callable[[float], str],
            fmt_sd: Callable[[float], str] | None = None, unit: str = "") -> str:
    """'mean unit' of one value, 'mean ± sd unit' of several, 'n/a' of none (mean None), each number by FMT
    (the sd by FMT_SD when given)."""
    if mean is None:
        return MISSING
    if n == 1:
        return f"{fmt(mean)}{unit}"
    return f"{fmt(mean)} ± {(fmt_sd or fmt)(sd)}{unit}"


def accuracy_mean_sd(mean: float | None, sd: float | None, n: int, digits: int = 2) -> str:
    """An accuracy over n runs: '94.51 ± 0.13%'; one run has no spread to show: '94.68%'."""
    return mean_sd(mean, sd, n, lambda v: percent_number(v, digits), unit="%")


def accuracy_over_seeds(mean: float | None, sd: float | None, n_seeds: int) -> str:
    """'94.51 ± 0.13% (3 seeds)'; one seed: '94.68% (1 seed)' (no '± 0.00%')."""
    return f"{accuracy_mean_sd(mean, sd, n_seeds)} ({n_seeds} seed{'' if n_seeds == 1 else 's'})"


def true_minus(text: str) -> str:
    """Every ASCII '-' in TEXT as the typographic minus '−' (for numbers only: '-1.2 pts' -> '−1.2 pts')."""
    return text.replace("-", "−")


# ---------------------------------------------------------------------------------------------------------
# p-values


def p_value(p: float | None) -> str:
    """A p-value in a table cell: '< 0.001', else three significant digits ('0.0386')."""
    if missing(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def p_statement(p: float | None, decimals: int | None = None) -> str:
    """A p-value in a sentence: 'p < 0.001', else 'p = 0.0386' (three significant digits) or, with DECIMALS,
    that many decimals ('p = 0.039')."""
    if missing(p):
        return f"p = {MISSING}"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3g}" if decimals is None else f"p = {p:.{decimals}f}"


# ---------------------------------------------------------------------------------------------------------
# times


def _duration_text(fmt: Callable[[float], str], seconds: float | None) -> str:
    if missing(seconds):
        return MISSING
    if seconds < 0:
        return "-" + fmt(-seconds)
    return fmt(seconds + 0.0)  # -0.0 -> 0.0


def seconds(value: float | None, digits: int = 1) -> str:
    """Seconds as they are: 45.83 -> '45.8 s' (digits=0: '46 s')."""
    return _duration_text(lambda v: f"{v:.{digits}f} s", value)


def duration(secs: float | None) -> str:
    """A duration in words, to the second below an hour and to the minute above: '46 s', '5 min 10 s', '1 min',
    '1 h 30 min', '2 h' (`train --budget`)."""
    def fmt(value: float) -> str:
        s = round(value)
        if s < 60:
            return f"{value:.0f} s"
        if s < 3600:
            m, s = divmod(s, 60)
            return f"{m} min {s} s" if s else f"{m} min"
        h, rest = divmod(s, 3600)
        m = round(rest / 60)
        if m == 60:
            h, m = h + 1, 0
        return f"{h} h {m} min" if m else f"{h} h"
    return _duration_text(fmt, secs)


def plural(n: int, noun: str) -> str:
    """'1 epoch', '3 epochs', '0 runs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def time_left(secs: float, what: str = "") -> str:
    """' | ~1 min 5 s left' (what: ' in the runs' and the like) for progress lines; at least a second, where
    '~0 s left' would read as done."""
    return f" | ~{duration(max(secs, 1.0))} left{what}"


def minutes_seconds(secs: float | None) -> str:
    """Tenths of a second below a minute, minutes and whole seconds from one (no hours): '45.8 s', '1 min 0 s',
    '11 min 22 s', '75 min 3 s' (the benchmarks' generated tables)."""
    def fmt(value: float) -> str:
        m, s = divmod(round(value), 60)
        return f"{m} min {s} s" if m else f"{value:.1f} s"
    return _duration_text(fmt, secs)


def compact_duration(secs: float | None) -> str:
    """A short duration for a table cell: '9.5 s' below 10 s, '46 s', '1m 06s', '1h 05m' (the report)."""
    def fmt(value: float) -> str:
        s = round(value)
        if s < 60:
            return f"{value:.1f} s" if value < 10 else f"{s} s"
        if s < 3600:
            return f"{s // 60}m {s % 60:02d}s"
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return _duration_text(fmt, secs)


# ---------------------------------------------------------------------------------------------------------
# counts and sizes


def count(value: float | None) -> str:
    """A count, or a mean of counts: '6', '6.5' (one decimal when not whole)."""
    if missing(value):
        return MISSING
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def abbreviated_count(value: float | None) -> str:
    """A large count with a suffix: '1.23M', '45.3k', '512' (parameters)."""
    if missing(value):
        return MISSING
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def mflops(value: float | None) -> str:
    """MFLOPs per image: '1,234.5', '12.3'; below one, three decimals: '0.123'."""
    if missing(value):
        return MISSING
    return f"{value:,.1f}" if value >= 1 else f"{value:.3f}"
