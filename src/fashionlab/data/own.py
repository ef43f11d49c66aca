"""Your own images as a dataset (--data SPEC): an ImageFolder-style folder, a CSV of path,label[,split], an .npz of
arrays, or a folder of the four IDX files.

Every kind becomes one `ImageDataset` of uint8 tensors with an `identity` (what was read, its fingerprint, the
class counts) so that runs on the same data can be recognised and compared. Image files are prepared by
imageprep.read_dataset_image (the guarded decoder predict uses; every file read through reading.py), in worker
processes and through the decode cache (data.decoding), or left as data.stream.FileImages to be decoded while
training runs (--data-loading). Bad input gets a one-line DataError naming the file or folder; nothing is ever
written into the user's dataset folder.

A folder or CSV without a test split gets one carved out: per class, round(HOLDOUT_FRACTION * n) files chosen by
a generator seeded with HOLDOUT_SEED. That seed is fixed, never the training seed, and each class is drawn with
its own fresh generator, so every run on a dataset is tested on the same files, whatever else changes.

The order of the images (which training and evaluation see, and test_predictions.npy follows):
- a folder: within each split, by file name (the basename, compared as strings), then by class folder (only to
  break ties), then by the rest of the path. Name files 00001.png, 00002.png, ... to fix an order: the classes
  may interleave (export_imagefolder writes Fashion-MNIST so that reading the folder gives the IDX order). The
  class indices are the class-folder names sorted. The holdout does not depend on this order: it is drawn per
  class over that class's files sorted by their path, as above.
- a CSV: the row order, within each split; its holdout is drawn per class over that class's rows in row order.
- an .npz or IDX files: the array order.

export_imagefolder writes any dataset (Fashion-MNIST included) as PNGs in that layout, into a new folder.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashionlab.config import DATA_LOADINGS, FASHION_MNIST, MAX_SIDE, MIN_SIDE, parse_image_size
from fashionlab.data.decoding import Cache, decode_files
from fashionlab.data.idx import decompressed_bytes, parse_idx
from fashionlab.data.sources import FILES as IDX_FILES
from fashionlab.data.sources import find_files
from fashionlab.data.stream import FileImages, batches, ranges, sha256_of
from fashionlab.errors import ConfigError, DataError, RunError
from fashionlab.files import MARKER, check_new_folder, make_folder, undo_folder, write_new_file
from fashionlab.imageprep import IMAGE_SUFFIXES, ImageError, describe_os_error, prepare_image
from fashionlab.reading import CAPS, MiB, read_bytes, read_text, shorten, show_path

__all__ = [
    "FASHION_MNIST", "HOLDOUT_FRACTION", "HOLDOUT_SEED", "ImageDataset", "check_export_folder", "class_folder_names",
    "export_imagefolder", "holdout_mask", "parse_image_size", "problems", "read_dataset",
]

HOLDOUT_FRACTION = 0.2  # test share carved from a folder/CSV that has no test split
HOLDOUT_SEED = 0  # fixed, NOT the training seed: every run on a dataset must share one test set

SPLITS = ("train", "val", "test")
LOADINGS = DATA_LOADINGS
# A CSV row is ~50 bytes, so 100k rows is ~5 MB; 64 MiB leaves room for long paths and extra columns.
CSV_LIMIT = 64 * MiB
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "classes")
SHOWN_BAD, SHOWN_SIZES = 3, 5


@dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare by
class ImageDataset:
    # The order of a folder's images, in each split: by file name, then class: name files 00001.png, 00002.png...
    # to fix an order (classes may interleave). A CSV keeps its row order; an .npz or IDX files their array order.
    train_x: torch.Tensor  # uint8: [N, H, W] when channels == 1, [N, C, H, W] when channels == 3
    train_y: torch.Tensor  # int64 [N], values 0..len(classes)-1
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    val_x: torch.Tensor | None = None  # a given validation split (DIR/val or CSV split=val), else None
    val_y: torch.Tensor | None = None
    identity: dict = field(default_factory=dict)  # JSON-serialisable; see read_dataset
    test_files: tuple[str, ...] = ()  # relative paths of the test images (folder/CSV kinds), in test order
    skipped: tuple[str, ...] = ()  # "relpath: reason" for bad files left out under skip_bad
    ignored: tuple[str, ...] = ()  # relative paths of non-image files (and symlinked or hidden folders) ignored
    train_files: tuple[str, ...] = ()  # relative paths of the train images (folder/CSV kinds), in train order
    val_files: tuple[str, ...] = ()
    # "memory": the images above are tensors; "stream": data.stream.FileImages, decoded while training runs
    loading: str = "memory"
    loading_note: str = ""  # why (choose_loading), said at the start of training

    @property
    def channels(self) -> int:
        return 1 if self.train_x.ndim == 3 else int(self.train_x.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.train_x.shape[-2]), int(self.train_x.shape[-1])

    @functools.cached_property
    def test_sha256(self) -> str:
        """Identifies the test set (pixels and labels), so results on different test data are never compared;
        the same whether the images are in memory or streamed."""
        return sha256_of(self.test_x, self.test_y)


def holdout_mask(labels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """bool [N]: True for the round(HOLDOUT_FRACTION * n_c) samples of each class c that form the test split.

    Each class gets its own generator seeded with HOLDOUT_SEED, so a class's test files depend only on that
    class's (sorted) files: adding images to one class leaves the others' test sets alone."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        n_test = round(HOLDOUT_FRACTION * len(idx))
        order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
        mask[idx[order[:n_test]]] = True
    return mask


