"""--data SPEC: own images as a folder, a CSV, an .npz or IDX files (fashionlab.data.own).

The images are real scans nobody here drew: scikit-learn's 1,797 8x8 handwritten digits (values 0..16, scaled to
0..255). Each test writes them out in one format and checks that exactly the same pixels and labels come back.
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlab.data.idx import write_idx
from fashionlab.data.own import (
    HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    ImageDataset,
    parse_image_size,
    problems,
    read_dataset,
)
from fashionlab.errors import ConfigError, DataError
from folder_snapshot import snapshot

TEST_EVERY = 5  # the fixed split of folder (a): every 5th digit is a test image


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.int64) * 255 // 16).astype(np.uint8), d.target.astype(np.int64)


def split_order(split: str) -> list[int]:
    """Source indices of a split of folder (a), in the order read_dataset returns them: by file name, then class.
    The files are named by source index (0005.png), so that is source order, the classes interleaved."""
    _, y = digits()
    keep = [i for i in range(len(y)) if (i % TEST_EVERY == 0) == (split == "test")]
    return sorted(keep, key=lambda i: (rel_name(i).split("/")[1], y[i]))


def rel_name(i: int, split: str | None = None) -> str:
    return f"{split + '/' if split else ''}{digits()[1][i]}/{i:04d}.png"


def write_digits(root: Path, *, splits: bool, indices: range | list[int] | None = None) -> Path:
    x, y = digits()
    for i in indices if indices is not None else range(len(y)):
        split = ("test" if i % TEST_EVERY == 0 else "train") if splits else None
        path = root / rel_name(i, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(path)
    return root


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    """(a) DIR/train/<digit>/*.png + DIR/test/<digit>/*.png; read-only for the tests that share it."""
    return write_digits(tmp_path_factory.mktemp("split") / "digits", splits=True)


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory) -> Path:
    """(b) DIR/<digit>/*.png: the test split is a holdout."""
    return write_digits(tmp_path_factory.mktemp("flat") / "digits", splits=False)


def one_line_error(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def labels_of(ds: ImageDataset, split: str) -> list[str]:
    return [ds.classes[c] for c in getattr(ds, f"{split}_y").tolist()]


# ---------------------------------------------------------------------------------------------- the four kinds

def test_a_split_folder_gives_back_the_digits(split_folder):
    x, y = digits()
    before = snapshot(split_folder)
    ds = read_dataset(str(split_folder))
    assert ds.classes == tuple("0123456789")
    assert (ds.channels, ds.size) == (1, (8, 8))
    for split in ("train", "test"):
        order = split_order(split)
        assert getattr(ds, f"{split}_x").dtype == torch.uint8
        assert np.array_equal(getattr(ds, f"{split}_x").numpy(), x[order])
        assert np.array_equal(getattr(ds, f"{split}_y").numpy(), y[order])
        assert ds.identity["counts"][split] == {str(c): n for c, n in sorted(Counter(y[order].tolist()).items())}
    assert ds.test_files == tuple(rel_name(i, "test") for i in split_order("test"))
    assert ds.val_x is None and ds.val_y is None
    ident = ds.identity
    assert (ident["kind"], ident["holdout"], ident["image_size"], ident["skipped"]) == ("folder", False, None, 0)
    assert ident["path"] == str(split_folder.resolve()) and ident["location"] == str(split_folder)
    assert ident["size"] == [8, 8] and ident["channels"] == 1 and len(ident["fingerprint"]) == 64
    assert "val" not in ident["counts"]
    assert snapshot(split_folder) == before  # nothing written into the user's folder


def test_npz_and_idx_read_the_same_split_as_the_folder(split_folder, tmp_path):
    x, y = digits()
    tr, te = split_order("train"), split_order("test")
    np.savez_compressed(tmp_path / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    write_idx(idx_dir / "train-images-idx3-ubyte.gz", x[tr], compress=True)
    write_idx(idx_dir / "train-labels-idx1-ubyte", y[tr].astype(np.uint8))
    write_idx(idx_dir / "t10k-images-idx3-ubyte", x[te])
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", y[te].astype(np.uint8), compress=True)

    folder = read_dataset(str(split_folder))
    npz = read_dataset(str(tmp_path / "digits.npz"))
    idx = read_dataset(str(idx_dir))
    assert (npz.identity["kind"], idx.identity["kind"]) == ("npz", "idx")
    for ds in (npz, idx):
        assert ds.classes == tuple("0123456789")
        assert torch.equal(ds.train_x, folder.train_x) and torch.equal(ds.test_x, folder.test_x)
        assert torch.equal(ds.train_y, folder.train_y) and torch.equal(ds.test_y, folder.test_y)
        assert ds.test_sha256 == folder.test_sha256
        assert ds.identity["counts"] == folder.identity["counts"]
        assert ds.identity["holdout"] is False and ds.test_files == ()
    assert len({folder.identity["fingerprint"], npz.identity["fingerprint"], idx.identity["fingerprint"]}) == 3


def test_npz_class_names_val_split_and_rgba(tmp_path):
    x, y = digits()
    rgba = np.stack([x, x // 2, 255 - x, np.full_like(x, 7)], axis=-1)  # alpha 7 must simply be dropped
    np.savez(tmp_path / "d.npz", x_train=rgba[:1000], y_train=y[:1000], x_val=rgba[1000:1200], y_val=y[1000:1200],
             x_test=rgba[1200:], y_test=y[1200:], classes=np.array([f"digit {i}" for i in range(10)]))
    ds = read_dataset(str(tmp_path / "d.npz"))
    assert ds.classes == tuple(f"digit {i}" for i in range(10))
    assert ds.channels == 3 and ds.train_x.shape == (1000, 3, 8, 8)
    assert np.array_equal(ds.val_x.numpy(), rgba[1000:1200, :, :, :3].transpose(0, 3, 1, 2))
    assert ds.val_y.tolist() == y[1000:1200].tolist()
    assert sum(ds.identity["counts"]["val"].values()) == 200


def test_csv_with_a_split_column_and_class_names(split_folder):
    names = "zero one two three four five six seven eight nine".split()
    x, y = digits()
    csv_path = split_folder.parent / "labels.csv"  # beside the folder: paths are relative to the CSV's folder
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "note"])  # an extra column is allowed
        for i in range(len(y)):
            split = "test" if i % TEST_EVERY == 0 else "Train"  # case does not matter
            w.writerow([f"digits/{rel_name(i, split.lower())}", names[y[i]], split, "x"])
    ds = read_dataset(str(csv_path))
    assert ds.classes == tuple(sorted(names))
    assert ds.identity["kind"] == "csv" and ds.identity["holdout"] is False
    # CSV order is row order, which here is source order
    for split in ("train", "test"):
        order = sorted(split_order(split))
        assert np.array_equal(getattr(ds, f"{split}_x").numpy(), x[order])
        assert labels_of(ds, split) == [names[y[i]] for i in order]
    assert ds.test_files[:2] == ("digits/test/0/0000.png", "digits/test/5/0005.png")


def test_holdout_is_stratified_deterministic_and_shared_by_folder_and_csv(flat_folder, tmp_path):
    x, y = digits()
    ds = read_dataset(str(flat_folder))
    again = read_dataset(str(flat_folder), image_size=(16, 16), skip_bad=True)
    assert ds.identity["holdout"] is True and ds.val_x is None
    assert again.test_files == ds.test_files  # nothing but the files decides the holdout
    files = [rel_name(i) for i in range(len(y))]
    assert sorted(ds.test_files + ds.train_files) == sorted(files) and not set(ds.test_files) & set(ds.train_files)
    for c in range(10):
        in_class = sorted(f for f in files if f.startswith(f"{c}/"))
        n_test = round(HOLDOUT_FRACTION * len(in_class))
        assert ds.identity["counts"]["test"][str(c)] == n_test
        # the contract: per class, a generator seeded with HOLDOUT_SEED picks n_test of the sorted files
        perm = torch.randperm(len(in_class), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
        assert [f for f in ds.test_files if f.startswith(f"{c}/")] == sorted(in_class[i] for i in perm[:n_test])
    by_name = {rel_name(i): i for i in range(len(y))}
    assert np.array_equal(ds.test_x.numpy(), x[[by_name[f] for f in ds.test_files]])

    # a CSV listing the same files (absolute paths) without a split column holds out the same files, in its row
    # order: listed class by class, the same set; listed in the folder's order (by file name), the same test set
    csv_path = tmp_path / "list.csv"
    for rows, same_order in ((sorted(files), False), (sorted(files, key=lambda f: f.split("/")[::-1]), True)):
        csv_path.write_text("path,label\n" + "".join(f"{flat_folder / f},{f.split('/')[0]}\n" for f in rows))
        from_csv = read_dataset(str(csv_path))
        assert from_csv.identity["holdout"] is True
        assert sorted(from_csv.test_files) == sorted(str(flat_folder / f) for f in ds.test_files)
        assert [f for f in rows if str(flat_folder / f) in from_csv.test_files] == \
            [Path(f).relative_to(flat_folder).as_posix() for f in from_csv.test_files]  # row order kept
        assert (from_csv.test_sha256 == ds.test_sha256) is same_order


def test_a_folder_is_read_by_file_name_then_class_across_classes(tmp_path):
    """Files named 00000.png, 00001.png, ... across class folders are read in that numeric order; a name in two
    classes comes class by class (sorted folder names); the holdout is drawn as before, per class, by path."""
    x, y = digits()
    n = 60
    root = tmp_path / "numbered"
    for split, start in (("train", 0), ("test", n)):
        for k in range(n):
            i = start + k
            path = root / split / f"c{y[i]}" / f"{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(path)
    ds = read_dataset(str(root))
    assert ds.classes == tuple(f"c{d}" for d in range(10))
    assert np.array_equal(ds.train_x.numpy(), x[:n]) and ds.train_y.tolist() == y[:n].tolist()
    assert np.array_equal(ds.test_x.numpy(), x[n:2 * n]) and ds.test_y.tolist() == y[n:2 * n].tolist()
    assert [f.rsplit("/", 1)[1] for f in ds.train_files] == [f"{k:05d}.png" for k in range(n)]
    assert len({f.split("/")[1] for f in ds.train_files[:10]}) > 1  # the classes really interleave

    # the same name in two classes (and in a subfolder): by name, then class, then path
    tie = tmp_path / "tie"
    names = ("train/b/2.png", "train/a/sub/2.png", "train/a/2.png", "train/b/1.png", "train/a/3.png",
             "test/b/0.png", "test/a/9.png")
    for i, rel in enumerate(names):
        (tie / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(tie / rel)
    tied = read_dataset(str(tie))
    assert tied.train_files == ("train/b/1.png", "train/a/2.png", "train/a/sub/2.png", "train/b/2.png",
                                "train/a/3.png")
    assert tied.train_y.tolist() == [1, 0, 0, 1, 0] and tied.test_files == ("test/b/0.png", "test/a/9.png")
    assert np.array_equal(tied.train_x.numpy(), x[[3, 2, 1, 0, 4]])


def test_holdout_of_one_class_ignores_the_others(tmp_path):
    _, y = digits()
    idx = [i for i in range(300) if y[i] in (3, 5)]
    root = write_digits(tmp_path / "d", splits=False, indices=idx)
    before = [f for f in read_dataset(str(root)).test_files if f.startswith("3/")]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "5" / "9999.png")  # one more image of class 5
    after = read_dataset(str(root))
    assert [f for f in after.test_files if f.startswith("3/")] == before
    assert "5/9999.png" in after.train_files + after.test_files


def test_image_size_resizes_bilinear_and_keeps_the_fingerprint(split_folder):
    x, _ = digits()
    plain = read_dataset(str(split_folder))
    big = read_dataset(str(split_folder), image_size=(28, 28))
    assert big.train_x.shape == (len(split_order("train")), 28, 28) and big.size == (28, 28)
    i = split_order("train")[7]
    expected = np.asarray(Image.fromarray(x[i]).resize((28, 28), Image.Resampling.BILINEAR, reducing_gap=None))
    assert np.array_equal(big.train_x[7].numpy(), expected)
    assert big.identity["image_size"] == [28, 28] and big.identity["size"] == [28, 28]
    assert big.identity["fingerprint"] == plain.identity["fingerprint"]
    wide = read_dataset(str(split_folder), image_size=parse_image_size("12x20"))
    assert wide.size == (12, 20) and wide.test_x.shape[1:] == (12, 20)


def test_fingerprint_changes_with_one_pixel_and_only_then(tmp_path):
    root = write_digits(tmp_path / "d", splits=True, indices=range(60))
    first = read_dataset(str(root))
    assert read_dataset(str(root)).identity["fingerprint"] == first.identity["fingerprint"]
    target = root / rel_name(5, "test")
    pixels = np.asarray(Image.open(target)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(target)
    changed = read_dataset(str(root))
    assert changed.identity["fingerprint"] != first.identity["fingerprint"]
    assert changed.test_sha256 != first.test_sha256
    assert torch.equal(changed.train_x, first.train_x)
    target.rename(target.with_name("renamed.png"))  # same bytes, another name: another dataset
    assert read_dataset(str(root)).identity["fingerprint"] != changed.identity["fingerprint"]


# ---------------------------------------------------------------------------------------------- channels, formats

def coloured_squares(root: Path, n: int = 10) -> dict[str, np.ndarray]:
    """3 classes: a red, green or blue square on grey noise, 12x12 RGB PNGs in DIR/train and DIR/test."""
    rng = np.random.default_rng(1)
    written = {}
    for c, name in enumerate(("blue", "green", "red")):
        for i in range(n):
            img = rng.integers(60, 120, size=(12, 12, 3), dtype=np.uint8)
            img[3:9, 3:9] = 0
            img[3:9, 3:9, 2 - c] = 200 + i
            rel = f"{'test' if i < 3 else 'train'}/{name}/{i:02d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "RGB").save(root / rel)
            written[rel] = img
    return written


def test_rgb_images_give_three_channels_and_can_be_made_gray(tmp_path):
    written = coloured_squares(tmp_path / "sq")
    ds = read_dataset(str(tmp_path / "sq"))
    assert ds.classes == ("blue", "green", "red") and ds.channels == 3
    assert ds.train_x.shape == (21, 3, 12, 12) and ds.test_x.shape == (9, 3, 12, 12)
    assert np.array_equal(ds.test_x[0].numpy(), written[ds.test_files[0]].transpose(2, 0, 1))
    assert ds.identity["channels"] == 3
    gray = read_dataset(str(tmp_path / "sq"), channels=1)
    assert gray.channels == 1 and gray.test_x.shape == (9, 12, 12)
    expected = np.asarray(Image.fromarray(written[gray.test_files[4]]).convert("L"))
    assert np.array_equal(gray.test_x[4].numpy(), expected)
    assert gray.identity["fingerprint"] == ds.identity["fingerprint"]


def test_gray_npz_made_rgb_repeats_the_channel(tmp_path):
    x, y = digits()
    np.savez(tmp_path / "d.npz", x_train=x[:100, :, :, None], y_train=y[:100], x_test=x[100:150], y_test=y[100:150])
    ds = read_dataset(str(tmp_path / "d.npz"), channels=3)
    assert ds.train_x.shape == (100, 3, 8, 8)
    assert all(np.array_equal(ds.train_x[:, k].numpy(), x[:100]) for k in range(3))


def test_mixed_formats_and_upper_case_suffixes_decode_to_the_same_digit(tmp_path):
    x, _ = digits()
    root = tmp_path / "mixed"

    def save_all(folder: Path, digit: np.ndarray) -> None:
        folder.mkdir(parents=True)
        img = Image.fromarray(digit)
        img.save(folder / "a8bit.PNG")
        Image.fromarray(digit.astype(np.uint16) * 257).save(folder / "b16bit.Png")
        img.convert("P").save(folder / "cpalette.png")
        img.convert("RGBA").save(folder / "drgba.png")
        img.save(folder / "ejpeg.JPG", quality=100)
        img.save(folder / "fbmp.BMP")
        img.save(folder / "gwebp.WEBP", lossless=True)
        img.save(folder / "hgif.GIF")

    save_all(root / "train" / "zero", x[0])
    save_all(root / "train" / "one", x[1])
    Image.fromarray(x[10]).save((root / "test" / "zero").mkdir(parents=True) or root / "test" / "zero" / "t.png")
    (root / "train" / "zero" / "notes.txt").write_text("not an image")
    (root / "train" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / "one" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(x[2]).save(root / "train" / "one" / ".ipynb_checkpoints" / "copy.png")
    (root / "README").write_text("my digits")

    ds = read_dataset(str(root), channels=1)
    assert ds.classes == ("one", "zero") and ds.train_x.shape == (16, 8, 8)
    assert set(ds.ignored) == {"README", "train/.DS_Store", "train/zero/notes.txt", "train/one/.ipynb_checkpoints/"}
    for k, rel in enumerate(ds.train_files):
        digit = x[1] if rel.startswith("train/one/") else x[0]
        got = ds.train_x[k].numpy().astype(int)
        if "jpeg" in rel:
            assert np.abs(got - digit).mean() < 8, rel  # lossy, but the same digit
        else:
            assert np.array_equal(got, digit), rel
    # palette, RGBA, WebP and GIF decode to RGB, so without channels=1 the dataset is RGB
    assert read_dataset(str(root)).channels == 3


def test_a_big_jpeg_is_read_at_full_size_unless_resized(tmp_path):
    rng = np.random.default_rng(2)
    for rel in ("train/a/p.jpg", "train/b/p.jpeg", "test/a/p.JPG"):
        (tmp_path / "j" / rel).parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (1030, 1100, 3), dtype=np.uint8)).save(tmp_path / "j" / rel)
    assert read_dataset(str(tmp_path / "j")).size == (1030, 1100)  # not drafted down to ~512 as predict does
    assert read_dataset(str(tmp_path / "j"), image_size=(28, 28)).train_x.shape == (2, 3, 28, 28)


# ---------------------------------------------------------------------------------------------- bad files

def small_split(root: Path) -> Path:
    return write_digits(root, splits=True, indices=range(40))


def test_bad_image_files_are_refused_or_skipped(tmp_path):
    root = small_split(tmp_path / "d")
    for k in range(4):
        (root / "train" / "3" / f"bad{k}.png").write_bytes(b"this is not a png")
    message = one_line_error(DataError, read_dataset, str(root))
    assert "4 bad image files" in message and "train/3/bad0.png (not an image" in message
    assert "train/3/bad3.png" not in message and "..." in message and "pass --skip-bad" in message
    good = read_dataset(str(root), skip_bad=True)
    assert good.identity["skipped"] == 4 and len(good.skipped) == 4
    assert good.skipped[0].startswith("train/3/bad0.png: not an image")
    assert len(good.train_x) == 32 and "train/3/bad0.png" not in good.train_files


def test_csv_row_of_a_missing_file_is_a_bad_file(tmp_path):
    root = small_split(tmp_path / "d")
    rows = [f"{rel_name(i, 'train')},{digits()[1][i]}" for i in range(1, 40) if i % TEST_EVERY]
    (tmp_path / "d" / "l.csv").write_text("path,label\n" + "\n".join(rows) + "\ngone.png,3\n")
    message = one_line_error(DataError, read_dataset, str(root / "l.csv"))
    assert "1 bad image file: gone.png (no such file)" in message
    ds = read_dataset(str(root / "l.csv"), skip_bad=True)
    assert ds.skipped == ("gone.png: no such file",) and ds.identity["skipped"] == 1


def test_mixed_sizes_need_image_size(tmp_path):
    root = small_split(tmp_path / "d")
    for k in range(3):
        Image.fromarray(np.zeros((16, 12), np.uint8)).save(root / "train" / "1" / f"big{k}.png")
    message = one_line_error(DataError, read_dataset, str(root))
    assert "images have 2 different sizes (8x8: 40, 16x12: 3); pass --image-size N or HxW" in message
    assert read_dataset(str(root), image_size=(10, 10)).size == (10, 10)


def test_symlinked_folders_are_not_followed_and_a_loop_ends(tmp_path):
    root = small_split(tmp_path / "d")
    (root / "train" / "1" / "loop").symlink_to(root / "train")
    ds = read_dataset(str(root))
    assert "train/1/loop/" in ds.ignored and len(ds.train_x) == 32
    (root / "train" / "1" / "self.png").symlink_to(root / "train" / "1" / "self.png")  # ELOOP
    message = one_line_error(DataError, read_dataset, str(root))
    assert "train/1/self.png (cannot access: too many levels of symbolic links)" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_files_and_folders(tmp_path):
    root = small_split(tmp_path / "d")
    blocked = root / "train" / "2" / rel_name(2).split("/")[1]
    blocked.chmod(0)
    (root / "train" / "4").chmod(0)
    try:
        message = one_line_error(DataError, read_dataset, str(root))
        assert "permission denied" in message
    finally:
        blocked.chmod(0o644)
        (root / "train" / "4").chmod(0o755)


def two_classes_one_empty(r: Path) -> None:
    for c in ("cat", "dog"):
        (r / "train" / c).mkdir(parents=True)
    Image.new("L", (8, 8)).save(r / "train" / "dog" / "a.png")


@pytest.mark.parametrize("name, make, phrase", [
    ("missing", lambda r: None, "no such file or folder"),
    ("data.txt", lambda r: r.write_text("x"), "not a folder, .csv or .npz"),
    ("empty", lambda r: r.mkdir(), "the folder is empty"),
    ("one", lambda r: (r / "cat").mkdir(parents=True) or Image.new("L", (8, 8)).save(r / "cat" / "a.png"),
     "only one class ('cat')"),
    ("hollow", two_classes_one_empty, "class folder train/cat has no images"),
    ("testonly", lambda r: (r / "test" / "cat").mkdir(parents=True), "no train/ folder"),
    ("loose", lambda r: r.mkdir() or Image.new("L", (8, 8)).save(r / "a.png"), "no class folders"),
])
def test_bad_folders(tmp_path, name, make, phrase):
    make(tmp_path / name)
    assert phrase in one_line_error(DataError, read_dataset, str(tmp_path / name))


def test_a_class_in_test_that_train_lacks(tmp_path):
    root = small_split(tmp_path / "d")
    (root / "test" / "5").rename(root / "test" / "five")
    assert "class 'five' is in test but not in train" in one_line_error(DataError, read_dataset, str(root))


@pytest.mark.parametrize("text, phrase", [
    ("path,split\na.png,train\n", "has no 'label' column"),
    ("file,label\na.png,x\n", "has no 'path' column"),
    ("path,label,split\n{a},0,train\n{b},1,holdout\n", "line 3: unknown split 'holdout'"),
    ("path,label\n{a},0\n{b}\n", "line 3: 1 fields, but the header has 2"),
    ("path,label\n{a},\n", "line 2: empty label"),
    ("", "is empty"),
    ("path,label\n{a},0\n", "only one class"),
    ("path,label,split\n{a},0,train\n{b},1,train\n{a},2,test\n", "class '2' is in test but not in train"),
])
def test_bad_csv(tmp_path, text, phrase):
    root = small_split(tmp_path / "d")
    csv_path = root / "l.csv"
    csv_path.write_text(text.format(a=rel_name(1, "train"), b=rel_name(2, "train")))
    assert phrase in one_line_error(DataError, read_dataset, str(csv_path))


def npz_arrays() -> dict[str, np.ndarray]:
    x, y = digits()
    return {"x_train": x[:50], "y_train": y[:50], "x_test": x[50:70], "y_test": y[50:70]}


@pytest.mark.parametrize("change, phrase", [
    ({"y_test": None}, "missing key y_test"),
    ({"x_valid": np.zeros((2, 8, 8), np.uint8)}, "unknown key 'x_valid'"),
    ({"x_train": np.zeros((50, 8, 8), np.float32)}, "x_train must be uint8 images, found dtype float32"),
    ({"x_train": np.zeros((50, 64), np.uint8)}, "x_train must be N x H x W"),
    ({"x_test": np.zeros((20, 8, 8, 2), np.uint8)}, "x_test must be N x H x W"),
    ({"x_test": np.zeros((20, 9, 8), np.uint8)}, "x_test has images of shape (9, 8)"),
    ({"y_train": np.zeros(49, np.int64)}, "y_train has 49 labels for 50 images"),
    ({"y_train": np.zeros(50, np.float64)}, "y_train must be a 1-D array of integer labels"),
    ({"classes": np.array(["a", "b"])}, "y_train has label 9, out of range for the 2 classes"),
    ({"x_val": np.zeros((2, 8, 8), np.uint8)}, "has x_val but no y_val"),
    ({"classes": np.array([{"a": 1}] * 10, dtype=object)}, "pickled"),
    ({"y_train": np.zeros(50, np.int64), "y_test": np.zeros(20, np.int64)}, "only one class"),
])
def test_bad_npz(tmp_path, change, phrase):
    arrays = {**npz_arrays(), **change}
    np.savez(tmp_path / "d.npz", **{k: v for k, v in arrays.items() if v is not None})
    assert phrase in one_line_error(DataError, read_dataset, str(tmp_path / "d.npz"))


def test_not_an_npz_and_incomplete_idx(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\3\4 definitely not a zip")
    assert "not a readable .npz archive" in one_line_error(DataError, read_dataset, str(tmp_path / "junk.npz"))
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    assert "single .npy array" in one_line_error(DataError, read_dataset, str(tmp_path / "one.npz"))
    x, y = digits()
    write_idx(tmp_path / "train-images-idx3-ubyte", x[:10])
    write_idx(tmp_path / "train-labels-idx1-ubyte", y[:10].astype(np.uint8))
    assert "lacks t10k-images-idx3-ubyte" in one_line_error(DataError, read_dataset, str(tmp_path))


def test_options_are_checked():
    assert parse_image_size("28") == (28, 28) and parse_image_size(" 32X24 ") == (32, 24)
    assert parse_image_size(None) is None
    for bad in ("0", "3", "2000", "28x", "axb", "", "28x28x3", "-8"):
        message = one_line_error(ConfigError, parse_image_size, bad)
        assert message.startswith("--image-size must be N or HxW with 4..1024, got")
    assert "--channels must be 1 or 3" in one_line_error(ConfigError, read_dataset, ".", channels=2)


# ---------------------------------------------------------------------------------------------- problems()

def test_problems_finds_leakage_imbalance_and_empty_classes(tmp_path):
    root = small_split(tmp_path / "d")
    leaked = root / rel_name(5, "test")
    copy = root / "train" / "5" / "copy-of-test.png"
    copy.write_bytes(leaked.read_bytes())
    ds = read_dataset(str(root))
    found = problems(ds)
    assert found["train_test_duplicates"] == {"count": 1, "examples": [["train/5/copy-of-test.png",
                                                                         rel_name(5, "test")]]}
    counts = ds.identity["counts"]["train"].values()
    assert found["imbalance"] == round(max(counts) / min(counts), 3) and found["imbalance"] > 1
    assert found["empty_classes"] == [] and found["conflicting_labels"] == 0

    x, y = digits()
    y_train = np.where(y[:50] == 9, 0, y[:50])  # no training image of class 9
    np.savez(tmp_path / "d.npz", x_train=x[:50], y_train=y_train, x_test=x[:20], y_test=y[:20])
    found = problems(read_dataset(str(tmp_path / "d.npz")))
    assert found["empty_classes"] == ["9"]
    assert found["train_test_duplicates"]["count"] == 20  # the test images are the first 20 training images
    assert found["train_test_duplicates"]["examples"][0] == [0, 0]
    assert found["conflicting_labels"] == 0
