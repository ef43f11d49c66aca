"""File-system safety: atomic writes, files created without replacing anything, the folders fashionlab owns, and
the lock against two writers. The bottom of the package: it knows nothing of runs, only of files and folders."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from fashionlab.errors import RunError

TMP_MARK = ".tmp-"


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            reason = os.strerror(e.errno or errno.EIO)
            raise RunError(f"cannot write {path}: {reason}; the previous file is intact") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_new_file(path: Path, data: bytes) -> None:
    """Create `path` with `data`, complete or not at all, and never replace an existing file: written to a
    temp file beside it, then hard-linked to its name (which fails if the name exists)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        try:
            os.link(tmp, path)
        except OSError as e:
            if isinstance(e, FileExistsError):
                raise
            with open(path, "xb") as f:  # a file system without hard links: exclusive create instead
                f.write(data)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_text(obj: Any) -> str:
    """Strict JSON (RFC 8259): a NaN or infinity, which json.dumps would write as the non-JSON NaN/Infinity, becomes
    null; the writer says why a value is missing in a field of its own."""
    return json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def atomic_torch_save(path: Path | str, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_figure(path: Path | str, fig) -> None:
    atomic_write_bytes(path, figure_png(fig))


def figure_png(fig) -> bytes:
    """A matplotlib Figure as the PNG every figure file of a run holds."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


MARKER = ".fashionlab"  # written into every folder fashionlab makes: the only folders it cleans or overwrites in


def owns(folder: Path) -> bool:
    """A folder fashionlab made (marker), or a run folder from a version before the marker (config.json)."""
    return (folder / MARKER).is_file() or (folder / "config.json").is_file()


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temp files a killed writer of ours left behind, only in a folder fashionlab owns."""
    if not owns(folder):
        return []
    removed = []
    for p in list(folder.glob(f".*{TMP_MARK}*")) + list(folder.glob(f"*/.*{TMP_MARK}*")):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def check_new_folder(folder: Path, what: str) -> None:
    """An output folder fashionlab may write into: missing, empty, or one it made; anything else is refused."""
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{what} {folder} is a file, not a folder")
    if folder.is_dir() and not (folder / MARKER).is_file() and any(folder.iterdir()):
        raise RunError(f"{what} {folder} is not empty and was not made by fashionlab; choose another folder")
    parent = next((p for p in folder.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise RunError(f"cannot create {what} {folder}: {parent} is not a folder")
    if not os.access(folder if folder.is_dir() else parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot write {what} {folder}: permission denied")


def check_outside(path: Path, folder: Path | None, what: str) -> None:
    """Refuse an output path inside `folder`, a user's dataset folder: fashionlab never writes there (and a run
    folder in it would be read back as one more class of images)."""
    if folder is None:
        return
    try:
        inside = Path(os.path.abspath(path)).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError, RuntimeError):  # an unresolvable path: the checks that follow name it
        return
    if inside:
        raise RunError(f"{what} {path} is inside the dataset folder {folder}; fashionlab never writes into your "
                       "data: choose a folder outside it")


def check_new_file(path: Path, what: str, suffixes: tuple[str, ...] = ()) -> None:
    """An output file fashionlab may create: it must not exist, and its folder must exist and be writable."""
    if suffixes and path.suffix.lower() not in suffixes:
        raise RunError(f"{what} {path} must end in {' or '.join(suffixes)} (that is the format written)")
    if path.exists() or path.is_symlink():
        raise RunError(f"{what} {path} already exists; fashionlab does not overwrite files it did not create")
    if not path.parent.is_dir():
        raise RunError(f"cannot write {what} {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot write {what} {path}: permission denied in {path.parent}")


def make_folder(folder: Path) -> list[Path]:
    """mkdir -p, then mark the folder as fashionlab's; returns the folders created (deepest first) for undo()."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / MARKER).exists():
            (folder / MARKER).write_text("made by fashionlab\n")
    except OSError as e:
        raise RunError(f"cannot create folder {folder}: {e.strerror or e}") from None
    return created


def undo_folder(folder: Path, created: list[Path], files: list[str]) -> None:
    """Remove what a failed start made: the named files of ours, then the folders it created if now empty."""
    for name in files:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    for d in created:
        with contextlib.suppress(OSError):
            d.rmdir()


class RunLock:
    """An exclusive flock on RUN_DIR/.lock; the kernel drops it when the process dies, even on SIGKILL."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot use run folder {self.path.parent}: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise RunError(
                f"run folder {self.path.parent} is in use by another training (pid {owner}); "
                "wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """The pid of the training that holds RUN_DIR's lock, or None; read-only (creates nothing)."""
        try:
            fd = os.open(Path(run_dir) / RunLock.NAME, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)  # closing drops a lock we took
        return None

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