def read_dataset(spec: str, *, image_size: tuple[int, int] | None = None, channels: int | None = None,
                 skip_bad: bool = False, loading: str = "auto", workers: int | None = None,
                 progress: bool = True) -> ImageDataset:
    """Read --data SPEC: a folder (ImageFolder layout, or the four IDX files), a .csv or an .npz.

    `image_size` (H, W) resizes every image (bilinear); without it all images must share one size. `channels`
    1 or 3 converts every image (default: 1 when all are grayscale, else 3). `skip_bad` leaves out image files
    that cannot be decoded (listed in `skipped`) instead of refusing the dataset. `loading` (--data-loading):
    "memory" decodes every image now (in `workers` processes; cached, see data.decoding), "stream" only checks
    them and leaves FileImages to be decoded while training runs, "auto" picks memory when the decoded images fit
    memory_budget(). Arrays (.npz, IDX) are always in memory."""
    if channels not in (None, 1, 3):
        raise ConfigError(f"--channels must be 1 or 3, got {shorten(channels, 40)}")
    if loading not in LOADINGS:
        raise ConfigError(f"--data-loading must be one of {', '.join(LOADINGS)}, got {shorten(loading, 40)}")
    if image_size is not None:
        if len(image_size) != 2 or not all(isinstance(s, int) and MIN_SIDE <= s <= MAX_SIDE for s in image_size):
            raise ConfigError(f"--image-size must be N or HxW with {MIN_SIDE}..{MAX_SIDE}, got {image_size!r}")
        image_size = (int(image_size[0]), int(image_size[1]))
    reader = _Reader(str(spec), image_size, channels, skip_bad, loading, workers, progress)
    path = Path(os.fsdecode(spec))
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except (OSError, ValueError):  # a NUL byte, an over-long name
        is_dir, exists = False, False
    if is_dir:
        found, missing = find_files(path)
        if found:
            if missing:
                raise DataError(f"{reader.label}: has {', '.join(found)} but lacks {', '.join(missing)} "
                                "(an IDX dataset needs all four files, .gz or not)")
            return reader.idx(path, found)
        return reader.folder(path)
    if not exists:
        raise DataError(f"{reader.label}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return reader.csv(path)
    if suffix == ".npz":
        return reader.npz(path)
    raise DataError(f"{reader.label}: not a folder, .csv or .npz")


def problems(ds: ImageDataset) -> dict:
    """What may be wrong with a dataset, for `fashionlab data`: leakage (identical images in train and test),
    classes without training images, class imbalance, identical training images with different labels."""
    k = len(ds.classes)
    train_counts = torch.bincount(ds.train_y, minlength=k).tolist()
    test_counts = torch.bincount(ds.test_y, minlength=k).tolist()
    present = [n for n in train_counts if n]
    train_digests = _digests(ds.train_x)
    first_seen: dict[bytes, int] = {}
    labels_of: dict[bytes, set[int]] = {}
    for i, (d, y) in enumerate(zip(train_digests, ds.train_y.tolist())):
        first_seen.setdefault(d, i)
        labels_of.setdefault(d, set()).add(y)
    out = {
        "train_test_duplicates": _duplicates(first_seen, ds.test_x, ds.train_files, ds.test_files),
        "empty_classes": [c for c, n in zip(ds.classes, train_counts) if n == 0],
        "classes_missing_from_test": [c for c, n in zip(ds.classes, test_counts) if n == 0],
        "imbalance": round(max(present) / min(present), 3) if present else None,
        "conflicting_labels": sum(1 for labels in labels_of.values() if len(labels) > 1),
        "skipped": len(ds.skipped),
        "ignored": len(ds.ignored),
    }
    if ds.val_x is not None:
        out["val_test_duplicates"] = _duplicates(
            {d: i for i, d in reversed(list(enumerate(_digests(ds.val_x))))},
            ds.test_x, ds.val_files, ds.test_files)
    return out


def _pixels_digest(image: torch.Tensor) -> bytes:
    return hashlib.sha256(image.contiguous().numpy().tobytes()).digest()


def _digests(x) -> list[bytes]:
    """_pixels_digest of each image of a tensor or of FileImages (decoded a batch at a time)."""
    return [_pixels_digest(img) for part in batches(x, ranges(len(x), 1024)) for img in part]


def _duplicates(seen: dict[bytes, int], test_x: torch.Tensor, seen_files: Sequence[str],
                test_files: Sequence[str]) -> dict:
    count, examples = 0, []
    for j, d in enumerate(_digests(test_x)):
        i = seen.get(d)
        if i is None:
            continue
        count += 1
        if len(examples) < 5:
            examples.append([seen_files[i] if seen_files else i, test_files[j] if test_files else j])
    return {"count": count, "examples": examples}


# ---------------------------------------------------------------------------------------------- export

def class_folder_names(classes: Sequence[str]) -> list[str]:
    """Folder names for classes, in label order: "<label>-<name>" with every character that is not a letter, a digit,
    "-", "_" or "." made "_" ("T-shirt/top" -> "0-T-shirt_top"), the label zero-padded so that sorting the names
    (which is how read_dataset numbers classes) gives the label order back."""
    width = len(str(max(len(classes) - 1, 0)))
    out = []
    for label, name in enumerate(classes):
        safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in str(name))[:80]
        out.append(f"{label:0{width}d}-{safe}" if safe else f"{label:0{width}d}")
    return out


def check_export_folder(folder: Path, what: str = "--export-imagefolder") -> None:
    """An export goes into a new or empty folder (one fashionlab made may hold only its mark): it never mixes
    with other files, which read_dataset would read as part of the dataset."""
    check_new_folder(folder, what)
    if folder.is_dir() and any(p.name != MARKER for p in folder.iterdir()):
        raise RunError(f"{what} {folder} is not empty; an export needs a new or empty folder")


def export_imagefolder(ds, folder: Path, *, progress: bool = True) -> dict:
    """Write a dataset (anything with train_x/train_y/test_x/test_y/classes, and val_x/val_y if not None) as PNGs in
    ImageFolder layout: FOLDER/<split>/<class folder>/<index>.png, index the image's position in its split,
    zero-padded to one width, so read_dataset(FOLDER) gives back the same tensors in the same order (files are read
    by name, then class). Lossless: 8-bit grayscale PNGs for one channel, RGB for three.

    FOLDER must be new or empty; no file is ever replaced, and a failed export removes what it wrote. Returns
    {"folder", "train", "test", "classes"} (and "val" when there is a validation split): the counts written."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    folder = Path(folder)
    check_export_folder(folder)
    names = class_folder_names(ds.classes)
    splits = [(s, getattr(ds, f"{s}_x", None), getattr(ds, f"{s}_y", None)) for s in SPLITS]
    splits = [(s, _hwc(s, x), torch.as_tensor(y).tolist()) for s, x, y in splits if x is not None]
    for split, x, y in splits:
        if len(y) != len(x) or any(not 0 <= label < len(names) for label in y):
            raise DataError(f"cannot export the {split} split: {len(x)} images, {len(y)} labels in 0.."
                            f"{len(names) - 1}")
    lacking = sorted(set(range(len(names))) - set(splits[0][2]))
    if lacking:  # read back, the class would be missing and every later label would shift by one
        raise DataError(f"cannot export: class {shorten(ds.classes[lacking[0]], 40)} has no training images, so the "
                        "folder would not read back with the same labels")
    width = len(str(max(len(y) for _, _, y in splits) - 1))
    had_marker = (folder / MARKER).is_file()
    created = make_folder(folder)  # the folder and its new parents, deepest first
    written: list[str] = [] if had_marker else [MARKER]  # relative to folder, for undo_folder
    made: list[Path] = []
    path = folder
    show = progress and sys.stderr.isatty()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
            for split, x, y in splits:
                task = bar.add_task(f"{split} PNGs", total=len(y))
                for label in sorted(set(y)):
                    for path in (folder / split, folder / split / names[label]):
                        if not path.is_dir():
                            path.mkdir()
                            made.append(path)
                for i, label in enumerate(y):
                    rel = f"{split}/{names[label]}/{i:0{width}d}.png"
                    path = folder / rel
                    write_new_file(path, _png(x[i]))
                    written.append(rel)
                    bar.advance(task)
    except BaseException as e:
        undo_folder(folder, made[::-1] + created, written[::-1])
        if isinstance(e, OSError):
            raise RunError(f"cannot write {path}: {describe_os_error(e)}; the partial export was removed") from None
        raise
    counts = {split: len(y) for split, _, y in splits}
    return {"folder": str(folder), "train": counts["train"], **({"val": counts["val"]} if "val" in counts else {}),
            "test": counts["test"], "classes": len(names)}


def _hwc(split: str, x: torch.Tensor) -> np.ndarray:
    """uint8 [N, H, W] or [N, C, H, W] (C 1 or 3) as numpy [N, H, W] or [N, H, W, 3]."""
    a = torch.as_tensor(x).numpy()
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[1] not in (1, 3)):
        raise DataError(f"cannot export the {split} split: expected uint8 images [N, H, W] or [N, C, H, W] with C 1 "
                        f"or 3, found {a.dtype} {a.shape}")
    if a.ndim == 4:
        a = a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)
    return a


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "L" if image.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- reading

@dataclass
class _Item:
    """One image file listed by a folder or a CSV."""

    split: str
    label: int
    rel: str  # as shown to the user and hashed into the fingerprint: relative to the folder or the CSV's folder
    path: Path


@dataclass
class _Reader:
    spec: str
    image_size: tuple[int, int] | None
    channels: int | None
    skip_bad: bool
    loading: str = "auto"
    workers: int | None = None
    progress: bool = True
    decided: tuple[str, str] | None = None  # (memory|stream, why): choose_loading's answer
    items: list = field(default_factory=list)  # the files being read (for _shape_guess)

    @property
    def label(self) -> str:
        return f"--data {show_path(self.spec)}"

    # ---------------------------------------------------------------- folder

    def folder(self, root: Path) -> ImageDataset:
        ignored: list[str] = []
        unreadable: list[tuple[str, str]] = []
        top = self._subfolders(root, root, ignored, top=True)
        if not top and not ignored:
            raise DataError(f"{self.label}: the folder is empty")
        if "train" in top:
            split_dirs = {s: root / s for s in SPLITS if s in top}
            ignored += [f"{name}/" for name in top if name not in SPLITS]
            class_dirs = {s: self._subfolders(d, root, ignored) for s, d in split_dirs.items()}
        elif "test" in top or "val" in top:
            raise DataError(f"{self.label}: has a test/ or val/ folder but no train/ folder")
        else:  # DIR/<class>/...: the top level is the training split
            split_dirs, class_dirs = {"train": root}, {"train": top}
        if not class_dirs["train"]:
            where = "train/" if "train" in top else ""
            raise DataError(f"{self.label}: no class folders in {where or 'it'} (expected "
                            f"{where}<class>/<images>, e.g. {where}cat/1.png)")
        classes = sorted(class_dirs["train"])
        self._check_classes(classes, class_dirs, "folder")
        items = []
        for split, dirs in class_dirs.items():
            for name in sorted(dirs):
                rel_class = _rel(dirs[name], root)
                found = _walk(dirs[name], root, ignored, unreadable)
                if not found and not any(r == rel_class or r.startswith(rel_class + "/") for r, _ in unreadable):
                    raise DataError(f"{self.label}: class folder {rel_class} has no images "
                                    f"(image files end in {', '.join(IMAGE_SUFFIXES)})")
                items += [_Item(split, classes.index(name), _rel(p, root), p) for p in found]
        holdout = "test" not in split_dirs
        if holdout:  # drawn on the class-by-class list (each class's files sorted by path), before reordering
            items = _carve_holdout(items)
        items.sort(key=_folder_order)  # stable; _images keeps this order within each split
        return self._images(items, classes, "folder", root, ignored, unreadable, holdout, extra_hash=b"")

    def _subfolders(self, folder: Path, root: Path, ignored: list[str], top: bool = False) -> dict[str, Path]:
        """Real, visible subfolders by name; everything else at this level goes to `ignored`."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"{self.label}: cannot list folder {_rel(folder, root) or '.'}: "
                            f"{describe_os_error(e)}") from None
        out = {}
        for e in entries:
            rel = _rel(Path(e.path), root)
            try:
                real_dir = e.is_dir(follow_symlinks=False)
                linked_dir = not real_dir and e.is_symlink() and e.is_dir()
            except OSError:
                real_dir = linked_dir = False
            if real_dir and not e.name.startswith("."):
                out[e.name] = Path(e.path)
            elif top and e.name in SPLITS and (real_dir or linked_dir):
                raise DataError(f"{self.label}: {e.name}/ is a symbolic link, which is not followed")
            elif top and e.name == MARKER and not real_dir and not linked_dir:
                pass  # the mark of a folder fashionlab made (export_imagefolder): ours, not the user's
            else:
                ignored.append(rel + "/" if real_dir or linked_dir else rel)
        return out

    def _check_classes(self, classes: list[str], by_split: dict, what: str) -> None:
        if len(classes) < 2:
            raise DataError(f"{self.label}: only one class ({shorten(classes[0], 40)}); a classifier needs two "
                            "or more")
        for split in ("val", "test"):
            extra = sorted(set(by_split.get(split, ())) - set(classes))
            if extra:
                raise DataError(f"{self.label}: class {shorten(extra[0], 40)} is in {split} but not in train "
                                f"({len(extra)} such class{'es' if len(extra) > 1 else ''}); every {what} class "
                                "needs training images")

    # ---------------------------------------------------------------- CSV

    def csv(self, path: Path) -> ImageDataset:
        text = read_text(path, kind="text", limit=CSV_LIMIT, error=DataError)
        shown = f"CSV file {show_path(path)}"
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header: list[str] | None = None
        rows: list[tuple[int, str, str, str]] = []  # line, path, label, split
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [cell.strip().lower() for cell in row]
                    for column in ("path", "label"):
                        if column not in header:
                            raise DataError(f"{shown} has no {column!r} column (its header: "
                                            f"{shorten(','.join(row), 80)}); expected path,label[,split]")
                    cols = header.index("path"), header.index("label"), header.index("split") \
                        if "split" in header else None
                    continue
                at = f"{shown}, line {reader.line_num}"
                if len(row) != len(header):
                    raise DataError(f"{at}: {len(row)} fields, but the header has {len(header)}")
                rel, name = row[cols[0]].strip(), row[cols[1]].strip()
                split = row[cols[2]].strip().lower() if cols[2] is not None else "train"
                if not rel or not name:
                    raise DataError(f"{at}: empty {'path' if not rel else 'label'}")
                if split not in SPLITS:
                    raise DataError(f"{at}: unknown split {shorten(row[cols[2]], 40)} (use train, val or test)")
                rows.append((reader.line_num, rel, name, split))
        except csv.Error as e:
            raise DataError(f"{shown}, line {reader.line_num}: {str(e).splitlines()[0]}") from None
        if header is None:
            raise DataError(f"{shown} is empty (expected a header path,label[,split])")
        if not rows:
            raise DataError(f"{shown} lists no images")
        by_split: dict[str, set[str]] = {s: {n for _, _, n, sp in rows if sp == s} for s in SPLITS}
        classes = sorted(by_split["train"])
        if not classes:
            raise DataError(f"{shown} has no train rows")
        self._check_classes(classes, by_split, "CSV")
        index = {c: i for i, c in enumerate(classes)}
        base = path.parent
        items = [_Item(split, index[name], rel, base / rel) for _, rel, name, split in rows]
        holdout = not by_split["test"]  # no test rows (no split column, or only train/val): carve one from train
        if holdout:  # per class over that class's rows in row order; the items keep the row order
            items = _carve_holdout(items)
        csv_digest = hashlib.sha256(text.encode("utf-8")).digest()
        return self._images(items, classes, "csv", path, [], [], holdout, extra_hash=csv_digest)

    # ---------------------------------------------------------------- images of a folder or CSV

    def _images(self, items: list[_Item], classes: list[str], kind: str, path: Path, ignored: list[str],
                unreadable: list[tuple[str, str]], holdout: bool, extra_hash: bytes) -> ImageDataset:
        """Decode (memory) or check (stream) the listed files, through data.decoding's cache: an unchanged
        dataset read before with the same preparation is loaded without decoding a file."""
        cache, self.items = Cache(), items
        listing = Cache.listing_key(extra_hash + repr(sorted(unreadable)).encode("utf-8", "surrogateescape"),
                                    [(item.rel, item.path) for item in items])
        fingerprint = cache.fingerprint(listing)
        entry = None
        if fingerprint is not None:
            key = Cache.entry_key(fingerprint, self.channels, self.image_size)
            entry = cache.load(key, pixels=not self._stream(len(items), cache.load(key, pixels=False)))
        if entry is None:
            meta, array, fingerprint = self._decode(items, unreadable, extra_hash, keep=not self._stream(len(items)))
            cache.remember(listing, fingerprint)
            key = Cache.entry_key(fingerprint, self.channels, self.image_size)
            if array is not None or cache.load(key, pixels=False) is None:  # never replace pixels by a scan
                cache.save(key, meta, array)
        else:
            meta, array = entry
        bad = [tuple(b) for b in meta["bad"]]
        if bad and not self.skip_bad:
            shown = ", ".join(f"{rel} ({reason})" for rel, reason in bad[:SHOWN_BAD])
            more = ", ..." if len(bad) > SHOWN_BAD else ""
            raise DataError(f"{self.label}: {len(bad)} bad image file{'s' if len(bad) > 1 else ''}: {shown}{more}; "
                            "pass --skip-bad to leave them out")
        kept = [item for item, ok in zip(items, meta["kept"]) if ok]
        if not any(item.split == "train" for item in kept):
            raise DataError(f"{self.label}: no usable training images")
        mode, size = meta["mode"], tuple(meta["size"])
        parts = {}
        for split in SPLITS:
            rows = [i for i, item in enumerate(kept) if item.split == split]
            if rows:
                labels = torch.tensor([kept[i].label for i in rows], dtype=torch.int64)
                rels = tuple(kept[i].rel for i in rows)
                if array is not None:
                    x = _tensor(array[rows])
                else:
                    x = FileImages([str(kept[i].path) for i in rows], mode, size, rels)
                parts[split] = (x, labels, rels)
        return self._dataset(parts, classes, kind, path, fingerprint, holdout,
                             skipped=tuple(f"{rel}: {reason}" for rel, reason in bad), ignored=tuple(ignored),
                             loading="memory" if array is not None else "stream")

    def _stream(self, n_files: int, entry=None) -> bool:
        """Whether to read the files while training (see choose_loading); remembered for the whole read."""
        if self.decided is None:
            shape = tuple(entry[0]["shape"][1:]) if entry and entry[0].get("shape") else None
            if shape is None and entry:
                size = entry[0]["size"]
                shape = (size[0], size[1]) if entry[0]["mode"] == "L" else (size[0], size[1], 3)
            self.decided = choose_loading(self.loading, n_files, shape or self._shape_guess(self.items))
        return self.decided[0] == "stream"

    def _shape_guess(self, items: list[_Item]) -> tuple[int, ...]:
        """The decoded shape of one image before any is decoded: --image-size, or the first file's header; three
        channels unless --channels 1 or that file is grayscale."""
        size, gray = self.image_size, self.channels == 1
        if items and (size is None or self.channels is None):
            try:
                with Image.open(io.BytesIO(read_bytes(items[0].path, kind="image", error=ImageError))) as img:
                    size = size or (img.height, img.width)
                    gray = gray or (self.channels is None and img.mode in ("L", "1", "I;16", "I"))
            except (ImageError, OSError, ValueError, Image.DecompressionBombError):
                pass  # a bad first file is reported when it is decoded; guess as for a photo
        size = size or (MAX_SIDE, MAX_SIDE)
        return tuple(size) if gray else (*size, 3)

    def _decode(self, items: list[_Item], unreadable: list[tuple[str, str]], extra_hash: bytes,
                keep: bool) -> tuple[dict, np.ndarray | None, str]:
        """Read every file once (in worker processes): (cache meta, prepared images or None, fingerprint)."""
        forced = None if self.channels is None else ("L" if self.channels == 1 else "RGB")
        got = decode_files([str(item.path) for item in items], forced, self.image_size, keep=keep,
                           workers=self.workers, progress=self.progress)
        bad = list(unreadable)
        digests = {rel: b"unreadable folder" for rel, _ in unreadable}
        for item, g in zip(items, got):
            if g.error is not None:
                bad.append((item.rel, g.error))
            digests[item.rel] = g.sha256 if g.error is None else b"bad"  # not the reason: it may name a path
        fingerprint = hashlib.sha256(extra_hash)
        for rel in sorted(digests):
            fingerprint.update(rel.encode("utf-8", "surrogateescape") + b"\0" + digests[rel])
        ok = [g for g in got if g.error is None]
        mode = forced or self._mode(all(g.gray for g in ok))
        if self.image_size is None:
            self._check_one_size(Counter(g.size for g in ok))
        size = self.image_size or (ok[0].size if ok else (0, 0))
        array = None
        if keep and ok:  # a grayscale image prepared as L, wanted as RGB: its one band repeated (see imageprep)
            array = np.stack([g.pixels if g.pixels.ndim == 3 or mode == "L" else np.repeat(g.pixels[..., None], 3, 2)
                              for g in ok])
        meta = {"kept": [g.error is None for g in got], "bad": bad, "mode": mode, "size": list(size)}
        return meta, array, fingerprint.hexdigest()

    def _mode(self, all_gray: bool) -> str:
        if self.channels is not None:
            return "L" if self.channels == 1 else "RGB"
        return "L" if all_gray else "RGB"

    def _check_one_size(self, sizes: Counter) -> None:
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}: {n}" for (h, w), n in sizes.most_common(SHOWN_SIZES))
            more = ", ..." if len(sizes) > SHOWN_SIZES else ""
            raise DataError(f"{self.label}: images have {len(sizes)} different sizes ({shown}{more}); "
                            "pass --image-size N or HxW")

    # ---------------------------------------------------------------- arrays: npz and IDX

    def npz(self, path: Path) -> ImageDataset:
        data = read_bytes(path, kind="idx", error=DataError)
        shown = f".npz file {show_path(path)}"
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            # allow_pickle=False turns a pickle into a ValueError: it is never unpickled
            raise DataError(f"{shown} is not a readable .npz archive ({_first_line(e)})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{shown} is a single .npy array, not an .npz archive of x_train, y_train, x_test, "
                            "y_test")
        with archive:
            keys = set(archive.files)
            unknown = sorted(keys - set(NPZ_KEYS))
            if unknown:
                raise DataError(f"{shown}: unknown key {shorten(unknown[0], 40)} (expected x_train, y_train, "
                                "x_test, y_test, and optionally x_val, y_val, classes)")
            for key in ("x_train", "y_train", "x_test", "y_test"):
                if key not in keys:
                    raise DataError(f"{shown}: missing key {key} (expected x_train, y_train, x_test, y_test)")
            if ("x_val" in keys) != ("y_val" in keys):
                have, lack = ("x_val", "y_val") if "x_val" in keys else ("y_val", "x_val")
                raise DataError(f"{shown}: has {have} but no {lack}")
            for info in archive.zip.infolist():  # refused before decompressing: a small zip can hold a bomb
                if info.file_size > CAPS["idx"]:
                    raise DataError(f"{shown}: member {shorten(info.filename, 40)} decompresses to over 2 GiB")
            arrays = {}
            for key in sorted(keys):
                try:
                    arrays[key] = archive[key]
                except ValueError as e:
                    if "allow_pickle" in str(e):
                        raise DataError(f"{shown}: {key} is an array of Python objects (pickled); refused, "
                                        "save plain arrays (uint8 images, integer labels, str classes)") from None
                    raise DataError(f"{shown}: {key} cannot be read ({_first_line(e)})") from None
                except (OSError, EOFError, zipfile.BadZipFile) as e:
                    raise DataError(f"{shown}: {key} cannot be read ({_first_line(e)})") from None
        splits = {s: _npz_split(arrays, s, shown) for s in SPLITS if f"x_{s}" in arrays}
        shapes = {s: x.shape[1:] for s, (x, _) in splits.items()}
        if len(set(shapes.values())) > 1:
            other = next(s for s in splits if shapes[s] != shapes["train"])
            raise DataError(f"{shown}: x_{other} has images of shape {shapes[other]}, x_train of {shapes['train']}")
        classes = _npz_classes(arrays, splits, shown)
        return self._arrays(splits, classes, "npz", path, hashlib.sha256(data).hexdigest())

    def idx(self, folder: Path, files: dict[str, Path]) -> ImageDataset:
        fingerprint = hashlib.sha256()
        arrays = {}
        for name in IDX_FILES:  # hashed decompressed, so a recompressed copy is the same dataset
            raw = decompressed_bytes(files[name])
            fingerprint.update(name.encode() + b"\0" + hashlib.sha256(raw).digest())
            arrays[name] = parse_idx(raw, files[name].name)
        splits = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
            where = f"{self.label}: {files[f'{prefix}-images-idx3-ubyte'].name}"
            if images.dtype != np.uint8 or images.ndim != 3 or 0 in images.shape:
                raise DataError(f"{where}: expected uint8 images [N, H, W], found {images.dtype} {images.shape}")
            if labels.dtype != np.uint8 or labels.shape != (len(images),):
                raise DataError(f"{self.label}: {files[f'{prefix}-labels-idx1-ubyte'].name}: expected "
                                f"{len(images)} uint8 labels, found {labels.dtype} {labels.shape}")
            splits[split] = (images, labels.astype(np.int64))
        if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
            raise DataError(f"{self.label}: test images are {splits['test'][0].shape[1:]}, train images "
                            f"{splits['train'][0].shape[1:]}")
        k = int(max(y.max() for _, y in splits.values())) + 1
        classes = [str(i) for i in range(k)]
        if k < 2:
            raise DataError(f"{self.label}: only one class (label 0); a classifier needs two or more")
        return self._arrays(splits, classes, "idx", folder, fingerprint.hexdigest())

    def _arrays(self, splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], kind: str,
                path: Path, fingerprint: str) -> ImageDataset:
        """uint8 [N, H, W] or [N, H, W, 3] arrays -> the dataset, converted only where asked to."""
        if self.loading == "stream":
            raise ConfigError(f"--data-loading stream reads image files while training; {self.label} is arrays "
                              f"({kind}), which are loaded in memory: use --data-loading auto or memory")
        gray = splits["train"][0].ndim == 3
        mode = self._mode(gray)
        parts = {}
        for split, (x, y) in splits.items():
            if mode != ("L" if gray else "RGB") or (self.image_size and self.image_size != x.shape[1:3]):
                x = np.stack([prepare_image(Image.fromarray(img), mode, self.image_size) for img in x])
            parts[split] = (_tensor(x), torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), ())
        return self._dataset(parts, classes, kind, path, fingerprint, holdout=False)

    # ---------------------------------------------------------------- the result

    def _dataset(self, parts: dict, classes: list[str], kind: str, path: Path, fingerprint: str, holdout: bool,
                 skipped: tuple[str, ...] = (), ignored: tuple[str, ...] = (),
                 loading: str = "memory") -> ImageDataset:
        if "test" not in parts:
            raise DataError(f"{self.label}: no test images (a holdout of {HOLDOUT_FRACTION:.0%} per class needs "
                            "at least 3 images in a class)" if holdout else f"{self.label}: no test images")
        train_x = parts["train"][0]
        k = len(classes)
        counts = {s: dict(zip(classes, torch.bincount(y, minlength=k).tolist())) for s, (_, y, _) in parts.items()}
        identity = {
            "kind": kind,
            "location": self.spec,
            "path": str(path.resolve()),
            "fingerprint": fingerprint,
            "classes": list(classes),
            "channels": 1 if train_x.ndim == 3 else int(train_x.shape[1]),
            "size": [int(train_x.shape[-2]), int(train_x.shape[-1])],
            "counts": {s: counts[s] for s in SPLITS if s in counts},
            "holdout": holdout,
            "image_size": list(self.image_size) if self.image_size else None,
            "skipped": len(skipped),
        }
        val = parts.get("val", (None, None, ()))
        return ImageDataset(
            train_x, parts["train"][1], parts["test"][0], parts["test"][1], tuple(classes), val[0], val[1],
            identity, test_files=parts["test"][2], skipped=skipped, ignored=ignored,
            train_files=parts["train"][2], val_files=val[2], loading=loading,
            loading_note=self.decided[1] if self.decided else "")


def memory_budget() -> int:
    """Bytes of decoded images that --data-loading auto keeps in memory: a quarter of this machine's RAM (training
    needs room for the model, its activations and a copy of each batch besides)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 16 GB of RAM
        return 4 * 1024 ** 3


def choose_loading(loading: str, n_images: int, shape: Sequence[int]) -> tuple[str, str]:
    """(memory or stream, why) for --data-loading `loading` and n_images decoded to uint8 `shape` each."""
    need = n_images * int(np.prod(shape))
    if loading in ("memory", "stream"):
        return loading, f"--data-loading {loading}"
    budget = memory_budget()
    fits = need <= budget
    return ("memory" if fits else "stream",
            f"the decoded images take ~{_gb(need)}, {'within' if fits else 'over'} the {_gb(budget)} budget "
            "(a quarter of this machine's RAM)")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------------- helpers

def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else ""


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


def _walk(folder: Path, root: Path, ignored: list[str], unreadable: list[tuple[str, str]]) -> list[Path]:
    """Image files under `folder`, recursively, sorted. Symlinked folders are not followed (os.walk's default, so
    a link back up cannot loop) and, like hidden files and folders (.DS_Store, .ipynb_checkpoints), are listed
    in `ignored` with every file that lacks an image suffix."""
    def on_error(e: OSError) -> None:
        where = Path(e.filename) if e.filename else folder
        unreadable.append((_rel(where, root), f"cannot list folder: {describe_os_error(e)}"))

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or (here / d).is_symlink():
                ignored.append(_rel(here / d, root) + "/")
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(here / f)
            else:
                ignored.append(_rel(here / f, root))
    return sorted(found, key=lambda p: _rel(p, root))


def _folder_order(item: _Item) -> tuple[str, int, str]:
    """A folder's reading order (within a split): file name, then class, then the whole relative path."""
    return item.path.name, item.label, item.rel


