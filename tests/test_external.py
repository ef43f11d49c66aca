"""Your own model next to CNN_1 and CNN_2: `--model FILE.py:NAME`, `module:NAME`, entry points, and the rule that
reading a run folder never imports code on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fashionlab.cli import main
from fashionlab.models.external import sha256_of
from fashionlab.runfolder import RunFolder

MYNET = textwrap.dedent("""\
    import os
    from pathlib import Path

    from torch import nn

    if os.environ.get("MYNET_MARK"):  # proves whether this file was imported
        Path(os.environ["MYNET_MARK"]).write_text("imported")


    class Net(nn.Module):
        def __init__(self, width: int = 8):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                                      nn.Flatten(), nn.Linear(16 * width, 10))

        def forward(self, x):
            return self.body(x)


    def small(width: int = 4):
        return Net(width)


    def wrong_shape():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))


    def not_a_module():
        return 42
    """)
TRAIN = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--augment", "none", "--scheduler", "none",
         "--quiet"]


@pytest.fixture
def mynet(tmp_path: Path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(MYNET)
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "error: unexpected" not in err, err
    return err


def test_train_a_file_model_records_its_origin_and_source(tmp_path, mynet, synthetic_env, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", f"{mynet}:Net", "--model-arg", "width=6", *TRAIN, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == f"{mynet}:Net" and config["extra"] == {"width": 6}
    assert config["model_origin"] == {"spec": f"{mynet}:Net", "kind": "file", "path": str(mynet.resolve()),
                                      "sha256": sha256_of(mynet)}
    assert (run / RunFolder.SOURCE_COPY).read_text() == MYNET
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["params"] == sum(6 * 9 + 6 for _ in [0]) + 16 * 6 * 10 + 10


def test_reading_the_run_folder_needs_trust_and_imports_nothing_without_it(tmp_path, mynet, synthetic_env, capsys,
                                                                            monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--model", f"{mynet}:Net", *TRAIN, "--out", str(run)]) == 0
    mark = tmp_path / "imported"
    monkeypatch.setenv("MYNET_MARK", str(mark))
    for name in [m for m in sys.modules if m.startswith("fashionlab_user_model_")]:  # imported by training
        del sys.modules[name]
    for args in (["evaluate", str(run)], ["export", str(run), "--format", "onnx"],
                 ["predict", str(run), str(mynet)], ["train", "--resume", str(run), "--epochs", "1"]):
        assert main(args) == 2, args
        assert "--trust-model-code" in one_line_error(capsys)
        assert not mark.exists(), f"{args[0]} imported the model's code without being trusted"
    assert main(["evaluate", str(run), "--trust-model-code"]) == 0
    assert mark.exists()


def test_trusted_run_folder_works_everywhere_even_after_the_file_changes(tmp_path, mynet, synthetic_env, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", f"{mynet}:Net", *TRAIN, "--out", str(run)]) == 0
    before = json.loads((run / "test_metrics.json").read_text())["accuracy"]
    mynet.write_text("raise RuntimeError('the user rewrote this file')\n")  # the run uses its own copy
    capsys.readouterr()
    assert main(["evaluate", str(run), "--trust-model-code"]) == 0
    assert json.loads((run / "test_metrics.json").read_text())["accuracy"] == before
    capsys.readouterr()
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (40, 40), 200).save(image)
    assert main(["predict", str(run), str(image), "--json", "--trust-model-code"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["top"]
    assert main(["export", str(run), "--format", "onnx", "--trust-model-code"]) == 0
    assert (run / "model.onnx").is_file()


def test_tampered_source_copy_is_refused(tmp_path, mynet, synthetic_env, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", f"{mynet}:Net", *TRAIN, "--out", str(run)]) == 0
    (run / RunFolder.SOURCE_COPY).write_text(MYNET + "\nprint('injected')\n")
    assert main(["evaluate", str(run), "--trust-model-code"]) == 2
    assert "sha256 mismatch" in one_line_error(capsys)


def test_resume_with_the_same_model_given_again(tmp_path, mynet, synthetic_env, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", f"{mynet}:Net", *TRAIN, "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--model", f"{mynet}:Net", "--epochs", "2", "--quiet"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs


@pytest.mark.parametrize("spec, needle", [
    ("{mynet}:wrong_shape", "maps (2, 1, 28, 28) to (2, 5); fashionlab needs (N, 10) logits"),
    ("{mynet}:not_a_module", "returned int, not a torch nn.Module"),
    ("{mynet}:Missing", "has no 'Missing'"),
    ("{tmp}/nope.py:Net", "is not a file"),
    ("no_such_module_xyz:Net", "cannot import no_such_module_xyz"),
    ("{mynet}:small", None),
])
def test_model_spec_errors_are_one_line_before_any_folder(tmp_path, mynet, synthetic_env, capsys, spec, needle):
    run = tmp_path / "run"
    code = main(["train", "--model", spec.format(mynet=mynet, tmp=tmp_path), *TRAIN, "--out", str(run)])
    if needle is None:  # a factory function works too
        assert code == 0
        return
    assert code == 2
    assert needle in one_line_error(capsys)
    assert not run.exists()


def test_bad_model_arg_names_the_model(tmp_path, mynet, synthetic_env, capsys):
    assert main(["train", "--model", f"{mynet}:Net", "--model-arg", "depth=3", *TRAIN]) == 2
    assert "does not take these options (depth); it takes: width" in one_line_error(capsys)


def test_module_spec_and_run_comparison(tmp_path, mynet, synthetic_env, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "job"
    assert main(["run", "--models", f"cnn1,mynet:Net,{mynet}:small", "--epochs", "1", "--device", "cpu",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["cnn1", "mynet:Net", f"{mynet}:small"]
    assert len(summary["comparisons"]) == 3


def test_entry_point_models_are_listed_and_trained(tmp_path, synthetic_env):
    site = tmp_path / "site"
    (site / "fakepkg-0.1.dist-info").mkdir(parents=True)
    (site / "fakepkg-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n")
    (site / "fakepkg-0.1.dist-info" / "entry_points.txt").write_text("[fashionlab.models]\ntinynet = fakepkg:Net\n")
    (site / "fakepkg.py").write_text(MYNET)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "fashionlab", "models"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert listed.returncode == 0 and "tinynet" in listed.stdout and "fakepkg:Net" in listed.stdout, listed.stderr
    trained = subprocess.run([sys.executable, "-m", "fashionlab", "train", "--model", "tinynet", *TRAIN, "--out",
                              str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr
