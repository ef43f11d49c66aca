"""Checkpoints are data, never code: `evaluate`, `predict` and `export` refuse a pickle that would run a command,
and an unknown or mismatched model, each with a one-line error."""

from __future__ import annotations

import os

import pytest
import torch

from fashionlab.cli import main

COMMANDS = {
    "evaluate": lambda run, image: ["evaluate", str(run)],
    "predict": lambda run, image: ["predict", str(run), str(image)],
    "export": lambda run, image: ["export", str(run), "--format", "onnx"],
}


class RunsACommand:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_the_payload_is_real(tmp_path):
    """Without weights_only, loading this checkpoint does run the command: the refusals below mean something."""
    sentinel = tmp_path / "SENTINEL"
    torch.save({"model": RunsACommand(f"touch {sentinel}"), "model_name": "cnn1"}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert sentinel.exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["top", "nested"])
def test_malicious_checkpoint_is_refused_and_never_runs(run, image, tmp_path, capsys, command, where):
    sentinel = tmp_path / "SENTINEL"
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    evil = RunsACommand(f"touch {sentinel}")
    if where == "top":
        ckpt["extra"] = evil
    else:
        ckpt["model"]["net.0.weight"] = evil  # hidden inside the state dict
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    one_line_error(capsys, COMMANDS[command](run, image), "refusing to load", "not a plain-weights checkpoint")
    assert not sentinel.exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("tamper, needle", [
    (lambda c: c.update(model_name="nope", config=c["config"] | {"model": "nope"}), "unknown model 'nope'"),
    (lambda c: c.update(model_name="cnn2", config=c["config"] | {"model": "cnn2", "extra": {}}),
     "does not match model 'cnn2'"),
    (lambda c: c.update(model_name="cnn2"), "inconsistent"),
    (lambda c: c["model"].pop("net.0.weight"), "does not match model 'cnn1'"),
    (lambda c: c.pop("model_name"), "not a fashionlab checkpoint"),
    (lambda c: c["normalize"].update(std=0.0), "normalize std must be a finite number > 0"),
    (lambda c: c["model"]["net.0.weight"].fill_(float("nan")), "NaN or infinite"),
    (lambda c: c["model"].update({"net.0.weight": c["model"]["net.0.weight"][:1]}), "has shape"),
    (lambda c: c["model"]["normalize.std"].fill_(0.0), "normalize.std must be > 0"),
])
def test_unknown_or_mismatched_model_is_a_clear_error(run, image, capsys, command, tamper, needle):
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    tamper(ckpt)
    torch.save(ckpt, run / "checkpoints" / "best.pt")
    one_line_error(capsys, COMMANDS[command](run, image), needle)


@pytest.mark.parametrize("command", COMMANDS)
def test_truncated_or_missing_checkpoint_is_a_clear_error(run, image, capsys, command):
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:2000])  # cut short, as by a full disk
    one_line_error(capsys, COMMANDS[command](run, image), "corrupt or unreadable")
    best.unlink()
    one_line_error(capsys, COMMANDS[command](run, image), "not found")