def _carve_holdout(items: list[_Item]) -> list[_Item]:
    """Move the holdout (see holdout_mask) of the train items to test; order kept."""
    train = [item for item in items if item.split == "train"]
    mask = holdout_mask([item.label for item in train]).tolist()
    for item, is_test in zip(train, mask):
        if is_test:
            item.split = "test"
    return items


def _tensor(x: np.ndarray) -> torch.Tensor:
    """[N, H, W] stays; [N, H, W, 3] becomes [N, 3, H, W], contiguous."""
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))


def _npz_split(arrays: dict[str, np.ndarray], split: str, shown: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.dtype != np.uint8:
        raise DataError(f"{shown}: x_{split} must be uint8 images, found dtype {x.dtype}")
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 3, 4))) or 0 in x.shape:
        raise DataError(f"{shown}: x_{split} must be N x H x W or N x H x W x C (C 1, 3 or 4), found shape "
                        f"{x.shape}")
    if x.ndim == 4:
        x = x[..., 0] if x.shape[3] == 1 else x[..., :3]  # RGBA: the alpha channel is dropped
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"{shown}: y_{split} must be a 1-D array of integer labels, found {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{shown}: y_{split} has {len(y)} labels for {len(x)} images in x_{split}")
    if y.min() < 0:
        raise DataError(f"{shown}: y_{split} has a negative label ({y.min()})")
    return x, y.astype(np.int64)


def _npz_classes(arrays: dict[str, np.ndarray], splits: dict, shown: str) -> list[str]:
    top = max(int(y.max()) for _, y in splits.values())
    if "classes" not in arrays:
        classes = [str(i) for i in range(top + 1)]
    else:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{shown}: classes must be a 1-D array of strings, found {names.dtype} {names.shape}")
        classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
        if len(set(classes)) != len(classes) or not all(c.strip() for c in classes):
            raise DataError(f"{shown}: classes must be distinct, non-empty names")
        bad = next((s for s, (_, y) in splits.items() if int(y.max()) >= len(classes)), None)
        if bad is not None:
            raise DataError(f"{shown}: y_{bad} has label {int(splits[bad][1].max())}, out of range for the "
                            f"{len(classes)} classes (0..{len(classes) - 1})")
    if len(classes) < 2:
        raise DataError(f"{shown}: only one class; a classifier needs two or more")
    return classes
