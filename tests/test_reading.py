"""fashionlab.reading: regular files only, size caps, bounded YAML/JSON/CSV parsing, bounded shortening."""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import signal
import socket
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from fashionlab import reading
from fashionlab.errors import ConfigError, DataError, FashionlabError, RunError
from fashionlab.reading import (
    CAPS,
    gunzip,
    load_config_file,
    load_json,
    load_yaml,
    parse_json,
    parse_yaml,
    read_bytes,
    read_csv_rows,
    read_text,
    shorten,
)


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a read that blocks (a FIFO opened without O_NONBLOCK) is interrupted."""

    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def refused(call, error=FashionlabError, *fragments: str) -> str:
    """Run `call`, which must raise `error` with a one-line message holding every fragment; returns it."""
    with deadline(10), pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------------------------------------- read_bytes


def test_regular_file_and_symlink_to_it(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"lr: 0.1\n")
    (tmp_path / "link.yaml").symlink_to(f)
    assert read_bytes(f, kind="config") == b"lr: 0.1\n"
    assert read_bytes(str(tmp_path / "link.yaml"), kind="config") == b"lr: 0.1\n"
    (tmp_path / "empty").write_bytes(b"")
    assert read_bytes(tmp_path / "empty", kind="text") == b""


def test_fifo_is_refused_promptly(fifo: Path):
    start = time.monotonic()
    refused(lambda: read_bytes(fifo, kind="config"), ConfigError, str(fifo), "named pipe (FIFO)")
    refused(lambda: read_text(fifo, kind="metrics"), RunError, "named pipe")
    refused(lambda: load_yaml(fifo), ConfigError, "named pipe")
    refused(lambda: load_config_file(fifo), ConfigError, "named pipe")
    refused(lambda: read_csv_rows(fifo), RunError, "named pipe")
    assert time.monotonic() - start < 2


def test_fifo_swapped_in_after_the_stat_cannot_hang(fifo: Path, tmp_path: Path, monkeypatch):
    """The second guard: stat saw a regular file, but a FIFO is what gets opened (O_NONBLOCK, then fstat)."""
    regular = tmp_path / "regular"
    regular.write_text("x")
    real_stat = os.stat
    monkeypatch.setattr(reading.os, "stat", lambda p, *a, **k: real_stat(regular))
    refused(lambda: read_bytes(fifo, kind="config"), ConfigError, "named pipe")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused(device: str, tmp_path: Path):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refused(lambda: read_bytes(device, kind="config"), ConfigError, device, "character device")
    link = tmp_path / "metrics.csv"
    link.symlink_to(device)
    refused(lambda: read_csv_rows(link), RunError, str(link), "character device")


def test_folder_socket_missing_and_odd_paths(tmp_path: Path):
    refused(lambda: read_bytes(tmp_path, kind="json"), RunError, str(tmp_path), "is a folder")
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        refused(lambda: read_bytes(sock_path, kind="image"), DataError, "is a socket")
    refused(lambda: read_bytes(tmp_path / "nope", kind="idx"), DataError, "nope", "not found")
    (tmp_path / "file").write_text("x")
    refused(lambda: read_bytes(tmp_path / "file" / "x", kind="text"), RunError, "not found")
    refused(lambda: read_bytes("a\0b", kind="config"), ConfigError, "NUL")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(lambda: read_bytes(loop, kind="config"), ConfigError, "cannot read")
    refused(lambda: read_bytes(tmp_path / ("x\n" * 500), kind="config"), ConfigError, "cannot read", "too long")


def test_permission_denied(tmp_path: Path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("a: 1")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(reading.os, "open", denied)  # root ignores mode bits, so simulate
    refused(lambda: read_bytes(f, kind="config"), ConfigError, "permission denied", str(f))


def test_size_caps(tmp_path: Path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(CAPS["config"] + 1)  # sparse: costs no disk
    refused(lambda: read_bytes(big, kind="config"), ConfigError, "1 MiB", "limit")
    refused(lambda: load_config_file(big), ConfigError, "limit for a config file is 1 MiB")
    exact = tmp_path / "exact.yaml"
    exact.write_bytes(b"#" * 100)
    assert len(read_bytes(exact, kind="config", limit=100)) == 100
    refused(lambda: read_bytes(exact, kind="config", limit=99), ConfigError, "limit")
    assert all(v > 0 for v in CAPS.values())
    with pytest.raises(ValueError, match="unknown file kind"):
        read_bytes(exact, kind="nonsense")


def test_a_file_larger_than_its_stat_stops_at_the_cap():
    """/proc files report size 0 whatever they hold: the read itself is bounded."""
    path = "/proc/self/maps"
    if not os.path.exists(path):
        pytest.skip("no /proc")
    refused(lambda: read_bytes(path, kind="text", limit=10), RunError, "over the 10 bytes limit")


def test_error_class_can_be_chosen(fifo: Path):
    refused(lambda: read_bytes(fifo, kind="config", error=DataError), DataError, "named pipe")


def test_read_text(tmp_path: Path):
    f = tmp_path / "t.yaml"
    f.write_bytes("\ufeffname: café\n".encode())
    assert read_text(f, kind="config") == "name: café\n"
    f.write_bytes(b"a: \xff\xfe")
    refused(lambda: read_text(f, kind="config"), ConfigError, "not UTF-8", "offset 3")
    f.write_bytes(b"a: 1\0")
    refused(lambda: read_text(f, kind="config"), ConfigError, "binary")


def test_gunzip_is_bounded():
    data = b"IDX" * 1000
    assert gunzip(gzip.compress(data), kind="idx", source="f.gz") == data
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), kind="idx", source="f.gz") == b"abcd"
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in some 64 KB
    start = time.monotonic()
    refused(lambda: gunzip(bomb, kind="idx", source="f.gz", limit=1 << 20), DataError, "decompresses to over")
    assert time.monotonic() - start < 1
    refused(lambda: gunzip(gzip.compress(data)[:-20], kind="idx", source="f.gz"), DataError, "truncated")
    refused(lambda: gunzip(b"\x1f\x8bnot gzip at all", kind="idx", source="f.gz"), DataError, "corrupt")


# ---------------------------------------------------------------------------------------------- YAML / JSON


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * width)}]")
    return "\n".join(lines) + "\n"


@pytest.fixture(params=["libyaml", "pure-python"])
def yaml_loader(request, monkeypatch):
    if request.param == "libyaml":
        if not hasattr(yaml, "CSafeLoader"):
            pytest.skip("PyYAML without libyaml")
        monkeypatch.setattr(reading, "_yaml_loader", lambda: yaml.CSafeLoader)
    else:
        monkeypatch.setattr(reading, "_yaml_loader", lambda: yaml.SafeLoader)
    return request.param


def test_billion_laughs_fails_fast_and_small(yaml_loader, tmp_path: Path):
    text = billion_laughs()
    assert len(text) < 500
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    start = time.monotonic()
    try:
        refused(lambda: load_config_file(path), ConfigError, str(path), "aliases")
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 50 << 20


def test_merge_key_bomb_is_refused(yaml_loader):
    lines = ["a: &a {x: 1, y: 2}"]
    for prev, name in zip("abcdefghijklmnopqrstuvwxyz", "bcdefghijklmnopqrstuvwxyz"):
        lines.append(f"{name}: &{name} {{<<: [*{prev}, *{prev}, *{prev}, *{prev}]}}")
    start = time.monotonic()
    refused(lambda: parse_yaml("\n".join(lines), source="config file m.yaml"), ConfigError, "aliases")
    assert time.monotonic() - start < 0.5


def test_recursive_and_deep_yaml(yaml_loader):
    refused(lambda: parse_yaml("a: &x [1, *x]", source="c.yaml"), ConfigError, "recursive")
    refused(lambda: parse_yaml("&x {a: *x}", source="c.yaml"), ConfigError, "recursive")
    deep = "[" * 150 + "]" * 150
    refused(lambda: parse_yaml(deep, source="c.yaml"), ConfigError, "nested")
    assert parse_yaml("[" * 50 + "]" * 50, source="c.yaml") is not None


def test_valid_yaml_still_loads(yaml_loader):
    assert parse_yaml("", source="c") is None
    assert parse_yaml("lr: 0.1\nepochs: 3\nmodel: cnn\naugment: [flip, crop]\n", source="c") == {
        "lr": 0.1, "epochs": 3, "model": "cnn", "augment": ["flip", "crop"]}
    anchors = "base: &b {lr: 0.1}\nrun: {<<: *b, epochs: 2}\nalso: *b\n"
    assert parse_yaml(anchors, source="c") == {"base": {"lr": 0.1}, "run": {"lr": 0.1, "epochs": 2},
                                               "also": {"lr": 0.1}}
    assert parse_yaml("a: " + "1" * 309, source="c") == {"a": int("1" * 309)}


def test_a_large_plain_document_is_not_called_a_bomb(yaml_loader, monkeypatch):
    monkeypatch.setattr(reading, "MAX_YAML_EXPANSION", 50)
    plain = "\n".join(f"k{i}: {i}" for i in range(200))
    assert len(parse_yaml(plain, source="c")) == 200
    refused(lambda: parse_yaml(billion_laughs(3, 20), source="c"), ConfigError, "aliases")


@pytest.mark.parametrize("text, fragment", [
    ("!!python/object/apply:os.system [ls]", "could not determine a constructor"),
    ("a: [1,", "(line "),
    ("a: 1\n---\nb: 2\n", "single document"),
    ("a: " + "1" * 5000, "too many digits"),
    ("a: *nowhere", "undefined alias"),
    ("{[1]: 2}", "unhashable"),
])
def test_bad_yaml_gets_one_line(yaml_loader, text: str, fragment: str):
    message = refused(lambda: parse_yaml(text, source="config file c.yaml"), ConfigError, "config file c.yaml")
    assert fragment in message
    assert "set_int_max_str_digits" not in message


def test_json(tmp_path: Path):
    f = tmp_path / "summary.json"
    f.write_text('{"acc": 0.9, "runs": [1, 2]}')
    assert load_json(f) == {"acc": 0.9, "runs": [1, 2]}
    assert parse_json('{"a": NaN}', source="s")["a"] != 0  # NaN by default: run folders from older versions
    refused(lambda: parse_json('{"a": NaN}', source="s", allow_nan=False), RunError, "NaN")
    refused(lambda: parse_json('{"a": 1e999}', source="s", allow_nan=False), RunError, "out of range")
    refused(lambda: parse_json('{"a": ', source="summary.json"), RunError, "summary.json", "not valid JSON")
    refused(lambda: parse_json("[" * 200_000, source="s"), RunError, "nested too deeply")
    refused(lambda: parse_json("1" * 5000, source="s"), RunError, "too many digits")
    f.write_bytes(b"[" * (CAPS["json"] + 1))
    refused(lambda: load_json(f), RunError, "16 MiB")


def test_config_file_by_suffix(tmp_path: Path):
    (tmp_path / "c.json").write_text('{"lr": 0.5}')
    (tmp_path / "c.yaml").write_text("lr: 0.5\n")
    assert load_config_file(tmp_path / "c.json") == {"lr": 0.5}
    assert load_config_file(tmp_path / "c.yaml") == {"lr": 0.5}
    (tmp_path / "bad.json").write_text("lr: 0.5")
    refused(lambda: load_config_file(tmp_path / "bad.json"), ConfigError, "bad.json", "not valid JSON")
    refused(lambda: load_config_file("/dev/zero"), ConfigError, "character device")


# ---------------------------------------------------------------------------------------------- CSV

HEADER = "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"


def test_csv_rows(tmp_path: Path):
    f = tmp_path / "metrics.csv"
    f.write_text(f"{HEADER}\n1,0.5,0.8,0.6,0.7,0.1,3\n\n2,0.4,0.85,0.5,0.75,0.1,3\n")
    header, rows = read_csv_rows(f)
    assert header == HEADER.split(",")
    assert rows == [["1", "0.5", "0.8", "0.6", "0.7", "0.1", "3"], ["2", "0.4", "0.85", "0.5", "0.75", "0.1", "3"]]


@pytest.mark.parametrize("field_size", [2000, 5_000_000])
def test_csv_enormous_field(tmp_path: Path, field_size: int):
    f = tmp_path / "metrics.csv"
    f.write_text(f"{HEADER}\n1,0.5,0.8,0.6,0.7,0.1,3\n2,{'9' * field_size},0.8,0.6,0.7,0.1,3\n")
    limit_before = csv.field_size_limit()
    start = time.monotonic()
    refused(lambda: read_csv_rows(f), RunError, str(f), "line 3", "1,024")
    assert time.monotonic() - start < 2
    assert csv.field_size_limit() == limit_before  # process-wide state left alone


@pytest.mark.parametrize("content, fragments", [
    ("", ("is empty",)),
    ("\n\n", ("is empty",)),
    (f"{HEADER}\n1,2,3\n", ("line 2", "3 fields, but the header has 7")),
    (f"{HEADER}\n1,0.5,0.8,0.6,0.7,0.1,3\n2,0.5,0.8,0.6,0.7,0.1,3,extra\n", ("line 3", "8 fields")),
    ("epoch,epoch\n1,2\n", ("line 1", "'epoch' appears twice")),
    (f'{HEADER}\n1,"0.5"x,0.8,0.6,0.7,0.1,3\n', ("line 2",)),
])
def test_csv_malformed(tmp_path: Path, content: str, fragments: tuple[str, ...]):
    f = tmp_path / "metrics.csv"
    f.write_text(content)
    refused(lambda: read_csv_rows(f), RunError, str(f), *fragments)


# ---------------------------------------------------------------------------------------------- shorten


class Text(str):
    pass


def fast(value, n: int = 80) -> str:
    start = time.perf_counter()
    text = shorten(value, n)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.05, f"shorten took {elapsed:.3f} s"
    assert len(text) <= n and "\n" not in text, text
    return text


def test_shorten_huge_values_fast():
    nested = [[i] * 1000 for i in range(1000)]  # 10^6 elements
    assert fast(nested).startswith("[[0, 0, 0")
    assert fast("x" * 5_000_000).startswith("'xxx")
    assert fast(Text("y" * 5_000_000)).startswith("'yyy")
    assert fast(b"z" * 5_000_000).startswith("b'zzz")
    assert fast(bytearray(5_000_000)).startswith("b'\\x00")
    assert fast({i: i for i in range(1_000_000)}).startswith("{0: 0, 1: 1")
    assert fast(set(range(1_000_000))).startswith("{")
    assert fast(frozenset(range(1_000_000))).startswith("{")
    assert fast(tuple(range(1_000_000))).startswith("(0, 1")
    assert fast(10**5000) == "<an integer of about 5,001 digits>"
    assert fast(-(10**308)) .endswith("(309 digits)")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    fast(deep)
    loop: list = [1]
    loop.append(loop)
    fast(loop)


def test_shorten_the_expanded_billion_laughs():
    value = yaml.load(billion_laughs(), Loader=yaml.SafeLoader)  # a DAG whose repr would be gigabytes
    assert fast(value).startswith("{'a': ['lol'")


def test_shorten_small_values_whole():
    assert shorten(1.5) == "1.5"
    assert shorten("abc") == "'abc'"
    assert shorten(None) == "None"
    assert shorten(True) == "True"
    assert shorten([1, {"a": (2, 3)}]) == "[1, {'a': (2, 3)}]"
    assert shorten(10**20) == "100000000000000000000"
    assert shorten("x" * 100, n=20) == shorten("x" * 100, n=20)[:20] and len(shorten("x" * 100, n=20)) <= 20


def test_shorten_multiline_repr():
    class Multi:
        def __repr__(self):
            return "line one\nline two\r\nline three"

    assert shorten(Multi()) == "line one line two line three"
