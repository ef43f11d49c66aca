"""IDX parsing, locating/verifying/downloading the files, splits, and the inspection helpers."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import math
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlab import CLASSES
from fashionlab.data import (
    load_fashion_mnist,
    pixel_stats,
    read_idx,
    sources,
    stratified_split,
    stratified_subset,
)
from fashionlab.data.idx import decompressed_bytes, write_idx
from fashionlab.data.inspect import save_grid, summarize
from fashionlab.data.sources import FILES, SYSTEM_DIR, default_cache_dir, locate
from fashionlab.errors import ConfigError, DataError

# ---------------------------------------------------------------- IDX parser


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, dtype: type, compress: bool) -> None:
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / "a.idx", array, compress=compress)  # no .gz: detection is by magic
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_plain_file_named_gz_is_read_as_plain(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.arange(10, dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(path), np.arange(10))


def _raw_idx(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
        (_raw_idx(0x0A, (3,), b"abc"), "unknown IDX dtype code 0x0a"),
        (_raw_idx(0x08, (2, 3), b"abcd"), "truncated: expected 6 payload bytes, found 4"),
        (_raw_idx(0x0C, (2,), b"12345678" + b"x"), "1 trailing bytes"),
        (bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big"), "truncated header"),
        (b"\0\0", "not an IDX file"),
    ],
    ids=["magic", "dtype", "truncated", "trailing", "dims", "tiny"],
)
def test_idx_defects_are_data_errors(tmp_path: Path, data: bytes, message: str) -> None:
    for path, content in ((tmp_path / "x-ubyte", data), (tmp_path / "x-ubyte.gz", gzip.compress(data))):
        path.write_bytes(content)
        with pytest.raises(DataError, match=message) as info:
            read_idx(path)
        assert path.name in str(info.value) and "\n" not in str(info.value)


def test_corrupt_gzip_is_data_error(tmp_path: Path) -> None:
    good = gzip.compress(_raw_idx(0x08, (100,), bytes(range(100))))
    bad_crc = good[:-8] + bytes(4) + good[-4:]
    for name, content in (("crc.gz", bad_crc), ("eof.gz", good[: len(good) // 2])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=f"{name} is (corrupt|truncated) gzip"):
            read_idx(tmp_path / name)


def test_missing_file_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset file .*nope not found"):
        decompressed_bytes(tmp_path / "nope")


# ---------------------------------------------------------------- locating


def _hashes(directory: Path) -> dict[str, str]:
    files, missing = sources.find_files(directory)
    assert not missing
    return {name: hashlib.sha256(decompressed_bytes(p)).hexdigest() for name, p in files.items()}


@pytest.fixture
def places(tmp_path: Path, make_synthetic_data, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Four different synthetic datasets: explicit dir, env dir, cache (via XDG) and system dir."""
    dirs = {
        "data_dir": make_synthetic_data(tmp_path / "explicit", n_train=20, n_test=10, seed=1),
        "env": make_synthetic_data(tmp_path / "env", n_train=20, n_test=10, seed=2),
        "cache": make_synthetic_data(default_cache_dir(), n_train=20, n_test=10, seed=3),
        "system": make_synthetic_data(tmp_path / "system", n_train=20, n_test=10, seed=4, compress=False),
    }
    monkeypatch.setenv("FASHIONLAB_DATA", str(dirs["env"]))
    return dirs


def test_locate_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def where(**kwargs) -> tuple[Path, str]:
        source = locate(verify=False, download=False, system_dir=places["system"], **kwargs)
        return source.path, source.origin

    assert where(data_dir=places["data_dir"]) == (places["data_dir"], "--data-dir")
    assert where() == (places["env"], "$FASHIONLAB_DATA")
    monkeypatch.delenv("FASHIONLAB_DATA")
    assert where() == (places["cache"], "cache")
    for path in places["cache"].iterdir():
        path.unlink()
    assert where() == (places["system"], "system")


def test_system_dir_env_override(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASHIONLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(places["system"].parent / "empty-cache"))
    monkeypatch.setenv("FASHIONLAB_SYSTEM_DIR", str(places["system"]))
    assert locate(verify=False, download=False).origin == "system"
    assert SYSTEM_DIR == Path("/usr/share/datasets/fashion-mnist")


def test_xdg_cache_home_and_home_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "fashionlab" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "fashionlab" / "fashion-mnist"


