"""One place validates every option, config file, run config and checkpoint: whatever the input, the answer is
either a valid config or one line on stderr starting with "error:", exit code 2, no traceback, no "unexpected",
no run folder left behind and no file of the user's changed.

Nothing here trains: `fashionlab.train.train` is replaced by a recorder, so a value that passes validation
reaches the recorder (and is then checked against the option's documented range) instead of a training loop.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import folder_snapshot
from fashionlab.cli import main
from fashionlab.config import FIELD_NAMES, FIELDS, SEED_MAX, TrainConfig, build_config, read_config_file
from fashionlab.errors import ConfigError, RunError
from fashionlab.evaluate import load_run_model
from fashionlab.runformat import load_checkpoint, read_json

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

FLOAT_FIELDS = sorted(n for n, f in FIELDS.items() if str(f.type).split("|")[0].strip() == "float")
INT_FIELDS = sorted(n for n, f in FIELDS.items() if str(f.type).split("|")[0].strip() == "int")
BOOL_FIELDS = sorted(n for n, f in FIELDS.items() if str(f.type) == "bool")
STR_FIELDS = sorted(n for n, f in FIELDS.items() if str(f.type).startswith("str"))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class Trained(Exception):
    pass


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace train() by a recorder: a config that passes validation is recorded, never trained."""
    import fashionlab.train

    calls: list = []
    monkeypatch.setattr(fashionlab.train, "train", lambda cfg, **kw: calls.append(cfg) or Path("unused"))
    return calls


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside the parser
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    text = err.strip()
    assert code == 2, err
    assert len(text.splitlines()) == 1, err
    assert text.startswith("error:"), err
    assert "Traceback" not in text and not text.startswith("error: unexpected"), err
    for needle in needles:
        assert needle in text, err


def in_rule(name: str, value) -> bool:
    rule = FIELDS[name].metadata.get("range")
    return rule is None or value in rule


def train_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--model", "cnn1", "--device", "cpu", "--out", str(tmp_path / "run"), *extra]


def check_outcome(code: int, err: str, calls: list, tmp_path: Path) -> TrainConfig | None:
    """Either validation passed (and train was reached, once) or it is a proper one-line error."""
    if code == 0:
        assert len(calls) == 1 and not err.strip(), err
        return calls.pop()
    assert_one_line_error(code, err)
    assert not calls, "a refused config reached train()"
    assert not (tmp_path / "run").exists(), "a refused config left a run folder"
    return None


# ------------------------------------------------------------------------------------------ option sweeps

NUMBERS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-300, -1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 1, -1, 0.5, 1.0, 14, 15, 28, 180, 181, SEED_MAX, SEED_MAX + 1, 2**63, 2**64, 1e308]),
)


@FAST
@given(name=st.sampled_from(FLOAT_FIELDS), value=NUMBERS)
def test_float_options_on_the_command_line(tmp_path, capsys, no_training, name, value):
    code, err = run_cli(capsys, train_argv(tmp_path, flag(name), repr(value)))
    cfg = check_outcome(code, err, no_training, tmp_path)
    if cfg is not None:
        got = getattr(cfg, name)
        assert isinstance(got, float) and math.isfinite(got) and in_rule(name, got), (name, value, got)
    elif isinstance(value, float) and not math.isfinite(value):
        assert flag(name) in err, err  # non-finite numbers are always refused, by name
    if isinstance(value, float) and not math.isfinite(value):
        assert code == 2


@FAST
@given(name=st.sampled_from(INT_FIELDS), value=st.one_of(NUMBERS, st.text(max_size=12)))
def test_int_options_on_the_command_line(tmp_path, capsys, no_training, name, value):
    assume("\x00" not in str(value))
    code, err = run_cli(capsys, train_argv(tmp_path, f"{flag(name)}={value}"))
    cfg = check_outcome(code, err, no_training, tmp_path)
    if cfg is not None:
        got = getattr(cfg, name)
        assert isinstance(got, int) and not isinstance(got, bool) and in_rule(name, got), (name, value, got)
        if name == "seed":
            assert 0 <= got <= SEED_MAX
            torch.Generator().manual_seed(got + 1 + 1000)  # what train.py derives from it


