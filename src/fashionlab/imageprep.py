"""Turn a user's image into a Fashion-MNIST-style 28x28 uint8 array, the way the dataset itself was made.

Xiao et al. 2017, section 2: trim the border close to the background colour, resize the longest edge to 28,
centre it on a 28x28 canvas, negate (the dataset is light on black), 8-bit grayscale. Decoding is guarded:
untrusted files may be huge, truncated, animated, 16-bit, not images at all, or not even regular files (a FIFO,
a device, a broken link: refused from `os.stat`, never opened); each gets an `ImageError`. Photos are turned
upright from their EXIF orientation, as viewers show them. A usable but doubtful input (tiny, or blank once
prepared) gets warnings: its prediction is still made.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionlab.errors import FashionlabError
from fashionlab.reading import read_bytes

SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "DIB": "BMP", "WEBP": "WebP", "GIF": "GIF"}
# Refused before decoding, from the header's size: a small file can declare a gigapixel canvas.
MAX_PIXELS = 50_000_000
# Photos are reduced to about this size before trimming: plenty for a 28-pixel result, bounded memory.
WORK_SIZE = 512
# "Close to the background": within 5% of the largest possible distance in RGB space (the paper's rule).
TRIM_TOLERANCE = 0.05 * 255 * math.sqrt(3)
# Warn (still predict) when the image is smaller than this on its short side: less detail than the dataset's
# own 28x28 images, so the model sees an upscaled blur.
MIN_SIDE = 28
# Warn when the prepared 28x28 image has a standard deviation below this (0-255 levels): nearly constant, so
# there is nothing to classify. The least varied of the 70,000 real Fashion-MNIST images has 16.5.
BLANK_STD = 4.0
EXIF_ORIENTATION = 0x0112


class ImageError(FashionlabError):
    """One input file cannot be used; the other files are still predicted."""


@dataclass
class Decoded:
    image: Image.Image  # mode "L" or "RGB", 8 bits per channel, alpha already flattened, upright
    note: str | None = None  # something the user should know, e.g. only the first frame was used
    warnings: tuple[str, ...] = ()  # why the prediction may be unreliable (tiny image)


@dataclass
class Prepared:
    pixels: np.ndarray  # uint8 [28, 28]: what the model sees
    note: str | None = None
    warnings: tuple[str, ...] = ()  # tiny image, blank after preparation


def find_images(folder: Path, unreadable: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Entries with an image suffix under `folder`, recursively (symlinked folders not followed), sorted.

    Not only regular files: a FIFO or broken link named like an image is listed too, so that it gets an error
    of its own instead of silently vanishing. Folders that cannot be listed are appended to `unreadable`."""
    def on_error(e: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(e.filename or folder), f"cannot list folder: {describe_os_error(e)}"))

    found = []
    for root, _dirs, files in os.walk(folder, onerror=on_error):
        found.extend(Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found)


FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    return next((name for test, name in FILE_KINDS if test(mode)), "a special file")