@pytest.mark.parametrize("how", ["data_dir", "env"])
def test_named_dir_missing_or_incomplete_does_not_fall_through(
    places: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    incomplete = places["data_dir"]
    (incomplete / "t10k-labels-idx1-ubyte.gz").unlink()
    for directory, message in ((tmp_path / "typo", "no such directory"), (incomplete, "missing t10k-labels")):
        kwargs = {"data_dir": directory} if how == "data_dir" else {}
        if how == "env":
            monkeypatch.setenv("FASHIONLAB_DATA", str(directory))
        with pytest.raises(DataError, match=message) as info:
            locate(verify=False, system_dir=places["system"], **kwargs)
        assert str(directory) in str(info.value)


def test_plain_file_preferred_over_gz(synthetic_data_dir: Path) -> None:
    name = "train-labels-idx1-ubyte"
    (synthetic_data_dir / name).write_bytes(decompressed_bytes(synthetic_data_dir / f"{name}.gz"))
    assert locate(synthetic_data_dir, verify=False).files[name] == synthetic_data_dir / name


def test_nothing_found_without_download_explains_options(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        locate(download=False, system_dir=tmp_path / "none")
    for option in ("--data-dir", "$FASHIONLAB_DATA", "apt-get install dataset-fashion-mnist", "download"):
        assert option in str(info.value)


# ---------------------------------------------------------------- verification


def test_sha_mismatch_names_file_and_hashes_and_leaves_it_alone(synthetic_data_dir: Path) -> None:
    path = synthetic_data_dir / "train-images-idx3-ubyte.gz"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(DataError) as info:
        locate(synthetic_data_dir)
    message = str(info.value)
    actual = hashlib.sha256(decompressed_bytes(path)).hexdigest()
    assert path.name in message and FILES["train-images-idx3-ubyte"] in message and actual in message
    assert "replace it with an original copy" in message and "\n" not in message
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in synthetic_data_dir.iterdir()) == sorted(f"{n}.gz" for n in FILES)


def test_skip_verify_env(synthetic_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHIONLAB_SKIP_VERIFY", "1")
    source = locate(synthetic_data_dir)
    assert source.origin == "--data-dir" and source.sha256 == _hashes(synthetic_data_dir)


def test_cache_mismatch_advice_and_memo(make_synthetic_data, tmp_path: Path, monkeypatch) -> None:
    cache = make_synthetic_data(default_cache_dir(), n_train=20, n_test=10)
    with pytest.raises(DataError, match="delete it and re-run"):
        locate(system_dir=tmp_path / "none")
    # The first call memoised every hash; unchanged files are not read again.
    monkeypatch.setattr(sources, "decompressed_bytes", _fail)
    assert locate(verify=False, system_dir=tmp_path / "none").sha256 == _hashes(cache)
    os.utime(cache / "t10k-labels-idx1-ubyte.gz", ns=(1, 1))
    with pytest.raises(AssertionError, match="re-read"):
        locate(verify=False, system_dir=tmp_path / "none")


def _fail(path: Path) -> bytes:
    raise AssertionError(f"re-read {path}")


# ---------------------------------------------------------------- downloads


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server; tests fill in `routes` (URL path -> body), everything else is 404."""
    handler = type("Handler", (_Handler,), {"routes": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.routes
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def served(make_synthetic_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The .gz bodies of a small synthetic dataset, with FILES patched to its hashes."""
    origin = make_synthetic_data(tmp_path / "upstream", n_train=20, n_test=10)
    monkeypatch.setattr(sources, "FILES", _hashes(origin))
    return {name: (origin / f"{name}.gz").read_bytes() for name in FILES}


def _serve(routes: dict[str, bytes], prefix: str, bodies: dict[str, bytes]) -> None:
    routes.update({f"{prefix}{name}.gz": body for name, body in bodies.items()})


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_download_into_cache(server, served: dict[str, bytes], tmp_path: Path) -> None:
    base, routes = server
    _serve(routes, "/m1/", served)
    source = locate(mirrors=[f"{base}/m1/"], progress=False, system_dir=tmp_path / "none")
    cache = default_cache_dir()
    assert (source.origin, source.path) == ("downloaded", cache)
    assert source.sha256 == sources.FILES
    assert {p.name for p in cache.iterdir() if not p.name.startswith(".sha256")} == {f"{n}.gz" for n in FILES}
    assert locate(download=False, system_dir=tmp_path / "none").origin == "cache"


def test_download_falls_back_to_next_mirror(server, served: dict[str, bytes], tmp_path: Path) -> None:
    base, routes = server
    _serve(routes, "/good/", served)
    mirrors = [_closed_port_url(), f"{base}/missing/", f"{base}/good/"]
    source = locate(mirrors=mirrors, progress=False, system_dir=tmp_path / "none")
    assert source.origin == "downloaded" and source.sha256 == sources.FILES


def test_download_wrong_bytes_everywhere(server, served: dict[str, bytes], tmp_path: Path) -> None:
    base, routes = server
    wrong = {name: gzip.compress(b"not the data") for name in served}
    _serve(routes, "/a/", wrong)
    _serve(routes, "/b/", {name: b"<html>not gzip</html>" for name in served})
    with pytest.raises(DataError) as info:
        locate(mirrors=[f"{base}/a/", f"{base}/b/"], progress=False, system_dir=tmp_path / "none")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "wrong content" in message and "\n" not in message
    assert [p for p in default_cache_dir().iterdir()] == []


def test_download_all_404(server, served: dict[str, bytes], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DataError, match="could not download .*/a/.*HTTP 404.*/b/.*HTTP 404"):
        locate(mirrors=[f"{base}/a/", f"{base}/b/"], progress=False, system_dir=tmp_path / "none")
    assert list(default_cache_dir().iterdir()) == []


# ---------------------------------------------------------------- loading, splits, stats


def test_load_synthetic(synthetic_data_dir: Path) -> None:
    ds = load_fashion_mnist(synthetic_data_dir, verify=False)
    assert ds.train_x.shape == (600, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.train_y.shape == (600,) and ds.train_y.dtype == torch.int64
    assert ds.test_x.shape == (200, 28, 28) and ds.test_y.shape == (200,)
    assert torch.bincount(ds.train_y).tolist() == [60] * 10
    sha = ds.source.sha256
    assert ds.test_sha256 == f"{sha['t10k-images-idx3-ubyte']}:{sha['t10k-labels-idx1-ubyte']}"


@pytest.mark.parametrize(
    ("name", "array", "message"),
    [
        ("train-images-idx3-ubyte.gz", np.zeros((600, 27, 27), np.uint8), "28x28"),
        ("train-labels-idx1-ubyte.gz", np.zeros(599, np.uint8), "expected 600 uint8 labels"),
        ("t10k-labels-idx1-ubyte.gz", np.full(200, 10, np.uint8), "label 10 out of range"),
    ],
)
def test_load_rejects_inconsistent_files(synthetic_data_dir: Path, name: str, array, message: str) -> None:
    write_idx(synthetic_data_dir / name, array, compress=True)
    with pytest.raises(DataError, match=message):
        load_fashion_mnist(synthetic_data_dir, verify=False)


def _uneven_labels() -> torch.Tensor:
    counts = [100, 57, 33, 10, 1, 0, 75, 20, 9, 44]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_stratified_split() -> None:
    labels = _uneven_labels()
    train, val = stratified_split(labels, 0.2, seed=1)
    assert train.dtype == val.dtype == torch.long
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    for c in range(10):
        n_c = int((labels == c).sum())
        assert abs(int((labels[val] == c).sum()) - 0.2 * n_c) <= 1
    again = stratified_split(labels, 0.2, seed=1)
    assert torch.equal(again[1], val) and torch.equal(again[0], train)
    assert not torch.equal(stratified_split(labels, 0.2, seed=2)[1], val)


def test_stratified_split_zero_and_invalid() -> None:
    labels = _uneven_labels()
    train, val = stratified_split(labels, 0.0, seed=0)
    assert len(val) == 0 and len(train) == len(labels)
    for bad in (1.5, 1.0, -0.1, math.nan):
        with pytest.raises(ConfigError, match="val_fraction"):
            stratified_split(labels, bad, seed=0)


def test_stratified_subset() -> None:
    labels = _uneven_labels()
    labels = labels[labels != 5]  # every class present has >= 1 sample; class 4 has exactly 1
    idx = stratified_subset(labels, 9, seed=0)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
    big = labels[labels != 4]
    idx = stratified_subset(big, 30, seed=3)
    per_class = torch.bincount(big[idx]).tolist()
    assert len(set(idx.tolist())) == 30 and max(per_class) - min(c for c in per_class if c) <= 1
    assert torch.equal(idx, stratified_subset(big, 30, seed=3))
    for bad in (0, 10, 100_000):
        with pytest.raises(ConfigError, match="subset size"):
            stratified_subset(labels, bad, seed=0)


def test_pixel_stats_exact() -> None:
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = pixel_stats(images)
    as_float = images.double() / 255
    assert mean == pytest.approx(float(as_float.mean()), abs=1e-12)
    assert std == pytest.approx(float(as_float.std(unbiased=False)), abs=1e-12)


# ---------------------------------------------------------------- inspection


def test_summarize_and_grid(synthetic_data_dir: Path, tmp_path: Path) -> None:
    ds = load_fashion_mnist(synthetic_data_dir, verify=False)
    train_idx, val_idx = stratified_split(ds.train_y, 0.1, seed=0)
    summary = summarize(ds, train_idx, val_idx)
    assert summary["origin"] == "--data-dir" and summary["source"] == str(synthetic_data_dir)
    assert summary["splits"]["train"]["count"] == 540 and summary["splits"]["val"]["per_class"][CLASSES[3]] == 6
    assert summary["splits"]["test"]["count"] == 200
    assert 0 < summary["pixel_mean"] < 1 and 0 < summary["pixel_std"] < 1
    out = save_grid(ds, tmp_path / "grid.png", per_class=4)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.height == 10 * 58 and image.width == 110 + 4 * 58
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_data(real_data) -> None:
    ds = real_data
    assert ds.train_x.shape == (60000, 28, 28) and ds.test_x.shape == (10000, 28, 28)
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    mean, std = pixel_stats(ds.train_x)
    assert mean == pytest.approx(0.286, abs=1e-3) and std == pytest.approx(0.353, abs=1e-3)
    assert ds.source.sha256 == FILES


@pytest.mark.realdata
def test_real_data_from_system_dir(real_data_dir: Path) -> None:
    if real_data_dir != SYSTEM_DIR:
        pytest.skip(f"real data is in {real_data_dir}, not {SYSTEM_DIR}")
    source = locate(download=False, progress=False)  # the autouse fixture hid $FASHIONLAB_DATA and the cache
    assert source.origin == "system" and source.path == SYSTEM_DIR