JSONISH = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from(["yes", "no", "on", "off", "1", "0", "true", "False", "nan", "inf", "-inf", "1e-3", "1e400"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@FAST
@given(name=st.sampled_from(sorted(FIELD_NAMES - {"model", "recipe"})), value=JSONISH,
       fmt=st.sampled_from(["yaml", "json"]))
def test_any_value_in_a_config_file(tmp_path, capsys, no_training, name, value, fmt):
    path = tmp_path / f"c.{fmt}"
    text = json.dumps({name: value}) if fmt == "json" else yaml.safe_dump({name: value})
    path.write_text(text)
    code, err = run_cli(capsys, train_argv(tmp_path, "--config", str(path)))
    cfg = check_outcome(code, err, no_training, tmp_path)
    assert path.read_text() == text  # the user's file is left as it was
    if cfg is None:
        return
    got = getattr(cfg, name)
    base = str(FIELDS[name].type).split("|")[0].strip()
    if name in ("out", "device"):  # the command line sets these over the file
        return
    if base == "bool":  # booleans only from booleans or the documented words
        assert isinstance(value, bool) or str(value).strip().lower() in ("1", "0", "true", "false", "yes", "no",
                                                                         "on", "off")
    if base in ("int", "float") and got is not None:
        assert not isinstance(value, bool), (name, value)
        assert math.isfinite(got) and in_rule(name, got), (name, value, got)
    if base == "str" and got is not None:
        assert isinstance(value, str)


MAPPINGS = st.dictionaries(
    st.one_of(st.sampled_from(sorted(FIELD_NAMES)), st.text(max_size=8)), JSONISH, max_size=4)
TOP_LEVEL = st.one_of(MAPPINGS, JSONISH, st.lists(JSONISH, max_size=3))


@FAST
@given(data=TOP_LEVEL, fmt=st.sampled_from(["yaml", "json", "yml"]))
def test_random_config_files(tmp_path, capsys, no_training, data, fmt):
    path = tmp_path / f"c.{fmt}"
    text = json.dumps(data) if fmt == "json" else yaml.safe_dump(data)
    path.write_text(text)
    code, err = run_cli(capsys, train_argv(tmp_path, "--config", str(path)))
    check_outcome(code, err, no_training, tmp_path)
    assert path.read_text() == text
    if not isinstance(data, dict) and data is not None:
        assert code == 2 and "mapping" in err, err


@FAST
@given(raw=st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".json"]))
def test_binary_config_files(tmp_path, capsys, no_training, raw, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(raw)
    code, err = run_cli(capsys, train_argv(tmp_path, "--config", str(path)))
    check_outcome(code, err, no_training, tmp_path)
    assert path.read_bytes() == raw


# ---------------------------------------------------------------------------------- explicit regressions


@pytest.mark.parametrize("args, needle", [
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "1e400"], "--lr must be a finite number"),
    (["--rotate-degrees", "nan"], "--rotate-degrees must be a finite number"),
    (["--rotate-degrees", "-5"], "--rotate-degrees must be in [0, 180]"),
    (["--warmup-epochs", "inf"], "--warmup-epochs must be a finite number"),
    (["--weight-decay", "-inf"], "--weight-decay"),
    (["--grad-clip", "nan"], "--grad-clip"),
    (["--ema", "nan"], "--ema"),
    (["--dropout", "nan"], "--dropout"),
    (["--optimizer", "sgd", "--momentum", "1"], "--momentum must be in [0, 1)"),
    (["--optimizer", "sgd", "--momentum", "-0.1"], "--momentum must be in [0, 1)"),
    (["--seed", "-1"], "--seed must be >= 0 and <= 4294967295"),
    (["--seed", "4294967296"], "2**32 - 1"),
    (["--seed", "99999999999999999999999"], "--seed"),
    (["--crop-pad", "15"], "--crop-pad must be >= 0 and <= 14"),
    (["--crop-pad", "28"], "--crop-pad"),
    (["--train-subset", "1000000"], "--train-subset"),
    (["--epochs", "10000000000"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--dropout", "0.2"], "does not take"),  # cnn1 has no dropout: refused before any run folder exists
    (["--on-nan", "ignore"], "--on-nan must be one of stop, skip"),
    (["--device", "tpu"], "--device must be one of"),
])
def test_bad_flags_are_refused_before_training(tmp_path, capsys, no_training, args, needle):
    code, err = run_cli(capsys, train_argv(tmp_path, *args))
    assert_one_line_error(code, err, needle)
    assert not no_training and not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, needle", [
    ("epochs: true\n", "--epochs must be an integer, got True"),
    ("lr: false\n", "--lr must be a number, got False"),
    ("tta: 1\n", "--tta must be true or false"),
    ("tta: 2.5\n", "--tta must be true or false"),
    ("tta: maybe\n", "--tta must be true or false"),
    ("epochs: null\n", "--epochs must be an integer"),
    ("epochs: 2.5\n", "--epochs must be an integer"),
    ("epochs: [3]\n", "--epochs must be an integer"),
    ("lr: .inf\n", "--lr must be a finite number"),
    ("lr: .nan\n", "--lr must be a finite number"),
    ("lr: inf\n", "--lr must be a finite number"),
    ("seed: 18446744073709551616\n", "--seed"),
    ("model: [cnn1]\n", "--model must be a string"),
    ("label: 5\n", "--label must be a string"),
    ("data_dir: 12\n", "--data-dir must be a string"),
    ("augment: [flip]\n", "--augment must be a string"),
    ("extra: [1, 2]\n", "option 'extra' must be a mapping"),
    ("extra: {1: 2}\n", "option 'extra' keys must be option names"),
    ("extra: {width: -1}\n", "cannot be built"),
    ("extra: {width: 1000000}\n", "parameters"),
    ("extra: {depth: 3}\n", "does not take"),
    ("extra: null\n", "option 'extra' must be a mapping"),
    ("1: 2\n", "option names in"),
    ("- epochs: 3\n", "must hold a mapping"),
    ("just a string\n", "must hold a mapping"),
    ("42\n", "must hold a mapping"),
    ("epochs: [unclosed\n", "not valid YAML"),
])
def test_bad_config_files(tmp_path, capsys, no_training, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code, err = run_cli(capsys, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, needle)
    assert not no_training and not (tmp_path / "run").exists() and path.read_text() == text


@pytest.mark.parametrize("raw, needle", [
    (b"\xff\xfe\x00e\x00p\x00", "not UTF-8"),
    (b"epochs: 3\x00\x01", "binary"),
    (bytes(range(256)), "config file"),
])
def test_binary_config_file_is_one_line(tmp_path, capsys, no_training, raw, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    code, err = run_cli(capsys, train_argv(tmp_path, "--config", str(path)))
    assert_one_line_error(code, err, needle)
    assert path.read_bytes() == raw


def test_documented_spellings_are_accepted():
    cfg = build_config({"model": "cnn1", "tta": "yes", "compile": "off", "channels_last": "0", "lr": "1e-3",
                        "epochs": 2.0, "seed": SEED_MAX, "crop_pad": 14, "momentum": 0.0, "rotate_degrees": 180})
    assert (cfg.tta, cfg.compile, cfg.channels_last, cfg.lr, cfg.epochs) == (True, False, False, 1e-3, 2)
    assert type(cfg.epochs) is int and cfg.seed == SEED_MAX
    for bad in ({"tta": 1}, {"tta": 0}, {"tta": 1.0}, {"epochs": True}, {"lr": True}, {"label": 3},
                {"out": "a\x00b"}, {"extra": {"width": "wide"}}):
        with pytest.raises(ConfigError):
            build_config({"model": "cnn1"} | bad)


def test_validate_checks_a_directly_built_config():
    with pytest.raises(ConfigError, match="--lr must be a finite number"):
        TrainConfig(model="cnn1", lr=math.inf).validate()
    with pytest.raises(ConfigError, match="--epochs must be an integer"):
        TrainConfig(model="cnn1", epochs="ten").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown option"):
        build_config({"model": "cnn1", "no_such_option": 1})


def test_every_numeric_field_has_a_rule():
    """The table is complete: a new numeric option without a range/choices fails here, not in production."""
    for name in FLOAT_FIELDS + INT_FIELDS:
        assert "range" in FIELDS[name].metadata, name
    assert FIELDS["label"].type == "str | None" and FIELDS["label"].default is None


def test_read_config_file_errors_are_config_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b"\x80\x81")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_config_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_config_file(path)
    path.write_text('{"epochs": 3}')
    assert read_config_file(path) == {"epochs": 3}


# ------------------------------------------------------------------------ run folders and checkpoints


def snapshot(folder: Path) -> dict[str, str]:
    """folder_snapshot.snapshot without RUN_DIR/.lock, which a command may leave behind (files.RunLock)."""
    return {name: digest for name, digest in folder_snapshot.snapshot(folder).items() if Path(name).name != ".lock"}


COMMANDS = {
    "evaluate": lambda run, image: ["evaluate", str(run)],
    "predict": lambda run, image: ["predict", str(run), str(image)],
    "export": lambda run, image: ["export", str(run), "--format", "onnx", "--out", str(run.parent / "m.onnx")],
    "compare": lambda run, image: ["compare", str(run), str(shutil.copytree(run, run.parent / "run2")), "--out",
                                   str(run.parent / "report")],
    "resume": lambda run, image: ["train", "--resume", str(run)],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("content, needle", [
    ("[1, 2, 3]", "must hold a JSON object"),
    ('"a string"', "must hold a JSON object"),
    ("null", "must hold a JSON object"),
    ("{broken", "not valid JSON"),
    ('{"model": 5}', "model must be a string"),
])
def test_damaged_run_config_is_one_line(run, image, capsys, no_training, command, content, needle):
    (run / "config.json").write_text(content)
    before = snapshot(run)
    code, err = run_cli(capsys, COMMANDS[command](run, image))
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before and not no_training


@pytest.mark.parametrize("content, needle", [
    ("epoch,train_loss,train_acc,val_loss,val_acc,lr\n1,1,0.5,1,0.5,0.001\n", "no column seconds"),
    ("epoch,val_acc\n", "no column train_loss, train_acc, val_loss, lr, seconds"),
    ("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n1,x,0.5,1,0.5,0.001,3\n", "malformed metrics.csv"),
])
def test_damaged_metrics_csv_is_one_line(run, image, capsys, content, needle):
    (run / "metrics.csv").write_text(content)
    before = snapshot(run)
    code, err = run_cli(capsys, COMMANDS["evaluate"](run, image))
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "resume"])
@pytest.mark.parametrize("change, needle", [
    ({"tta": "yes"}, "tta must be true or false"),
    ({"extra": [1]}, "extra"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"epochs": True}, "epochs must be an integer"),
    ({"data": "somewhere"}, "data must be a mapping"),
    ({"seed": 1.5}, "seed must be an integer"),
])
def test_wrong_types_in_run_config_are_one_line(run, image, capsys, no_training, command, change, needle):
    config = json.loads((run / "config.json").read_text()) | change
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    code, err = run_cli(capsys, COMMANDS[command](run, image))
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before


