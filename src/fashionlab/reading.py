"""The one way to read a file a user or a run folder hands us: regular files only, size-capped, safely parsed.

Every reader here turns a bad file into one fashionlab error with a one-line message naming the path, and never
blocks or allocates without bound: a FIFO, a device, a socket or a folder is refused from its stat before it is
opened (and opened non-blocking, so a FIFO swapped in meanwhile cannot hang us either); a file is read to at most
its kind's cap + 1 bytes, so one that grows while read, or a /proc-like file that reports size 0, stops there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import reprlib
import stat
import zlib
from pathlib import Path
from typing import Any

from fashionlab.errors import ConfigError, DataError, FashionlabError, RunError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

CAPS: dict[str, int] = {
    # --config YAML/JSON: a few dozen options, about 1 KiB; a thousand times that is no longer a config.
    "config": 1 * MiB,
    # Any other small text file (a notes file, a lock's pid): same reasoning as a config.
    "text": 1 * MiB,
    # Run-folder JSON (config.json, summary.json, results): kilobytes, a few MB with per-sample predictions.
    "json": 16 * MiB,
    # metrics.csv: about 70 bytes a row, so 16 MiB is some 240,000 epochs.
    "metrics": 16 * MiB,
    # A FILE.py given to --model: hand-written model code is tens of KB; generated code can be larger.
    "model_source": 4 * MiB,
    # A photo for predict: a 50-megapixel JPEG is about 25 MB, a 16-bit PNG scan can be twice that.
    "image": 64 * MiB,
    # An IDX dataset file (raw or gunzipped): Fashion-MNIST's largest is 47 MB; 2 GiB leaves room for larger
    # datasets in the same format and still fits in memory.
    "idx": 2 * GiB,
    # A checkpoint: the zoo's models are a few MB (x3 with optimizer state in last.pt); 2 GiB allows a large
    # own model and still fits in memory.
    "checkpoint": 2 * GiB,
    # --exclude FILE, a CSV of training-item indices: label_issues.csv is about 40 bytes a row, so 64 MiB is some
    # 1.6 million rows, more than any dataset a CPU trains on.
    "index_csv": 64 * MiB,
}

# What a kind is called in messages, and the error it raises unless the caller passes error=.
_KINDS: dict[str, tuple[str, type[FashionlabError]]] = {
    "config": ("config file", ConfigError),
    "text": ("file", RunError),
    "json": ("JSON file", RunError),
    "metrics": ("metrics file", RunError),
    "model_source": ("model file", ConfigError),
    "image": ("image", DataError),
    "idx": ("dataset file", DataError),
    "checkpoint": ("checkpoint", RunError),
    "index_csv": ("--exclude file", ConfigError),
}

MAX_CSV_FIELD = 1024  # metrics.csv holds numbers; a field far longer than any number is damage
MAX_YAML_DEPTH = 100  # a config is two levels deep; deeper structures make later recursion (repr, json) fail
MAX_YAML_EXPANSION = 4 * MiB  # nodes + scalar characters once aliases are expanded (see _check_expansion)


def _kind(kind: str, error: type[FashionlabError] | None) -> tuple[int, str, type[FashionlabError]]:
    if kind not in CAPS:
        raise ValueError(f"unknown file kind {kind!r}; one of {', '.join(CAPS)}")
    what, default = _KINDS[kind]
    return CAPS[kind], what, error or default


def show_path(path: str | os.PathLike) -> str:
    """A path for a message: as typed, unless it is huge or holds control characters (then a short repr)."""
    text = os.fsdecode(path)
    if len(text) > 300 or any(ord(c) < 32 or ord(c) == 127 for c in text):
        return shorten(text, 300)
    return text


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def size_text(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


_NOT_REGULAR = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_stat(st: os.stat_result, shown: str, what: str, cap: int, error: type[FashionlabError]) -> None:
    if not stat.S_ISREG(st.st_mode):
        thing = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
        raise error(f"{what} {shown} is {thing}, not a regular file")
    if st.st_size > cap:
        raise error(f"{what} {shown} is {size_text(st.st_size)}; the limit for {_a(what)} is {size_text(cap)}")


def _os_error(e: OSError, shown: str, what: str, error: type[FashionlabError]) -> FashionlabError:
    if isinstance(e, FileNotFoundError):
        return error(f"{what} {shown} not found")
    if isinstance(e, NotADirectoryError):
        return error(f"{what} {shown} not found (a part of the path is a file, not a folder)")
    if isinstance(e, PermissionError):
        return error(f"cannot read {what} {shown}: permission denied")
    if isinstance(e, IsADirectoryError):
        return error(f"{what} {shown} is a folder, not a regular file")
    return error(f"cannot read {what} {shown}: {e.strerror or type(e).__name__}")


def read_bytes(path: str | os.PathLike, *, kind: str, limit: int | None = None,
               error: type[FashionlabError] | None = None) -> bytes:
    """The content of a regular file of `kind` (a key of CAPS), at most `limit` (default: the kind's cap) bytes."""
    cap, what, error = _kind(kind, error)
    cap = cap if limit is None else limit
    shown = show_path(path)
    try:
        _check_stat(os.stat(path), shown, what, cap, error)  # before opening: opening a FIFO could block
        # O_NONBLOCK: a FIFO swapped in after the stat opens at once instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise _os_error(e, shown, what, error) from None
    except ValueError:  # a NUL byte in the path
        raise error(f"cannot read {what} {shown}: the path holds a NUL byte") from None
    try:
        st = os.fstat(fd)
        _check_stat(st, shown, what, cap, error)  # what we opened, in case the path changed since the stat
        chunks, total = [], 0
        while total <= cap:
            # Ask for the whole expected rest at once: one chunk is returned without a copy by the join below.
            chunk = os.read(fd, min(cap + 1 - total, max(st.st_size - total + 1, 64 * KiB)))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise _os_error(e, shown, what, error) from None
    finally:
        os.close(fd)
    if total > cap:
        raise error(f"{what} {shown} is over the {size_text(cap)} limit for {_a(what)}")
    return b"".join(chunks)


def read_text(path: str | os.PathLike, *, kind: str, limit: int | None = None,
              error: type[FashionlabError] | None = None) -> str:
    """A regular file's UTF-8 text; binary content (bad UTF-8 or NUL bytes) gets a one-line error."""
    return decode_text(read_bytes(path, kind=kind, limit=limit, error=error), path, kind=kind, error=error)


def decode_text(data: bytes, path: str | os.PathLike, *, kind: str, error: type[FashionlabError] | None = None) -> str:
    """read_text's decoding of bytes already read (by read_bytes), for a caller that also needs the bytes."""
    _, what, error = _kind(kind, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {show_path(path)} is not UTF-8 text (bad byte at offset {e.start})") from None
    if "\x00" in text:
        raise error(f"{what} {show_path(path)} is binary (it holds NUL bytes), not text")
    return text.removeprefix("\ufeff")  # a BOM from a Windows editor: json.loads would refuse it


def gunzip(data: bytes, *, kind: str, source: str, limit: int | None = None,
           error: type[FashionlabError] | None = None) -> bytes:
    """Decompress gzip `data` (all members), stopping at the kind's cap so a small bomb cannot fill memory."""
    cap, what, error = _kind(kind, error)
    cap = cap if limit is None else limit
    out, total = [], 0
    try:
        while data:
            d = zlib.decompressobj(wbits=31)
            chunk = d.decompress(data, cap + 1 - total)
            total += len(chunk)
            if total > cap:
                raise error(f"{what} {source} decompresses to over the {size_text(cap)} limit for {_a(what)}")
            if not d.eof:
                raise error(f"{what} {source} is truncated gzip data; replace it with a good copy")
            out.append(chunk)
            data = d.unused_data.lstrip(b"\0")  # the next member; gzip allows zero padding between
    except zlib.error as e:
        raise error(f"{what} {source} is corrupt gzip data ({e}); replace it with a good copy") from None
    return b"".join(out)


# ---------------------------------------------------------------------------------------------- YAML and JSON

def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: Any, limit: int, source: str, error: type[FashionlabError]) -> None:
    """Refuse a node graph whose aliases expand it past `limit` (nodes + scalar characters), that nests deeper
    than MAX_YAML_DEPTH, or that refers to itself. Aliases make the composed graph a DAG, linear in the text,
    while everything that later walks the value (merge keys, repr, json.dumps) pays for the expanded tree, which
    nested aliases make exponential ("billion laughs"). Sizes are memoised per node, so this is linear too."""
    import yaml

    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again means a cycle
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            kids = _children(node)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            size[key] = 1 + own + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if size[key] > limit:
                raise error(f"{source}: its YAML aliases would expand it past {size_text(limit)}; refused "
                            "(write the values out instead of nesting aliases)")
            if height[key] > MAX_YAML_DEPTH:
                raise error(f"{source} is nested more than {MAX_YAML_DEPTH} levels deep")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise error(f"{source}: a YAML alias refers to a value that contains it (a recursive structure)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _yaml_loader() -> type:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: faster, and caps nesting at 1000 itself


def _first_line(e: BaseException) -> str:
    if "integer string conversion" in str(e):  # Python's own advice (sys.set_int_max_str_digits) is not the user's
        return "a number with too many digits"
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if problem and mark is not None:
        context = getattr(e, "context", None)  # "expected a single document", to which problem says "but found..."
        text = f"{context + ', ' if context else ''}{problem} (line {mark.line + 1}, column {mark.column + 1})"
    else:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


def parse_yaml(text: str, *, source: str, error: type[FashionlabError] = ConfigError) -> Any:
    """YAML loaded with the safe loader (plain data, never objects), alias expansion and depth bounded."""
    import yaml

    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Relative to the text too, so a large plain document (no aliases) is never called an alias bomb.
        _check_expansion(node, max(MAX_YAML_EXPANSION, 2 * len(text) + 2), source, error)
        return loader.construct_document(node)
    except FashionlabError:
        raise
    except RecursionError:  # the pure-Python loader, where libyaml is missing
        raise error(f"{source} is nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:  # ValueError: a 5000-digit int...
        raise error(f"{source} is not valid YAML: {_first_line(e)}") from None
    finally:
        loader.dispose()


def parse_json(text: str, *, source: str, error: type[FashionlabError] = RunError, allow_nan: bool = True) -> Any:
    """JSON text; with allow_nan=False, NaN and Infinity (which are not JSON) are refused too."""

    def no_constant(name: str) -> float:
        raise ValueError(f"{name} is not a JSON value")

    def finite(digits: str) -> float:
        if not math.isfinite(value := float(digits)):  # 1e999 parses as inf
            raise ValueError(f"{shorten(digits, 40)} is out of range")
        return value

    try:
        return json.loads(text, parse_constant=None if allow_nan else no_constant,
                          parse_float=None if allow_nan else finite)
    except RecursionError:
        raise error(f"{source} is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() refusing a number of more than 4300 digits
        raise error(f"{source} is not valid JSON: {_first_line(e)}") from None


def load_yaml(path: str | os.PathLike, *, kind: str = "config", limit: int | None = None,
              error: type[FashionlabError] | None = None) -> Any:
    _, what, error = _kind(kind, error)
    text = read_text(path, kind=kind, limit=limit, error=error)
    return parse_yaml(text, source=f"{what} {show_path(path)}", error=error)


def load_json(path: str | os.PathLike, *, kind: str = "json", limit: int | None = None,
              error: type[FashionlabError] | None = None, allow_nan: bool = True) -> Any:
    _, what, error = _kind(kind, error)
    text = read_text(path, kind=kind, limit=limit, error=error)
    return parse_json(text, source=f"{what} {show_path(path)}", error=error, allow_nan=allow_nan)


def load_config_text(text: str, *, source: str, json_format: bool = False) -> Any:
    """--config content: JSON when the file says so by its suffix, YAML otherwise (ConfigError either way)."""
    if json_format:  # NaN passes here so the option's range check can say which option must be finite
        return parse_json(text, source=source, error=ConfigError)
    return parse_yaml(text, source=source, error=ConfigError)


def load_config_file(path: str | os.PathLike) -> Any:
    """A --config file, read and parsed: .json as JSON, anything else as YAML."""
    text = read_text(path, kind="config")
    return load_config_text(text, source=f"config file {show_path(path)}",
                            json_format=Path(os.fsdecode(path)).suffix.lower() == ".json")


# ---------------------------------------------------------------------------------------------- CSV

def read_csv_rows(path: str | os.PathLike, *, kind: str = "metrics", limit: int | None = None,
                  max_field: int = MAX_CSV_FIELD,
                  error: type[FashionlabError] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file; every row has the header's width and no field over `max_field` characters.
    Blank lines are skipped. A bad row gets a one-line error naming the file and its line number."""
    return parse_csv_rows(read_text(path, kind=kind, limit=limit, error=error), path, kind=kind,
                          max_field=max_field, error=error)


def parse_csv_rows(text: str, path: str | os.PathLike, *, kind: str, max_field: int = MAX_CSV_FIELD,
                   error: type[FashionlabError] | None = None) -> tuple[list[str], list[list[str]]]:
    """read_csv_rows' parsing of text already read (by read_text or decode_text) from `path`."""
    _, what, error = _kind(kind, error)
    shown = show_path(path)
    # Checked by length here, not by csv.field_size_limit(), which is process-wide state we must not change.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row:
                continue
            at = f"{what} {shown}, line {reader.line_num}"
            long = next((f for f in row if len(f) > max_field), None)
            if long is not None:
                raise error(f"{at}: a field of {len(long):,} characters (the limit is {max_field:,})")
            if header is None:
                dup = next((c for c in row if row.count(c) > 1), None)
                if dup is not None:
                    raise error(f"{at}: column {shorten(dup, 40)} appears twice in the header")
                header = row
            elif len(row) != len(header):
                raise error(f"{at}: {len(row)} fields, but the header has {len(header)}")
            else:
                rows.append(row)
    except csv.Error as e:
        reason = str(e)
        if "field larger than field limit" in reason:
            reason = f"a field over the limit of {max_field:,} characters"
        raise error(f"{what} {shown}, line {reader.line_num}: {_first_line(Exception(reason))}") from None
    if header is None:
        raise error(f"{what} {shown} is empty (no header row)")
    return header, rows


# ---------------------------------------------------------------------------------------------- messages

class _Short(reprlib.Repr):
    """reprlib, with the cases it renders whole (or sorts whole) made bounded too."""

    def __init__(self, n: int):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset, self.maxfrozenset = 3, 6, 6, 4, 6, 6
        self.maxstring = self.maxother = self.maxlong = max(n, 12)

    def repr1(self, x: Any, level: int) -> str:
        # By isinstance, not by type name as reprlib does, so subclasses do not fall back to a whole repr().
        if isinstance(x, bool) or x is None:
            return repr(x)
        if isinstance(x, str):
            return self.repr_str(x, level)
        if isinstance(x, (bytes, bytearray)):
            return self._bytes(x)
        if isinstance(x, int):
            return self._int(x)
        if isinstance(x, dict):
            return self._mapping(x, level)
        if isinstance(x, (set, frozenset)):
            return self._unsorted(x, level)
        if isinstance(x, list):
            return self.repr_list(x, level)
        if isinstance(x, tuple):
            return self.repr_tuple(x, level)
        return super().repr1(x, level)

    def _bytes(self, x: bytes | bytearray) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{bytes(x[: self.maxstring])!r}... ({len(x):,} bytes)"

    def _int(self, x: int) -> str:
        bits = abs(x).bit_length()
        if bits > 12_000:  # str() of a huge int is slow (and refused past 4300 digits): estimate instead
            return f"<an integer of about {int(bits * math.log10(2)) + 1:,} digits>"
        s = str(x)
        return s if len(s) <= self.maxlong else f"{s[:12]}...{s[-3:]} ({len(s.lstrip('-')):,} digits)"

    def _mapping(self, x: dict, level: int) -> str:  # reprlib sorts the keys first: O(n log n) for a huge dict
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(x[k], level - 1)}" for k in _take(x, self.maxdict)]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"

    def _unsorted(self, x: set | frozenset, level: int) -> str:
        if level <= 0:
            return "{...}"
        items = [self.repr1(v, level - 1) for v in _take(x, self.maxset)]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxset else "") + "}"


def _take(iterable: Any, n: int) -> list[Any]:
    out = []
    for item in iterable:
        if len(out) == n:
            break
        out.append(item)
    return out


def shorten(value: Any, n: int = 80) -> str:
    """repr(value) on one line, at most n characters, built from only the part that is shown: a 5 MB string or a
    million-element nested list costs microseconds. (An arbitrary object's own __repr__ is called as is.)"""
    text = _Short(n).repr(value)
    text = re.sub(r"\s*[\r\n]+\s*", " ", text)  # reprs of arrays and the like span lines
    return text if len(text) <= n else text[: max(n - 3, 0)] + "..."
