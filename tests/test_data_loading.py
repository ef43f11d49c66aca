"""--data-loading memory|stream|auto: two ways to feed a user's images, one result; the decode cache behind memory
loading; the worker pool that decodes. Data nobody here wrote: scikit-learn's digit scans, written out as PNGs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fashionlab
import fashionlab.data.own as own
from fashionlab.cli import main
from fashionlab.data import channel_stats
from fashionlab.data.decoding import decode_files
from fashionlab.data.own import read_dataset
from fashionlab.data.stream import FileImages, materialize
from fashionlab.errors import ConfigError, DataError
from fashionlab.imageprep import read_dataset_image
from test_own_data import coloured_squares, write_digits

QUICK = dict(model="cnn2", epochs=2, batch_size=64, device="cpu", precision="fp32", seed=0, image_size="16")


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("loading") / "digits", splits=True)


@pytest.fixture(scope="module")
def memory_and_stream(digits_dir, tmp_path_factory):
    """cnn2 (dropout: random draws between batches) trained twice on the digits at 16x16, once from memory and
    once streamed from the files."""
    out = tmp_path_factory.mktemp("runs")
    os.environ["XDG_CACHE_HOME"] = str(out / "cache")  # a module fixture runs outside the per-test isolation
    try:
        runs = {loading: fashionlab.train(data=str(digits_dir), data_loading=loading, out=str(out / loading),
                                          verbose=False, **QUICK) for loading in ("memory", "stream")}
    finally:
        del os.environ["XDG_CACHE_HOME"]
    return runs


def without_time(path: Path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    drop = rows[0].index("seconds")
    return [[v for i, v in enumerate(row) if i != drop] for row in rows]


def test_stream_trains_to_exactly_what_memory_trains_to(memory_and_stream):
    memory, stream = (Path(memory_and_stream[k].path) for k in ("memory", "stream"))
    assert without_time(memory / "metrics.csv") == without_time(stream / "metrics.csv")
    assert np.array_equal(np.load(memory / "test_probs.npy"), np.load(stream / "test_probs.npy"))
    m, s = (json.loads((p / "config.json").read_text()) for p in (memory, stream))
    assert m["runtime"]["data_loading"] == "memory" and s["runtime"]["data_loading"] == "stream"
    assert m["data"] == s["data"]  # same fingerprint, test set digest, normalisation and split sizes


def test_a_streamed_run_is_evaluated_again_from_its_files(memory_and_stream, capsys):
    stream = Path(memory_and_stream["stream"].path)
    before = json.loads((stream / "test_metrics.json").read_text())
    assert main(["evaluate", str(stream)]) == 0
    after = json.loads((stream / "test_metrics.json").read_text())
    assert after["accuracy"] == before["accuracy"] and after["macro_f1"] == before["macro_f1"]


def test_corruptions_are_refused_for_a_run_not_at_28x28(memory_and_stream, capsys):
    code = main(["evaluate", str(memory_and_stream["memory"].path), "--corruptions"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "28x28" in err and "16x16" in err


def test_memory_and_stream_read_the_same_images_gray_rgb_and_resized(tmp_path):
    """A folder mixing RGB squares and a grayscale image, resized to 10x10: a gray image in a three-channel
    dataset is prepared as L and repeated in memory, converted to RGB per batch when streamed."""
    coloured_squares(tmp_path / "sq")
    gray = np.random.default_rng(3).integers(0, 256, size=(12, 12), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "sq" / "train" / "red" / "gray.png")
    memory = read_dataset(str(tmp_path / "sq"), image_size=(10, 10), loading="memory")
    stream = read_dataset(str(tmp_path / "sq"), image_size=(10, 10), loading="stream")
    assert isinstance(stream.train_x, FileImages) and not isinstance(memory.train_x, FileImages)
    assert memory.loading == "memory" and stream.loading == "stream"
    assert stream.train_x.shape == tuple(memory.train_x.shape) == (22, 3, 10, 10)
    assert torch.equal(materialize(stream.train_x), memory.train_x)
    assert torch.equal(materialize(stream.test_x), memory.test_x)
    assert channel_stats(stream.train_x) == channel_stats(memory.train_x)
    assert stream.test_sha256 == memory.test_sha256 and stream.identity == memory.identity
    row = stream.train_files.index("train/red/gray.png")
    assert torch.equal(memory.train_x[row], memory.train_x[row, :1].expand(3, -1, -1))  # the one band, thrice


@pytest.mark.parametrize("size", [(5, 5), (12, 12), (7, 19), (30, 16)])
def test_gray_resized_then_repeated_equals_rgb_resized(tmp_path, size):
    """What memory loading relies on to choose one or three channels after every image is decoded: Pillow
    resizes each band alike, so a grayscale file read as L and repeated equals the file read as RGB."""
    rng = np.random.default_rng(size[0] * 100 + size[1])
    for k in range(5):
        path = tmp_path / f"g{k}.png"
        Image.fromarray(rng.integers(0, 256, size=(int(rng.integers(3, 40)), int(rng.integers(3, 40))),
                                     dtype=np.uint8), "L").save(path)
        as_gray = read_dataset_image(str(path), None, size).pixels
        as_rgb = read_dataset_image(str(path), "RGB", size).pixels
        assert as_gray.shape == size and as_rgb.shape == (*size, 3)
        expected = np.asarray(Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR))
        assert np.array_equal(as_rgb, expected)
        assert np.array_equal(np.repeat(as_gray[..., None], 3, 2), as_rgb)


def test_a_second_read_comes_from_the_cache_without_decoding(digits_dir, monkeypatch):
    first = read_dataset(str(digits_dir), loading="memory")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "fashionlab" / "decoded"
    assert len(list(cache.glob("*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(own, "decode_files", no_decoding)
    again = read_dataset(str(digits_dir), loading="memory")
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_x, first.test_x)
    assert again.identity == first.identity and again.train_files == first.train_files
    streamed = read_dataset(str(digits_dir), loading="stream")  # the scan is in the entry too
    assert streamed.identity == first.identity
    with pytest.raises(AssertionError, match="decoded again"):  # another preparation is another entry
        read_dataset(str(digits_dir), loading="memory", image_size=(10, 10))


def test_a_changed_file_is_read_again(tmp_path):
    root = write_digits(tmp_path / "d", splits=True, indices=range(60))
    first = read_dataset(str(root), loading="memory")
    name = first.train_files[0]
    pixels = np.asarray(Image.open(root / name)).copy()
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(root / name)
    again = read_dataset(str(root), loading="memory")
    assert again.identity["fingerprint"] != first.identity["fingerprint"]
    assert np.array_equal(again.train_x[0].numpy(), pixels)
    assert torch.equal(again.train_x[1:], first.train_x[1:])


def test_a_damaged_or_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    root = write_digits(tmp_path / "d", splits=True, indices=range(60))
    expected = read_dataset(str(root), loading="memory")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "fashionlab"
    for f in (cache / "decoded").glob("*.npy"):
        f.write_bytes(f.read_bytes()[:100])  # truncated, as by a full disk
    for f in (cache / "memo").glob("*.json"):
        f.write_text("{not json")
    assert torch.equal(read_dataset(str(root), loading="memory").train_x, expected.train_x)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    again = read_dataset(str(root), loading="memory")
    assert torch.equal(again.train_x, expected.train_x) and blocked.read_text().startswith("a file")


def test_decoding_in_worker_processes_gives_what_one_process_gives(digits_dir):
    paths = sorted(str(p) for p in (digits_dir / "train").rglob("*.png"))[:300]
    paths.insert(7, str(digits_dir / "missing.png"))
    one = decode_files(paths, None, (6, 6), workers=1, progress=False)
    two = decode_files(paths, None, (6, 6), workers=2, progress=False)
    assert [g.error for g in one] == [g.error for g in two] and one[7].error and not one[8].error
    assert all(a.sha256 == b.sha256 and a.size == b.size and np.array_equal(a.pixels, b.pixels)
               for a, b in zip(one, two) if a.error is None)


def test_a_long_decode_says_how_far_it_is_and_the_time_left_in_a_log(digits_dir, monkeypatch, capsys):
    """Off a terminal (capsys is not one) a line every LINE_SECONDS; here every chunk, with the interval at 0."""
    import fashionlab.data.decoding as decoding

    monkeypatch.setattr(decoding, "LINE_SECONDS", 0.0)
    paths = sorted(str(p) for p in (digits_dir / "train").rglob("*.png"))[:200]
    decode_files(paths, None, (6, 6), workers=1)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("decoding images: ")]
    assert len(lines) == 199 and lines[0].startswith("decoding images: 1/200 | ~") and lines[-1].endswith(" left")
    assert "199/200" in lines[-1]  # none for the last image: the closing line says it is done
    monkeypatch.setattr(decoding, "LINE_SECONDS", 3600.0)
    decode_files(paths, None, (6, 6), workers=1)
    assert "decoding images: " not in capsys.readouterr().err  # a short decode is quiet


def test_auto_streams_what_does_not_fit_the_budget_and_says_so(digits_dir, monkeypatch):
    chosen = read_dataset(str(digits_dir), loading="auto")
    assert chosen.loading == "memory" and "within" in chosen.loading_note and "budget" in chosen.loading_note
    monkeypatch.setattr(own, "memory_budget", lambda: 1000)
    chosen = read_dataset(str(digits_dir), loading="auto")
    assert chosen.loading == "stream" and "over the" in chosen.loading_note


def test_arrays_and_fashion_mnist_are_not_streamed(tmp_path, capsys):
    x = np.zeros((20, 8, 8), np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    with pytest.raises((ConfigError, DataError), match="stream"):
        read_dataset(str(tmp_path / "d.npz"), loading="stream")
    assert read_dataset(str(tmp_path / "d.npz"), loading="auto").loading == "memory"
    code = main(["train", "--data-loading", "stream", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--data-loading" in err
    assert not (tmp_path / "run").exists()


def test_a_script_without_a_main_guard_decodes_in_worker_processes(digits_dir, tmp_path):
    """A user's script calling fashionlab at top level (no `if __name__ == "__main__":`): the decoding workers must
    not run it again (spawn would: each worker would start the script over and fail)."""
    import subprocess
    import sys

    script = tmp_path / "mine.py"
    script.write_text(
        "from fashionlab.data.own import read_dataset\n"
        f"ds = read_dataset({str(digits_dir)!r}, loading='memory', workers=2, progress=False)\n"
        "print('read', len(ds.train_y), flush=True)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [f"read {len(read_dataset(str(digits_dir)).train_y)}"]