def _set(path: tuple, value):
    def tamper(c: dict) -> None:
        target = c
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
    return tamper


def _drop(key: str):
    return lambda c: c.pop(key)


def _first_weight(fn):
    def tamper(c: dict) -> None:
        c["model"]["net.0.weight"] = fn(c["model"]["net.0.weight"])
    return tamper


CHECKPOINT_TAMPERS = {
    "no normalize": (_drop("normalize"), "normalize must be a mapping"),
    "std zero": (_set(("normalize", "std"), 0.0), "normalize std must be a finite number > 0"),
    "std negative": (_set(("normalize", "std"), -0.3), "normalize std"),
    "std nan": (_set(("normalize", "std"), math.nan), "normalize std"),
    "std string": (_set(("normalize", "std"), "0.3"), "normalize std"),
    "mean inf": (_set(("normalize", "mean"), math.inf), "normalize mean"),
    "mean bool": (_set(("normalize", "mean"), True), "normalize mean"),
    "nan weights": (_first_weight(lambda w: torch.full_like(w, math.nan)), "NaN or infinite"),
    "inf weights": (_first_weight(lambda w: w.index_fill(0, torch.tensor([0]), math.inf)), "NaN or infinite"),
    "wrong shape": (_first_weight(lambda w: torch.zeros(w.shape[0] + 1, *w.shape[1:])), "has shape"),
    "extra key": (lambda c: c["model"].update(bogus=torch.zeros(1)), "unexpected 'bogus'"),
    "not a tensor": (_set(("model", "net.0.weight"), 3), "not a tensor"),
    "model a list": (_set(("model",), [1, 2]), "not a non-empty mapping"),
    "model empty": (_set(("model",), {}), "not a non-empty mapping"),
    "model_name int": (_set(("model_name",), 7), "model_name is int"),
    "config a list": (_set(("config",), [1]), "config is not a mapping"),
    "config extra a list": (_set(("config", "extra"), [1]), "extra"),
    "config extra huge": (_set(("config", "extra"), {"width": 10**9}), "cannot be built"),
    "config extra wider": (_set(("config", "extra"), {"width": 9}), "does not match"),
    "config dropout string": (_set(("config", "dropout"), "x"), "dropout"),
    "epoch negative": (_set(("epoch",), -1), "epoch must be an integer >= 0"),
    "epoch string": (_set(("epoch",), "1"), "epoch must be"),
    "absurd size": (_first_weight(lambda w: torch.zeros(1).expand(2_000_000_000)), "elements"),
}


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
@pytest.mark.parametrize("case", CHECKPOINT_TAMPERS)
def test_damaged_checkpoint_contents_are_one_line(run, image, capsys, command, case):
    tamper, needle = CHECKPOINT_TAMPERS[case]
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    tamper(ckpt)
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    before = snapshot(run)
    code, err = run_cli(capsys, COMMANDS[command](run, image))
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before
    assert not (run.parent / "m.onnx").exists()


