"""fashionlab.numfmt: every number format, against strings written by hand, with its edge cases (zero, negative,
rounding at a unit boundary, None/NaN/infinity -> "n/a")."""

from __future__ import annotations

import math

import pytest

from fashionlab import numfmt
from fashionlab.numfmt import (
    abbreviated_count,
    accuracy_mean_sd,
    accuracy_over_seeds,
    compact_duration,
    count,
    duration,
    mean_sd,
    mflops,
    minutes_seconds,
    p_statement,
    p_value,
    percent,
    percent_number,
    plural,
    points,
    points_ci,
    seconds,
    signed,
    time_left,
    true_minus,
)

NOTHING = [None, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value, text", [
    (46.4, "46 s"), (0, "0 s"), (0.4, "0 s"), (59.4, "59 s"), (59.6, "1 min"), (60, "1 min"), (61, "1 min 1 s"),
    (310, "5 min 10 s"), (3599, "59 min 59 s"), (3599.6, "1 h"), (3600, "1 h"), (5399, "1 h 30 min"),
    (5400, "1 h 30 min"), (7170, "2 h"), (86399, "24 h"), (-90, "-1 min 30 s"), (-0.0, "0 s"),
])
def test_duration_in_words(value, text):
    assert duration(value) == text


def test_plural():
    assert [plural(1, "epoch"), plural(3, "epoch"), plural(0, "run")] == ["1 epoch", "3 epochs", "0 runs"]


def test_time_left_never_reads_as_done():
    assert [time_left(0.2), time_left(0.6), time_left(65), time_left(20, " in the runs")] == [
        " | ~1 s left", " | ~1 s left", " | ~1 min 5 s left", " | ~20 s left in the runs"]


@pytest.mark.parametrize("value, text", [
    (45.83, "45.8 s"), (0, "0.0 s"), (59.4, "59.4 s"), (59.5, "1 min 0 s"), (60, "1 min 0 s"), (66, "1 min 6 s"),
    (682.11, "11 min 22 s"), (4503, "75 min 3 s"), (-66, "-1 min 6 s"), (-0.0, "0.0 s"),
])
def test_minutes_seconds(value, text):
    assert minutes_seconds(value) == text


@pytest.mark.parametrize("value, text", [
    (0, "0.0 s"), (9.94, "9.9 s"), (9.96, "10.0 s"), (10, "10 s"), (45.83, "46 s"), (59.6, "1m 00s"), (66, "1m 06s"),
    (3599, "59m 59s"), (3629, "1h 00m"), (5400, "1h 30m"), (123456.7, "34h 17m"), (-66, "-1m 06s"),
])
def test_compact_duration(value, text):
    assert compact_duration(value) == text


def test_seconds():
    assert [seconds(45.83), seconds(45.83, 0), seconds(0), seconds(-1.25), seconds(0.05, 0)] == [
        "45.8 s", "46 s", "0.0 s", "-1.2 s", "0 s"]  # -1.25 -> -1.2: round half to even on the binary value


@pytest.mark.parametrize("fmt", [duration, minutes_seconds, compact_duration, seconds])
@pytest.mark.parametrize("value", NOTHING)
def test_durations_of_nothing_are_na(fmt, value):
    assert fmt(value) == "n/a"


def test_percent():
    assert [percent(0.945), percent(0.94513), percent(1.0), percent(0), percent(-0.0123), percent(0.93, 0),
            percent(0.931, 1), percent(0.99995)] == [
        "94.50%", "94.51%", "100.00%", "0.00%", "-1.23%", "93%", "93.1%", "100.00%"]
    assert [percent_number(0.945), percent_number(0), percent_number(-0.5), percent_number(0.0123, 1)] == [
        "94.50", "0.00", "-50.00", "1.2"]


def test_points_are_signed_differences_of_fractions():
    assert [points(0.012), points(-0.0034), points(0), points(0.00123, 2), points(-0.5, 2)] == [
        "+1.2", "-0.3", "+0.0", "+0.12", "-50.00"]
    assert [signed(1.234), signed(-1.234), signed(0), signed(2, 1)] == ["+1.23", "-1.23", "+0.00", "+2.0"]
    assert points(-0.00004) == "-0.0"  # a negative value that rounds to zero keeps its sign, as Python's format


def test_points_ci():
    assert points_ci(1.234, 0.1, 2.36) == "+1.23 pts [+0.10, +2.36]"
    assert points_ci(-1.234, -2.0, -0.5) == "-1.23 pts [-2.00, -0.50]"
    assert points_ci(0.5, None, None) == "+0.50 pts (no CI)"
    assert points_ci(None, None, None) == points_ci(math.nan, 0, 1) == "n/a"


def test_true_minus():
    assert true_minus("-1.2 pts [-0.3, +0.4]") == "−1.2 pts [−0.3, +0.4]"
    assert true_minus(points(-0.012)) + " pts" == "−1.2 pts"


def test_accuracy_mean_sd():
    assert accuracy_mean_sd(0.94513, 0.001308, 3) == "94.51 ± 0.13%"
    assert accuracy_mean_sd(0.9468, 0.0, 1) == "94.68%"  # one run: no spread to show
    assert accuracy_mean_sd(None, None, 0) == "n/a"
    assert accuracy_mean_sd(0.9, math.nan, 2) == "90.00 ± n/a%"
    assert accuracy_over_seeds(0.94513, 0.001308, 3) == "94.51 ± 0.13% (3 seeds)"
    assert accuracy_over_seeds(0.9468, 0.0, 1) == "94.68% (1 seed)"


def test_mean_sd_with_its_own_formats():
    assert mean_sd(0.021, 0.0042, 3, points, lambda v: percent_number(v, 1), " pts") == "+2.1 ± 0.4 pts"
    assert mean_sd(0.021, 0.0, 1, points, unit=" pts") == "+2.1 pts"
    assert mean_sd(None, None, 0, points) == "n/a"
    assert mean_sd(66, 3, 2, compact_duration) == "1m 06s ± 3.0 s"


def test_p_values():
    assert [p_value(0.0), p_value(0.000999), p_value(0.001), p_value(0.0386), p_value(0.12345), p_value(1.0)] == [
        "< 0.001", "< 0.001", "0.001", "0.0386", "0.123", "1"]
    assert [p_statement(0.0005), p_statement(0.0386), p_statement(0.0386, 3), p_statement(0.5, 3)] == [
        "p < 0.001", "p = 0.0386", "p = 0.039", "p = 0.500"]
    for nothing in NOTHING:
        assert p_value(nothing) == "n/a" and p_statement(nothing) == "p = n/a"


def test_counts_and_sizes():
    assert [count(0), count(6), count(6.5), count(6.25), count(999)] == ["0", "6", "6.5", "6.2", "999"]
    assert [abbreviated_count(512), abbreviated_count(0), abbreviated_count(45321), abbreviated_count(999_999),
            abbreviated_count(1_234_567)] == ["512", "0", "45.3k", "1000.0k", "1.23M"]  # 1000.0k: as the report
    # has always written it (the suffix is chosen before rounding)
    assert [mflops(1234.56), mflops(12.34), mflops(1), mflops(0.1234), mflops(0)] == [
        "1,234.6", "12.3", "1.0", "0.123", "0.000"]


@pytest.mark.parametrize("fmt", [percent, percent_number, points, signed, count, abbreviated_count, mflops])
@pytest.mark.parametrize("value", NOTHING)
def test_numbers_of_nothing_are_na(fmt, value):
    assert fmt(value) == numfmt.MISSING == "n/a"