def describe_os_error(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file or directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    return os.strerror(e.errno).lower() if e.errno else str(e)


def not_regular(path: Path) -> str | None:
    """Why `path` cannot be an image file, decided from `os.stat` alone (nothing is opened); None if it is a
    regular file (or a symlink to one)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else "no such file"
    except OSError as e:
        return f"cannot access: {describe_os_error(e)}"
    except ValueError:  # e.g. a NUL byte in the name
        return "invalid file name"
    return None if stat.S_ISREG(st.st_mode) else f"not a regular file but {file_kind(st.st_mode)}; not opened"


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag (a phone photo stored sideways), as image viewers do."""
    try:
        orientation = int(img.getexif().get(EXIF_ORIENTATION, 1))
        return ImageOps.exif_transpose(img) if 2 <= orientation <= 8 else img
    except Exception:  # noqa: BLE001 - malformed EXIF: the pixels are still fine, use them as stored
        return img


def decode(path: Path, *, work_size: int | None = WORK_SIZE) -> Decoded:
    """Decode the first frame of an image file safely, as 8-bit L or RGB, upright. The bytes come from
    reading.read_bytes: a regular file (checked by stat, then opened non-blocking and checked again on the
    descriptor, so a FIFO swapped in between cannot hang the process), at most CAPS["image"] bytes; PIL decodes
    them from memory, its decompression-bomb limit kept (and made an error). A JPEG may come back reduced to about
    `work_size` (never below it); None decodes it at full size, as a dataset read with no --image-size needs."""
    problem = not_regular(path)  # the first line of defence, with the messages predict's table shows
    if problem:
        raise ImageError(problem)
    return decode_bytes(read_bytes(path, kind="image", error=ImageError), work_size=work_size)


def decode_bytes(data: bytes, *, work_size: int | None = WORK_SIZE) -> Decoded:
    """decode() of an image file's bytes, read by the caller through reading.read_bytes."""
    size_bytes = len(data)
    try:
        with warnings.catch_warnings():
            # PIL only warns between its own limit and twice it; every bomb must be an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # lazy: only the header is decoded
            fmt = FORMATS.get(img.format or "")
            if fmt is None:
                raise ImageError(f"unsupported image format {img.format}; use PNG, JPEG, BMP, WebP or GIF")
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"image is {w}x{h}, over the {MAX_PIXELS // 1_000_000}-megapixel limit; "
                                 "downscale it first")
            frames = getattr(img, "n_frames", 1)
            if fmt == "JPEG" and work_size:  # decode big photos at a reduced scale at once (faster, less memory)
                img.draft(img.mode, (work_size, work_size))
            img.load()
            img = upright(img)
            note = f"animated {fmt} ({frames} frames): used the first frame" if frames > 1 else None
            tiny = (f"tiny image ({w}x{h} pixels, under {MIN_SIDE} on its short side): prediction unreliable",)
            return Decoded(flatten(img), note, tiny if min(w, h) < MIN_SIDE else ())
    except UnidentifiedImageError:
        raise ImageError("empty file" if size_bytes == 0 else "not an image (unrecognized format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image is over the {MAX_PIXELS // 1_000_000}-megapixel limit (decompression bomb?)") from None
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL reports corrupt data as OSError, SyntaxError, ValueError, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ImageError(f"corrupt or truncated image: {first}") from None


