"""`--exclude FILE`: training items a run leaves out, named by a CSV with an `index` column (audit-labels'
label_issues.csv is one). An index counts the dataset's training items in file order (ds.train_x/ds.train_y, the
order `fashionlab data` and every split see them in), from 0.

Only the training portion loses them (data.load.split): the validation split stays the base run's, so runs with and
without --exclude are validated, calibrated and tested on the same images. The file is read once per run start,
through reading.py (a regular file, size-capped), and config.json records its sha256 and counts.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashionlab.errors import ConfigError
from fashionlab.reading import decode_text, parse_csv_rows, read_bytes, shorten, show_path

COLUMN = "index"
KIND = "index_csv"  # reading.CAPS / _KINDS: "--exclude file", a ConfigError
_INTEGER = re.compile(r"[0-9]{1,18}")  # a non-negative integer that fits int64; no sign, point or exponent


@dataclass(frozen=True)
class Exclusion:
    """The indices an --exclude file names (sorted, unique), and what identifies the file."""

    path: str
    sha256: str
    indices: np.ndarray  # int64, sorted, unique

    def check_range(self, n_train: int) -> None:
        """Every index names one of the dataset's n_train training items (a one-line ConfigError otherwise)."""
        if len(self.indices) and int(self.indices[-1]) >= n_train:
            raise ConfigError(f"--exclude file {show_path(self.path)}: index {int(self.indices[-1])} is out of range; "
                              f"the dataset has {n_train:,} training items (indices 0 to {n_train - 1:,})")

    def record(self, removed: int) -> dict[str, Any]:
        """config.json's data.exclude: which file, exactly (sha256), how many indices, how many left training."""
        return {"file": self.path, "sha256": self.sha256, "indices": int(len(self.indices)),
                "removed_from_training": int(removed)}


def read_exclude(path: str | os.PathLike) -> Exclusion:
    """The --exclude file at `path`: a CSV whose `index` column holds non-negative integers (other columns are
    ignored; a header with no data rows excludes nothing). Anything else is a one-line ConfigError."""
    data = read_bytes(path, kind=KIND)  # a regular file only, capped: a FIFO or a device is refused unopened
    text = decode_text(data, path, kind=KIND)
    header, rows = parse_csv_rows(text, path, kind=KIND)
    shown = show_path(path)
    names = [h.strip().lower() for h in header]
    if COLUMN not in names:
        raise ConfigError(f"--exclude file {shown} has no '{COLUMN}' column (its header: "
                          f"{shorten(', '.join(header), 80)}); give a CSV with an {COLUMN} column, e.g. "
                          "audit-labels' label_issues.csv")
    at = names.index(COLUMN)
    indices = np.empty(len(rows), dtype=np.int64)
    for k, row in enumerate(rows):
        value = row[at].strip()
        if not _INTEGER.fullmatch(value):
            raise ConfigError(f"--exclude file {shown}, data row {k + 1}: index must be a non-negative integer, got "
                              f"{shorten(row[at], 30)}")
        indices[k] = int(value)
    return Exclusion(os.fspath(path), hashlib.sha256(data).hexdigest(), np.unique(indices))
