"""Where the Fashion-MNIST files come from, and proof that they are the right ones.

Search order, first hit wins: `--data-dir`, `$FASHIONLAB_DATA`, the user cache, the Debian package's
directory, and finally a download into the cache. A directory the user named is used or rejected, never
skipped, so a typo cannot silently train on other data. Files are identified by the sha256 of their
decompressed bytes, because distributions recompress the .gz files (Debian does).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from fashionlab.data.idx import decompressed_bytes
from fashionlab.errors import DataError, FashionlabError
from fashionlab.reading import load_json

FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_PACKAGE = "dataset-fashion-mnist"
ENV_DATA = "FASHIONLAB_DATA"
ENV_SKIP_VERIFY = "FASHIONLAB_SKIP_VERIFY"  # for synthetic test data whose hashes cannot match FILES
ENV_SYSTEM_DIR = "FASHIONLAB_SYSTEM_DIR"  # lets tests hide (or fake) the Debian directory
TIMEOUT_S = 30
MAX_DOWNLOAD_BYTES = 100 * 2**20  # the largest file is ~26 MB; stops a misbehaving server early
MEMO_NAME = ".sha256-memo.json"

_ADVICE = {
    "cache": "delete it and re-run to download it again",
    "downloaded": "delete it and re-run to download it again",
    "system": f"reinstall it with `apt-get install --reinstall {APT_PACKAGE}`",
}
_USER_ADVICE = f"replace it with an original copy (or set {ENV_SKIP_VERIFY}=1 to use it anyway)"


@dataclass(frozen=True)
class DataSource:
    """The directory the four files were found in, how it was chosen, and their verified hashes."""

    path: Path
    origin: str  # "--data-dir", "$FASHIONLAB_DATA", "cache", "system" or "downloaded"
    files: dict[str, Path]
    sha256: dict[str, str]  # of the decompressed bytes, whether or not they were checked against FILES


def cache_home() -> Path:
    """`$XDG_CACHE_HOME/fashionlab`, or `~/.cache/fashionlab` when that is unset or relative: fashionlab's cache
    (the downloaded Fashion-MNIST, data.decoding's decoded images)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fashionlab"


def default_cache_dir() -> Path:
    """Where Fashion-MNIST is downloaded: cache_home()/fashion-mnist."""
    return cache_home() / "fashion-mnist"


def skip_verify_requested() -> bool:
    return os.environ.get(ENV_SKIP_VERIFY, "").strip().lower() in {"1", "true", "yes"}


def find_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The data files present in `directory` (NAME preferred over NAME.gz), and the names missing."""
    found: dict[str, Path] = {}
    for name in FILES:
        path = next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
        if path is not None:
            found[name] = path
    return found, [name for name in FILES if name not in found]


def locate(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    verify: bool = True,
    cache_dir: str | os.PathLike | None = None,
    system_dir: str | os.PathLike | None = None,
) -> DataSource:
    """Find (or download) the four files and check their hashes; see the module docstring for the order.

    `verify=False` or `$FASHIONLAB_SKIP_VERIFY=1` accepts files whose hashes differ from FILES;
    downloads are always verified.
    """
    verify = verify and not skip_verify_requested()
    env_dir = os.environ.get(ENV_DATA, "")
    if data_dir is not None:
        return _user_dir(Path(data_dir), "--data-dir", f"--data-dir {data_dir}", verify)
    if env_dir:
        return _user_dir(Path(env_dir), "$" + ENV_DATA, f"${ENV_DATA}={env_dir}", verify)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    system = Path(system_dir or os.environ.get(ENV_SYSTEM_DIR) or SYSTEM_DIR)
    for directory, origin in ((cache, "cache"), (system, "system")):
        files, missing = find_files(directory)
        if not missing:
            memo = cache / MEMO_NAME if origin == "cache" else None
            return _checked(directory, origin, files, verify, memo)
    if not download:
        raise DataError(
            f"Fashion-MNIST not found in {cache} or {system}; pass --data-dir DIR, set ${ENV_DATA}, "
            f"run `apt-get install {APT_PACKAGE}`, or allow the download"
        )
    return _download_missing(cache, mirrors or MIRRORS, progress, verify)


def _user_dir(directory: Path, origin: str, label: str, verify: bool) -> DataSource:
    if not directory.is_dir():
        raise DataError(f"{label}: no such directory")
    files, missing = find_files(directory)
    if missing:
        names = ", ".join(f"{name}[.gz]" for name in missing)
        raise DataError(f"{label}: missing {names}; the directory needs the four Fashion-MNIST IDX files")
    return _checked(directory, origin, files, verify, memo=None)


def _checked(directory: Path, origin: str, files: dict[str, Path], verify: bool, memo: Path | None) -> DataSource:
    sha256 = hash_files(files, memo)
    for name, path in files.items():
        if verify and sha256[name] != FILES[name]:
            raise DataError(
                f"{path}: sha256 mismatch: expected {FILES[name]}, found {sha256[name]}; "
                f"{_ADVICE.get(origin, _USER_ADVICE)}"
            )
    return DataSource(directory, origin, files, sha256)


def hash_files(files: dict[str, Path], memo: Path | None = None) -> dict[str, str]:
    """sha256 of each file's decompressed bytes; `memo` (a JSON sidecar keyed by size and mtime)
    spares re-reading unchanged files. Only our own cache gets a memo: user directories stay untouched."""
    table = _read_memo(memo)
    result, changed = {}, False
    for name, path in files.items():
        stat = path.stat()
        stamp = [path.name, stat.st_size, stat.st_mtime_ns]
        entry = table.get(name)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            result[name] = entry["sha256"]
            continue
        result[name] = hashlib.sha256(decompressed_bytes(path)).hexdigest()
        table[name] = {"stamp": stamp, "sha256": result[name]}
        changed = True
    if memo is not None and changed:
        _write_memo(memo, table)
    return result


def _read_memo(memo: Path | None) -> dict:
    try:
        table = load_json(memo, kind="json", error=DataError) if memo is not None and memo.exists() else {}
    except FashionlabError:  # a damaged memo is only a missed optimisation: the files are hashed again
        return {}
    return table if isinstance(table, dict) else {}


def _write_memo(memo: Path, table: dict) -> None:
    from fashionlab.files import atomic_write_text

    try:
        atomic_write_text(memo, json.dumps(table, indent=1))
    except FashionlabError:
        pass  # the memo is only an optimisation; a read-only cache is fine


def _download_missing(cache: Path, mirrors: Sequence[str], progress: bool, verify: bool) -> DataSource:
    files, missing = find_files(cache)
    for name in missing:
        files[name] = download(name, cache, mirrors, progress)
    return _checked(cache, "downloaded", files, verify, memo=cache / MEMO_NAME)


def download(name: str, directory: Path, mirrors: Sequence[str] = MIRRORS, progress: bool = True) -> Path:
    """Fetch NAME.gz from the first mirror that serves the right bytes, into `directory`."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {directory}: {e.strerror}; use --data-dir or ${ENV_DATA}") from None
    target = directory / f"{name}.gz"
    part = directory / f".{name}.gz.part-{os.getpid()}"
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        try:
            _fetch(url, part, progress)
            _check_download(part, name)
            os.replace(part, target)
            return target
        except (OSError, DataError, ValueError, http.client.HTTPException) as e:
            failures.append(f"{url}: {_describe(e)}")
        finally:
            part.unlink(missing_ok=True)
    raise DataError(
        f"could not download {name}.gz: " + "; ".join(failures)
        + f"; check the connection, or use --data-dir, ${ENV_DATA} or `apt-get install {APT_PACKAGE}`"
    )


def _check_download(part: Path, name: str) -> None:
    try:
        digest = hashlib.sha256(decompressed_bytes(part)).hexdigest()
    except DataError:
        raise DataError("not a valid gzip file") from None
    if digest != FILES[name]:
        raise DataError(f"wrong content (sha256 {digest})")


def _fetch(url: str, dest: Path, progress: bool) -> None:
    show = progress and sys.stderr.isatty()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with (
        urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
        open(dest, "wb") as out,
        Progress(*columns, console=Console(stderr=True), disable=not show) as bar,
    ):
        size = int(response.headers.get("Content-Length") or 0)
        task = bar.add_task(Path(url).name, total=size or None)
        while chunk := response.read(1 << 16):
            if out.tell() + len(chunk) > MAX_DOWNLOAD_BYTES:
                raise DataError(f"response larger than {MAX_DOWNLOAD_BYTES} bytes")
            out.write(chunk)
            bar.advance(task, len(chunk))


def _describe(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, TimeoutError):
        return f"timed out after {TIMEOUT_S} s"
    return str(error) or type(error).__name__