def flatten(img: Image.Image) -> Image.Image:
    """8-bit L or RGB: 16-bit values scaled (not clipped), transparency composited onto the background."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale PNG: PIL's own conversion to L clips at 255 instead of scaling.
        wide = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8), "L")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (*background_colour(img), 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode in ("L", "RGB") else img.convert("L" if img.mode == "1" else "RGB")


def background_colour(img: Image.Image) -> tuple[int, int, int]:
    """The file's declared background (PNG bKGD, WebP), else white. GIF's background palette index is ignored,
    as browsers do: it is usually just index 0, often black, and would hide a dark item."""
    bg = img.info.get("background")
    if isinstance(bg, tuple) and len(bg) >= 3:
        rgb = [int(c) for c in bg[:3]]
    elif isinstance(bg, int) and img.mode in ("L", "LA"):
        rgb = [bg] * 3
    else:
        return (255, 255, 255)
    if max(rgb) > 255:  # a 16-bit file's bKGD
        rgb = [c // 257 for c in rgb]
    return rgb[0], rgb[1], rgb[2]


def is_fashion_mnist_form(gray: np.ndarray) -> bool:
    """28x28 with a dark border: already what the model was trained on."""
    return gray.shape == (SIZE, SIZE) and float(np.median(border(gray))) < 128


def border(a: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, [n] or [n, channels]."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def prepare(img: Image.Image, preprocess: bool = True) -> np.ndarray:
    """A 28x28 uint8 array, light item on black, from an 8-bit L or RGB image."""
    if not preprocess:
        return np.asarray(resize(img.convert("L"), (SIZE, SIZE)))
    if img.size == (SIZE, SIZE) and is_fashion_mnist_form(gray := np.asarray(img.convert("L"))):
        return gray.copy()
    if max(img.size) > WORK_SIZE:
        img = img.copy()
        img.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    bg = np.median(border(rgb), axis=0)
    crop = img.crop(item_box(rgb, bg)).convert("L")
    w, h = crop.size
    scale = SIZE / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(resize(crop, size), dtype=np.float32)
    # The dataset's background is exactly 0: map the photo's background there, stretching the levels so a
    # grey backdrop does not read as fabric; invert when the background is light.
    bg_gray = float(np.dot(bg, (0.299, 0.587, 0.114)))
    if bg_gray >= 128:
        small, bg_gray = 255 - small, 255 - bg_gray
    small = np.clip((small - bg_gray) * (255 / (255 - bg_gray)), 0, 255)
    out = np.zeros((SIZE, SIZE), np.uint8)
    # Rounded up, as in the dataset: an odd margin leaves the extra row/column above and to the left.
    top, left = (SIZE - size[1] + 1) // 2, (SIZE - size[0] + 1) // 2
    out[top:top + size[1], left:left + size[0]] = np.rint(small).astype(np.uint8)
    return out


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Shrinking averages each output pixel's area, as a lower-resolution camera would (no ringing, unlike
    # Lanczos); enlarging a tiny image interpolates smoothly instead of making blocks.
    shrink = size[0] <= img.size[0] and size[1] <= img.size[1]
    return img.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)


def item_box(rgb: np.ndarray, bg: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels that differ from the background; the whole image if none do."""
    mask = np.sqrt(((rgb - bg) ** 2).sum(-1)) > TRIM_TOLERANCE
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return 0, 0, rgb.shape[1], rgb.shape[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def blank_warning(pixels: np.ndarray) -> str | None:
    std = float(pixels.std())
    if std < BLANK_STD:
        return f"blank after preprocessing (28x28 std {std:.1f} < {BLANK_STD:g}): nothing to classify"
    return None


def read(path: Path, preprocess: bool = True) -> Prepared:
    """Decode and prepare one file, with its note and warnings; raises ImageError."""
    decoded = decode(path)
    pixels = prepare(decoded.image, preprocess)
    blank = blank_warning(pixels)
    return Prepared(pixels, decoded.note, decoded.warnings + ((blank,) if blank else ()))


def load(path: Path, preprocess: bool = True) -> tuple[np.ndarray, str | None]:
    """Decode and prepare one file: (uint8 [28, 28], note or None); raises ImageError."""
    prepared = read(path, preprocess)
    return prepared.pixels, prepared.note


def prepare_image(img: Image.Image, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 [H, W] ("L") or [H, W, 3] ("RGB"), resized to `size` (H, W) if given: the one
    definition of an own dataset's input preprocessing (predict prepares a user's photo with it too)."""
    if img.mode != mode:
        img = img.convert(mode)
    if size is not None and (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(img)


@dataclass
class DatasetImage:
    """One dataset file read by read_dataset_image (in a worker process: small and picklable)."""
    sha256: bytes | None  # of the file's bytes; None when it could not be read
    error: str | None = None  # why the file cannot be used (then nothing below is set)
    gray: bool = False  # decoded as 8-bit grayscale ("L")
    size: tuple[int, int] = (0, 0)  # (H, W) as stored
    pixels: np.ndarray | None = None  # prepared (see read_dataset_image); None when only scanned


def read_dataset_image(path: str, mode: str | None, size: tuple[int, int] | None,
                       keep: bool = True) -> DatasetImage:
    """Read, hash and decode one file of a user's dataset, and prepare it with prepare_image in `mode` ("L" or
    "RGB"; None: the image's own, L for grayscale, else RGB) at `size`. keep=False only checks it.

    Torch-free and top-level so that a pool of worker processes can run it. A grayscale image prepared as L
    and repeated to three channels equals the image converted to RGB first and then resized (PIL resizes each
    band alike), so the caller may decide between one and three channels after seeing every image."""
    try:
        problem = not_regular(Path(path))
        if problem:
            raise ImageError(problem)
        data = read_bytes(Path(path), kind="image", error=ImageError)
        digest = hashlib.sha256(data).digest()
        # Drafting a JPEG at a reduced scale is only safe when we resize anyway: read at its own size, exact.
        img = decode_bytes(data, work_size=max(size) if size else None).image
    except ImageError as e:
        return DatasetImage(None, str(e))
    gray = img.mode == "L"
    pixels = prepare_image(img, mode or ("L" if gray else "RGB"), size) if keep else None
    return DatasetImage(digest, None, gray, (img.height, img.width), pixels)


def read_dataset_images(batch: list[tuple]) -> list[DatasetImage]:
    """read_dataset_image of each argument tuple: the task a decoding worker process runs (a chunk of files per
    task, so that sending the results back costs little next to decoding them)."""
    return [read_dataset_image(*args) for args in batch]
