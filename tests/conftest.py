"""Shared fixtures: synthetic Fashion-MNIST-shaped data, isolation from the user's cache, real data.

Synthetic data cannot match the real sha256s, so tests that load it pass `verify=False` or set
`FASHIONLAB_SKIP_VERIFY=1` (the `synthetic_env` fixture does, for code that calls `locate()` itself).
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fashionlab.data.idx import write_idx
from fashionlab.data.sources import locate
from fashionlab.errors import DataError


def write_synthetic_dataset(
    directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, compress: bool = True
) -> Path:
    """Write the four IDX files: balanced labels, dim noise, and a bright horizontal bar whose row
    depends on the class, so even a small CNN learns something in an epoch."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            row = 3 + 2 * int(c)
            images[i, row : row + 2, 4:24] = rng.integers(200, 256, size=(2, 20), dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return directory


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's $FASHIONLAB_DATA or writes to their cache (downloads, hash memos)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in ("FASHIONLAB_DATA", "FASHIONLAB_SKIP_VERIFY", "FASHIONLAB_SYSTEM_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_synthetic_data() -> Callable[..., Path]:
    """`write_synthetic_dataset(directory, n_train=600, n_test=200, seed=0, compress=True)`."""
    return write_synthetic_dataset


class Untouchable:
    """Stands in for the test images: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError("the test set was read")

    def __getitem__(self, key):
        raise AssertionError("the test set was read")

    def __len__(self):
        raise AssertionError("the test set was read")


def blind(data):
    """`data` with a test set that cannot be read: for code that must never look at it."""
    import dataclasses

    return dataclasses.replace(data, test_x=Untouchable(), test_y=Untouchable())


@pytest.fixture
def synthetic_data_dir(tmp_path: Path) -> Path:
    """A directory with 600 train / 200 test synthetic images (gzip-compressed IDX files)."""
    return write_synthetic_dataset(tmp_path / "synthetic")


@pytest.fixture
def synthetic_env(synthetic_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make plain `locate()` (and so the CLI) find the synthetic data: $FASHIONLAB_DATA points at it,
    verification is skipped, and the system directory is hidden."""
    monkeypatch.setenv("FASHIONLAB_DATA", str(synthetic_data_dir))
    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")
    monkeypatch.setenv("FASHIONLAB_SYSTEM_DIR", str(tmp_path / "no-system-dir"))
    return synthetic_data_dir


@functools.cache
def _real_data_dir() -> tuple[Path | None, str]:
    """Where the real files are (checked once, before any test changes the environment), or why not."""
    try:
        return locate(download=False, progress=False).path, ""
    except DataError as e:
        return None, f"real Fashion-MNIST not available: {e}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Runs before fixtures, so the user's own $FASHIONLAB_DATA and cache are still visible here.
    if item.get_closest_marker("realdata") and _real_data_dir()[0] is None:
        pytest.skip(_real_data_dir()[1])


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory holding verified real Fashion-MNIST files; skips the test if there is none."""
    path, reason = _real_data_dir()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def real_data(real_data_dir: Path):
    """The real dataset, loaded once per session."""
    from fashionlab.data import load_fashion_mnist

    return load_fashion_mnist(real_data_dir, download=False, progress=False)


# A tiny trained cnn1 run (synthetic data), trained once per session; tests that tamper with a run folder take
# `run`, a fresh copy of it.
@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fashionlab.config import build_config
    from fashionlab.data import load_fashion_mnist
    from fashionlab.train import train

    root = tmp_path_factory.mktemp("trained")
    data = load_fashion_mnist(write_synthetic_dataset(root / "data", n_train=300, n_test=100), verify=False,
                              progress=False)
    cfg = dict(model="cnn1", epochs=1, batch_size=64, val_fraction=0.2, device="cpu", precision="fp32",
               channels_last=False, extra={"width": 8}, out=str(root / "run"), data_dir=str(root / "data"))
    return train(build_config(cfg), data=data, verbose=False)


@pytest.fixture
def run(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the trained run to tamper with; `evaluate` reads its synthetic test set."""
    import shutil

    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A plain 28x28 image to predict."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "item.png")
    return tmp_path / "item.png"


# A test that opens a FIFO must fail, not hang: the alarm turns a block into an error after 60 s.
class Blocked(BaseException):
    """Raised by the alarm: something blocked (a BaseException, so no `except Exception` can swallow it)."""


@pytest.fixture
def alarm():
    def ring(*_):
        raise Blocked("blocked for 60 s: a FIFO was opened?")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