@pytest.mark.parametrize("tamper, needle", [
    (_drop("rng"), "resume state (rng)"),
    (_set(("progress",), [1]), "progress must be a mapping"),
    (_set(("progress", "epoch"), "one"), "progress epoch must be a number"),
    (_set(("progress", "no_such_field"), 1), "progress must be a mapping"),
    (_set(("rng", "python"), [1, 2, 3]), "rng python"),
    (_set(("rng", "torch"), torch.zeros(3)), "rng torch must be a uint8 tensor"),
    (_set(("optimizer",), "adam"), "optimizer must be a mapping"),
    (_set(("lookahead",), {"slow": [1.0]}), "lookahead must be null or a mapping"),
])
def test_damaged_resume_state_is_one_line(run, capsys, tamper, needle):
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    tamper(ckpt)
    torch.save(ckpt, last)
    with pytest.raises(RunError, match="not a valid fashionlab checkpoint"):
        load_checkpoint(last)
    before = snapshot(run)
    code, err = run_cli(capsys, ["train", "--resume", str(run), "--quiet"])
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before


def test_untouched_checkpoints_and_config_load(run):
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] >= 0
    model, ckpt = load_run_model(run, "best")
    assert ckpt["normalize"]["std"] > 0 and read_json(run / "config.json")["model"] == "cnn1"


