"""A user's image files decoded once: in worker processes, and cached under the user's cache folder.

Decoding is what reading a folder of images costs (Fashion-MNIST as 70,000 PNGs: see docs/performance.md), so
data.own hands the files to `decode_files`, which runs imageprep.read_dataset_image in a pool of worker processes
when there are enough files to pay for starting one. What came out is cached (`Cache`):

- `memo/<listing key>.json`: the dataset's fingerprint for a listing of files with these sizes and mtimes, so an
  unchanged folder is recognised from os.stat alone, without reading its bytes (as data.sources' hash memo).
- `decoded/<key>.npy` + `.json`: the prepared uint8 images (memory loading), or only what the scan found (stream
  loading: which files are bad, each image's mode and size), keyed by the fingerprint and the preparation
  (channels, image size, Pillow's version: a new decoder may round differently).

The cache lives in $XDG_CACHE_HOME/fashionlab (or ~/.cache/fashionlab), never in the user's dataset folder. It
is only an optimisation: a damaged or unwritable cache means decoding again, never an error, and each entry is
written to a temporary file and renamed, so a killed process leaves no half entry to be read.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from fashionlab.data.sources import cache_home
from fashionlab.imageprep import DatasetImage, read_dataset_image, read_dataset_images
from fashionlab.numfmt import time_left
from fashionlab.reading import MiB, read_bytes

CACHE_FORMAT = 1  # bump when what an entry holds changes: older entries are then ignored
MAX_WORKERS = 8  # decoding scales with cores; past 8 the parent collecting the results is the limit
POOL_MIN = 2000  # fewer files decode in this process: starting workers (~0.3 s each) would cost more
CHUNK = 64  # files per task sent to a worker: amortises the pickling of small results
LINE_SECONDS = 10.0  # off a terminal, a progress line this often: a log shows a long decode moving, and its end


def workers_for(n_files: int, workers: int | None = None) -> int:
    """How many processes decode `n_files`: `workers` if given, else one per core (at most MAX_WORKERS); 1 (this
    process) for a small dataset."""
    if workers is not None:
        return max(1, workers)
    if n_files < POOL_MIN:
        return 1
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def decode_files(paths: Sequence[str], mode: str | None, size: tuple[int, int] | None, *, keep: bool = True,
                 workers: int | None = None, progress: bool = True) -> list[DatasetImage]:
    """imageprep.read_dataset_image of every path, in order, in `workers_for` processes. Progress: a bar on a
    terminal, and one closing line (count, time, processes) when it took long enough to be worth saying."""
    n = len(paths)
    procs = workers_for(n, workers)
    args = [(p, mode, size, keep) for p in paths]
    start = time.perf_counter()
    bar = _Bar(n, "checking images" if not keep else "decoding images", progress)
    out: list[DatasetImage] = []
    with bar:
        if procs > 1 and multiprocessing.current_process().daemon:  # a pool's worker may not start its own
            procs = 1
        if procs == 1:
            for a in args:
                out.append(read_dataset_image(*a))
                bar.advance(1)
        else:
            with _pool_context().Pool(procs) as pool:
                chunks = [args[i:i + CHUNK] for i in range(0, n, CHUNK)]
                for results in pool.imap(read_dataset_images, chunks):
                    out.extend(results)
                    bar.advance(len(results))
    seconds = time.perf_counter() - start
    if progress and seconds > 2:
        print(f"{'decoded' if keep else 'checked'} {n:,} images in {seconds:.1f} s ({n / seconds:,.0f}/s, "
              f"{procs} process{'es' if procs > 1 else ''})", file=sys.stderr)
    return out


def _pool_context():
    """fork where the platform forks safely (Linux; as torch's DataLoader does there): a worker starts in
    milliseconds and, unlike spawn, does not re-run the user's script, which a script or notebook calling
    fashionlab at top level (no `if __name__ == "__main__":`) would otherwise do. The workers run only Pillow and
    numpy, never torch, so the parent's thread pools do not matter to them. Elsewhere: the platform's default."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


class _Bar:
    """A rich progress bar on a terminal; elsewhere (a log, a notebook's captured output) a line every LINE_SECONDS
    with the count and the time left (decode_files prints one more line at the end)."""

    def __init__(self, total: int, label: str, progress: bool):
        self.total, self.label = total, label
        self.show = progress and sys.stderr.isatty() and total >= 1000
        self.lines = progress and not sys.stderr.isatty()
        self.bar = self.task = None
        self.done, self.start = 0, time.perf_counter()
        self.last = self.start

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self

    def advance(self, k: int) -> None:
        self.done += k
        if self.bar is not None:
            self.bar.advance(self.task, k)
        elif self.lines and self.done < self.total and (now := time.perf_counter()) - self.last >= LINE_SECONDS:
            self.last = now
            left = (now - self.start) / self.done * (self.total - self.done)  # the mean rate so far
            print(f"{self.label}: {self.done:,}/{self.total:,}{time_left(left)}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


class Cache:
    """The decode cache (see the module's docstring). `root` None: $XDG_CACHE_HOME/fashionlab."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_home()

    # ------------------------------------------------------------------ fingerprints by os.stat

    @staticmethod
    def listing_key(extra: bytes, entries: Sequence[tuple[str, Path]]) -> str | None:
        """A key for (relative name, file) entries as they stand now: names, sizes, mtimes and inodes. None when
        a file cannot be stat'ed (it will be reported as bad when it is read)."""
        h = hashlib.sha256(b"listing %d\0" % CACHE_FORMAT + extra)
        for rel, path in entries:
            try:
                st = os.stat(path)
            except (OSError, ValueError):
                return None
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_dev}\n".encode("utf-8",
                                                                                                  "surrogateescape"))
        return h.hexdigest()

    def fingerprint(self, listing_key: str | None) -> str | None:
        meta = self._read_json(self.root / "memo" / f"{listing_key}.json") if listing_key else None
        value = meta.get("fingerprint") if meta else None
        return value if isinstance(value, str) and len(value) == 64 else None

    def remember(self, listing_key: str | None, fingerprint: str) -> None:
        if listing_key:
            self._write(self.root / "memo" / f"{listing_key}.json", json.dumps({"fingerprint": fingerprint}).encode())

    # ------------------------------------------------------------------ decoded images

    @staticmethod
    def entry_key(fingerprint: str, channels: int | None, size: tuple[int, int] | None) -> str:
        what = json.dumps([CACHE_FORMAT, fingerprint, channels, list(size) if size else None, PIL.__version__])
        return hashlib.sha256(what.encode()).hexdigest()

    def load(self, key: str, *, pixels: bool) -> tuple[dict[str, Any], np.ndarray | None] | None:
        """(meta, images) of an entry; images None when not asked for. None when there is no usable entry."""
        meta = self._read_json(self.root / "decoded" / f"{key}.json")
        if not meta or meta.get("format") != CACHE_FORMAT:
            return None
        if not pixels:
            return meta, None
        if not meta.get("has_pixels"):
            return None
        try:
            images = np.load(self.root / "decoded" / f"{key}.npy", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if images.dtype != np.uint8 or list(images.shape) != meta.get("shape"):
            return None
        return meta, images

    def save(self, key: str, meta: dict[str, Any], images: np.ndarray | None) -> None:
        meta = dict(meta, format=CACHE_FORMAT, has_pixels=images is not None)
        if images is not None:
            meta["shape"] = list(images.shape)
            import io

            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
            if not self._write(self.root / "decoded" / f"{key}.npy", buf.getbuffer()):
                return
        self._write(self.root / "decoded" / f"{key}.json", json.dumps(meta).encode())

    # ------------------------------------------------------------------ files

    def _read_json(self, path: Path) -> dict | None:
        try:
            if not path.is_file():
                return None
            value = json.loads(read_bytes(path, kind="json", limit=64 * MiB))
        except Exception:  # noqa: BLE001 - a damaged entry is a cache miss, never an error
            return None
        return value if isinstance(value, dict) else None

    def _write(self, path: Path, data) -> bool:
        """Write atomically (a temporary file renamed into place); False, silently, when the cache is not
        writable: it only saves time."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return True
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
