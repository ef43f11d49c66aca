"""Fuzzing what users and run folders hand us (issue 31, item 8): generated config files (random nesting, anchors and
aliases, huge numbers, wrong types), run-folder files (metrics.csv, config.json, test_metrics.json) and storage URLs.
Each goes through the command line in-process or through the function that reads it, and must end in exit 0, or in
exit 2 / a FashionlabError with a one-line message, never a traceback, within a time bound.

Deterministic (derandomize=True: the same examples on every run) and small (the whole file runs in well under
30 s on a 2-core machine), so it runs in `make test` with the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fashionlab.cli import main
from fashionlab.config import FIELD_NAMES
from fashionlab.errors import FashionlabError
from fashionlab.runfolder import RunFolder
from fashionlab.runformat import METRIC_COLUMNS, read_json
from report_fixtures import make_dataset, make_run, wrong_indices

LIMIT_S = 2.0  # per example: every refusal here is a parse and a few checks, milliseconds when it works
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def assert_one_line(message: str) -> None:
    text = message.strip()
    assert text and len(text.splitlines()) == 1, message
    assert "Traceback" not in text and not text.startswith("error: unexpected"), message  # the CLI's bug marker
    assert len(text) < 2000, f"{len(text)} characters: {text[:200]}..."


def run_cli(argv: list[str]) -> tuple[int, str, float]:
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue(), time.perf_counter() - t0


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list:
    import fashionlab.train

    calls: list = []
    monkeypatch.setattr(fashionlab.train, "train", lambda cfg, **kw: calls.append(cfg) or Path("unused"))
    return calls


# ---------------------------------------------------------------------------------------------- config files

# No ':' anywhere: a string like "abc:Net" is a model spec, and importing whatever module a fuzzer names is not a
# test of input handling. No control characters either: YAML refuses them in any case.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters=":", exclude_categories=("Cs", "Cc")), max_size=30)
HUGE_INTS = st.sampled_from([10**20, -(10**40), 10**308, 10**309, 2**64, 2**32])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), HUGE_INTS,
                    st.floats(allow_nan=True, allow_infinity=True), TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
OPTION_NAMES = st.sampled_from(sorted(FIELD_NAMES) + ["epochs", "lr", "label", "extra", "no-such-option", "1"])


@st.composite
def config_texts(draw) -> str:
    """A YAML document: option names (real, dashed or not, unknown) with values of any type, sometimes shared
    through an anchor (safe_dump writes &id/* for a repeated object), sometimes an alias bomb, sometimes cut."""
    keys = draw(st.lists(OPTION_NAMES, max_size=6))
    shared = draw(VALUES)
    doc = {(k.replace("_", "-") if draw(st.booleans()) else k): (shared if draw(st.booleans()) else draw(VALUES))
           for k in keys}
    text = yaml.safe_dump(doc, allow_unicode=True)
    kind = draw(st.sampled_from(["plain", "bomb", "cut", "recursive", "deep"]))
    if kind == "bomb":  # width ** depth values from a few hundred bytes
        width, depth = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        text += "b0: &b0 [" + ", ".join(["lol"] * width) + "]\n"
        for i in range(1, depth):
            text += f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]\n"
        text += f"{draw(OPTION_NAMES)}: *b{depth - 1}\n"
    elif kind == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif kind == "recursive":
        text += "loop: &loop [*loop]\n"
    elif kind == "deep":
        text += "lr: " + "[" * draw(st.integers(50, 3000)) + "\n"
    return text


@FUZZ
@given(text=config_texts())
def test_any_config_file_is_used_or_refused_in_one_line(tmp_path, no_training, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    code, err, seconds = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("error: ")
        assert_one_line(err)
    assert seconds < LIMIT_S, f"{seconds:.1f} s for {text[:200]!r}"
    assert not (tmp_path / "run").exists()


@FUZZ
@given(data=st.one_of(VALUES, st.dictionaries(OPTION_NAMES, VALUES, max_size=6)))
def test_any_json_config_file_is_used_or_refused_in_one_line(tmp_path, no_training, data):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    code, err, seconds = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert code in (0, 2), err
    if code == 2:
        assert_one_line(err)
    assert seconds < LIMIT_S


# ---------------------------------------------------------------------------------------------- run-folder files

FIELDS = st.one_of(
    st.integers(-5, 10**6).map(str), st.sampled_from(["nan", "NaN", "inf", "-inf", "1e308", "-0", "", "1.5", "0x10",
                                                      "1_000", " 1", "9" * 400, "x" * 2000]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), TEXT,
    st.text(st.sampled_from('",\n\r\\ab1'), max_size=6))


@st.composite
def metrics_texts(draw) -> str:
    header = list(METRIC_COLUMNS)
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    if draw(st.integers(0, 5)) == 0:
        header = header[: draw(st.integers(0, len(header)))] + draw(st.lists(TEXT, max_size=2))
    lines = [",".join(header)]
    for epoch in range(1, draw(st.integers(0, 6)) + 1):
        if draw(st.booleans()):  # a plausible row
            row = {c: str(epoch) if c == "epoch" else f"{draw(st.floats(0, 1)):.6g}" for c in header}
            lines.append(",".join(row[c] for c in header))
        else:
            lines.append(",".join(draw(FIELDS) for _ in range(draw(st.integers(0, len(header) + 1)))))
    text = "\n".join(lines) + "\n"
    return text[: draw(st.integers(0, len(text)))] if draw(st.integers(0, 4)) == 0 else text


@FUZZ
@given(text=metrics_texts())
def test_any_metrics_csv_is_read_valid_or_refused_in_one_line(tmp_path, text):
    (tmp_path / "metrics.csv").write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    try:
        rows = RunFolder(tmp_path).history()
    except FashionlabError as e:
        assert_one_line(str(e))
        assert "metrics.csv" in str(e)
    else:  # what is returned is what the report and resume can trust
        epochs = [r["epoch"] for r in rows]
        assert all(type(e) is int and e >= 1 for e in epochs) and epochs == sorted(set(epochs))
        for r in rows:
            assert set(r) == set(METRIC_COLUMNS)
            for c in ("train_acc", "val_acc"):
                assert 0 <= r[c] <= 1 or (c == "val_acc" and math.isnan(r[c]))
            assert all(math.isfinite(r[c]) for c in ("train_loss", "train_acc", "lr", "seconds"))
    assert time.perf_counter() - t0 < LIMIT_S


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=15)


@st.composite
def config_jsons(draw) -> str:
    """A run folder's config.json: a real-looking one with some values replaced, or anything at all."""
    base = {"model": "cnn1", "epochs": 2, "lr": 0.001, "seed": 0, "label": None,
            "data": {"source": "/nowhere", "normalize": {"mean": 0.28, "std": 0.35}}, "versions": {}, "command": ""}
    if draw(st.booleans()):
        base = base | draw(st.dictionaries(OPTION_NAMES | st.sampled_from(["data", "versions", "command"]),
                                           JSON_VALUES, max_size=4))
        text = json.dumps(base, allow_nan=True)
    else:
        text = json.dumps(draw(JSON_VALUES), allow_nan=True)
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    if draw(st.integers(0, 8)) == 0:
        text = "[" * draw(st.integers(100, 100_000))
    return text


@FUZZ
@given(text=config_jsons())
def test_any_run_config_json_is_read_or_refused_in_one_line(tmp_path, text):
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    try:
        config = RunFolder(tmp_path).require().config()
    except FashionlabError as e:
        assert_one_line(str(e))
    else:
        assert isinstance(config["model"], str) and isinstance(config["data"]["source"], str)
    assert time.perf_counter() - t0 < LIMIT_S


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-run")
    data = make_dataset(root / "data", n_test=50)
    return make_run(root / "runs", data, model="cnn1", seed=0, wrong=wrong_indices(50, "cnn1", 0))


@st.composite
def metrics_json_texts(draw) -> str:
    good = {"model": "cnn1", "accuracy": 0.9, "macro_f1": 0.9, "per_class": {}, "n_test": 50,
            "confusion_matrix": [[5] * 10 for _ in range(10)], "test_sha256": "a:b", "params": 1, "seed": 0}
    changed = good | draw(st.dictionaries(st.sampled_from(sorted(good) + ["best_epoch", "x"]), JSON_VALUES,
                                          max_size=3))
    drop = draw(st.lists(st.sampled_from(sorted(good)), max_size=2))
    return json.dumps({k: v for k, v in changed.items() if k not in drop}, allow_nan=True)


@FUZZ
@given(text=metrics_json_texts())
def test_any_test_metrics_json_is_read_or_refused_in_one_line(report_run, text):
    from fashionlab.report.compare import load_results

    path = report_run / "test_metrics.json"
    original = path.read_bytes()
    path.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    try:
        load_results(report_run)
    except FashionlabError as e:
        assert_one_line(str(e))
    finally:
        path.write_bytes(original)
    assert time.perf_counter() - t0 < LIMIT_S


@FUZZ
@given(text=st.one_of(config_jsons(), metrics_json_texts()))
def test_read_json_is_a_mapping_or_one_line(tmp_path, text):
    (tmp_path / "x.json").write_text(text, encoding="utf-8")
    try:
        assert isinstance(read_json(tmp_path / "x.json"), dict)
    except FashionlabError as e:
        assert_one_line(str(e))


# ---------------------------------------------------------------------------------------------- storage URLs

SECRET = "S3CRETpw"  # every generated password starts with it: it must never be shown
PASSWORD = st.text(st.sampled_from("ab9@:/?#%&=;+ "), max_size=8).map(lambda tail: SECRET + tail)
HOSTS = st.sampled_from(["127.0.0.1", "db.example", "[::1]", "", "[bad", "h:notaport", "a,b:5432"])


@st.composite
def storage_urls(draw) -> str:
    scheme = draw(st.sampled_from(["postgresql://", "postgresql+psycopg2://", "mysql://", "sqlite:///", "", "pg:/"]))
    user = draw(st.sampled_from(["me", "", "m@e", "user name"]))
    password = draw(PASSWORD)
    host, db = draw(HOSTS), draw(st.sampled_from(["/db", "", "/a/b", "/db;password=" + SECRET]))
    shape = draw(st.sampled_from(["userinfo", "query", "both", "jdbc", "bare"]))
    if shape == "userinfo":
        return f"{scheme}{user}:{password}@{host}{db}"
    if shape == "query":
        key = draw(st.sampled_from(["password", "PWD", "token", "api_key", "sslpassword"]))
        return f"{scheme}{host}{db}?{key}={password}&sslmode=require"
    if shape == "both":
        return f"{scheme}{user}:{password}@{host}{db}?password={password}#{password}"
    if shape == "jdbc":
        return f"{scheme}{host};user={user};password={password}"
    return f"{user}:{password}@{host}"


def assert_hidden(text: str) -> None:
    assert SECRET not in text and SECRET.lower() not in text.lower(), text


@FUZZ
@given(url=storage_urls())
def test_a_storage_url_is_redacted_whatever_its_shape(url):
    from fashionlab.tune import hide_secrets, storage_shown

    assert_hidden(storage_shown(url))  # redact.redact_url, as tune shows it
    # what a database library may say about a URL it parsed its own way
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        said = f'connection to "{parsed.host}" as "{parsed.username}" with "{parsed.password}" db {parsed.database}'
    except Exception as e:  # noqa: BLE001 - whatever SQLAlchemy raises for a malformed URL
        said = str(e)
    assert_hidden(hide_secrets(said, [url]))
    assert_hidden(hide_secrets(f"cannot connect to {url!r}: {url}", [url]))


def test_redact_url_hides_the_fragment_of_a_text_without_a_scheme():
    """Found by the fuzz test above: a text without a scheme kept its '#fragment' visible."""
    from fashionlab.redact import redact_text, redact_url

    for text in (f"me:{SECRET}@127.0.0.1/db#{SECRET}", f"127.0.0.1/db#{SECRET}"):
        shown = redact_url(text)
        assert_hidden(shown)
        assert shown.endswith("#***") and "127.0.0.1/db" in shown
        assert_hidden(redact_text(f"cannot open {text}", [text]))


@settings(FUZZ, max_examples=25)  # each example resolves a configuration and builds a model: about 0.25 s
@given(url=storage_urls())
def test_tune_with_any_storage_url_is_one_line_and_hides_the_password(tmp_path, monkeypatch, url):
    """The real command, with the database replaced by one that fails and quotes every part of the URL it parsed
    (what SQLAlchemy and its drivers do in their messages): no network, so the time bound holds anywhere."""
    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    def failing_storage(storage_url, *args, **kwargs):
        parsed = make_url(storage_url)  # raises its own error for a URL it cannot parse: also shown redacted
        raise sqlalchemy.exc.OperationalError(
            "connect", {}, Exception(f'could not connect to "{parsed.host}" user "{parsed.username}" password '
                                     f'"{parsed.password}" database "{parsed.database}" ({storage_url})'))

    monkeypatch.setattr(optuna.storages, "RDBStorage", failing_storage)
    out = tmp_path / "t"
    code, err, seconds = run_cli(["tune", "--model", "cnn1", "--trials", "1", "--out", str(out), "--storage", url,
                                  "--quiet"])
    assert code == 2 and err.startswith("error: "), err
    assert_one_line(err)
    assert_hidden(err)
    assert seconds < LIMIT_S and not out.exists()
    assert re.search(r"--storage", err)