PLAIN_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
CKPT_VALUES = st.one_of(
    PLAIN_VALUES,
    st.builds(lambda n, v: torch.full((n,), v), st.integers(0, 4),
              st.floats(width=32, allow_nan=True, allow_infinity=True)),
)
CKPT_PATHS = st.sampled_from([
    ("model",), ("model_name",), ("config",), ("epoch",), ("val_acc",), ("normalize",), ("normalize", "mean"),
    ("normalize", "std"), ("model", "net.0.weight"), ("model", "net.0.bias"), ("config", "extra"),
    ("config", "dropout"),
    ("config", "model"), ("config", "channels_last"), ("config", "tta"),
])


@FEW
@given(where=CKPT_PATHS, value=CKPT_VALUES, drop=st.booleans())
def test_random_checkpoint_contents(run, image, capsys, where, value, drop):
    """Any one field of best.pt replaced (or removed): the model loads with sane normalization, or predict
    fails with one line."""
    pristine = run.parent / "pristine.pt"
    if not pristine.exists():
        shutil.copy(run / "checkpoints" / "best.pt", pristine)
    ckpt = torch.load(pristine, weights_only=True)
    target = ckpt
    for k in where[:-1]:
        target = target[k]
    if drop:
        target.pop(where[-1], None)
    else:
        target[where[-1]] = value
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    try:
        model, loaded = load_run_model(run, "best")
    except RunError:
        before = snapshot(run)
        code, err = run_cli(capsys, COMMANDS["predict"](run, image))
        assert_one_line_error(code, err)
        assert snapshot(run) == before
        return
    std, mean = loaded["normalize"]["std"], loaded["normalize"]["mean"]
    assert math.isfinite(std) and std > 0 and math.isfinite(mean)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


RUN_CONFIG_VALUES = st.one_of(PLAIN_VALUES, st.lists(st.text(max_size=3), max_size=2))


@FEW
@given(key=st.sampled_from(sorted(FIELD_NAMES | {"data", "versions", "command"})), value=RUN_CONFIG_VALUES,
       top=st.booleans())
def test_random_run_config(run, image, capsys, no_training, key, value, top):
    """A run's config.json with one key replaced, or replaced whole: read_json accepts it with the right types,
    or every command refuses it in one line."""
    pristine = run.parent / "pristine.json"
    if not pristine.exists():
        shutil.copy(run / "config.json", pristine)
    original = json.loads(pristine.read_text())
    content = value if top else original | {key: value}
    (run / "config.json").write_text(json.dumps(content))
    try:
        config = read_json(run / "config.json")
    except RunError:
        before = snapshot(run)
        for command in ("predict", "resume"):
            code, err = run_cli(capsys, COMMANDS[command](run, image))
            assert_one_line_error(code, err)
        assert snapshot(run) == before
        return
    assert isinstance(config, dict) and isinstance(config["model"], str) and isinstance(config["data"], dict)
    if key in FIELDS and not top:
        base = str(FIELDS[key].type).split("|")[0].strip()
        if base == "bool":
            assert isinstance(config[key], bool)
        if base in ("int", "float") and config[key] is not None:
            assert not isinstance(config[key], (bool, str)) and math.isfinite(config[key])
