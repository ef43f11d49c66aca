"""`fashionlab export`: a run's model as ONNX, torch.export (.pt2) or TorchScript, checked before it is written.

The exported model takes raw pixels: fp32 [N, C, H, W] ([N, 1, 28, 28] on Fashion-MNIST) holding pixel / 255 in
[0, 1] (contiguous, not channels_last; `data.as_input`), normalizes them itself (its first module,
`models.Normalize`, holds the training split's mean and std) and returns logits. Class names, the input shape, the
statistics (for information), model name, TTA and the calibration temperature (fitted on the validation split)
travel with it as metadata under the same `fashionlab.*` keys in every format (ONNX metadata_props, .pt2
extra_files, TorchScript _extra_files).
Flip TTA is not baked into the graph: `fashionlab.tta` tells the consumer (e.g. `fashionlab predict`) to do it.
The file is reloaded from its bytes and compared with PyTorch on test images before the atomic write.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashionlab.about import __version__
from fashionlab.errors import ConfigError, FashionlabError, RunError

DEFAULT_NAMES = {"onnx": "model.onnx", "exported": "model.pt2", "torchscript": "model.torchscript.pt"}
SUFFIX_FORMATS = {".onnx": "onnx", ".pt2": "exported", ".pt": "torchscript"}  # what a file name promises
INPUT_CONTRACT = "float32 [N,{c},{h},{w}], pixel/255 in [0, 1]; the model normalizes"
MAX_ABS_DIFF = 1e-3  # fp32 export: anything larger is a broken export, not rounding
CHECK_IMAGES = 256
ONNX_OPSET = 17


class ExportError(FashionlabError):
    """The exported model does not reproduce the PyTorch model."""


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    argmax_equal: int
    n_checked: int
    check_data: str  # "real test images" or "random images"


def metadata(ckpt: dict, config: dict, checkpoint: str, temperature: float | None = None) -> dict[str, str]:
    """What a reader of the exported file needs besides the graph: class names in output order, the input shape
    and contract, the dataset (predict prepares a photo the Fashion-MNIST way only for Fashion-MNIST), and the
    temperature fitted on the run's validation split, if any (the graph outputs logits: calibrated probabilities
    are softmax(logits / temperature))."""
    from fashionlab.evaluate import class_names, input_shape

    norm = ckpt["normalize"]
    c, h, w = input_shape(ckpt)

    def number(v) -> str:  # one channel: a number, as every export had; more: a JSON list
        return json.dumps([float(x) for x in v]) if isinstance(v, list) else repr(float(v))

    return {
        "fashionlab.classes": json.dumps(class_names(ckpt)),
        "fashionlab.mean": number(norm["mean"]),
        "fashionlab.std": number(norm["std"]),
        "fashionlab.input_shape": json.dumps([c, h, w]),
        "fashionlab.dataset": str(config.get("dataset") or "fashion-mnist"),
        "fashionlab.model": ckpt["model_name"],
        "fashionlab.tta": "true" if config["tta"] else "false",
        "fashionlab.checkpoint": checkpoint,
        "fashionlab.input": INPUT_CONTRACT.format(c=c, h=h, w=w),
        "fashionlab.version": __version__,
        **({"fashionlab.temperature": repr(float(temperature))} if temperature is not None else {}),
    }


def to_onnx(model: nn.Module, example: torch.Tensor, meta: dict[str, str], dynamic_batch: bool) -> bytes:
    import onnx

    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # dynamo=False: the TorchScript-based exporter works with onnx alone; torch 2.13's default (dynamo)
        # exporter needs onnxscript, which the `export` extra does not install. It is deprecated, hence quiet.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=ONNX_OPSET)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def to_pt2(model: nn.Module, example: torch.Tensor, meta: dict[str, str], dynamic_batch: bool) -> bytes:
    from torch.export import Dim

    shapes = ({0: Dim("batch", min=1, max=1 << 16)},) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files=meta)
    return buf.getvalue()


def to_torchscript(model: nn.Module, example: torch.Tensor, meta: dict[str, str], dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated; still widely loadable
        # A trace records operations, not shapes: the result takes any batch size either way.
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, buf, _extra_files=meta)
    return buf.getvalue()


def onnx_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def pt2_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    module = torch.export.load(io.BytesIO(data)).module()
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


def torchscript_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data))
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


FORMATS = {"onnx": (to_onnx, onnx_runner), "exported": (to_pt2, pt2_runner),
           "torchscript": (to_torchscript, torchscript_runner)}


def check_images(config: dict, ckpt: dict) -> tuple[np.ndarray, str]:
    """Model inputs, fp32 [n, C, H, W]: the run's real test images if they can be found, else random ones."""
    from fashionlab.data import as_input
    from fashionlab.data.load import load_for_run
    from fashionlab.evaluate import input_shape

    try:
        x = load_for_run(config, progress=False).test_x[:CHECK_IMAGES]
        kind = "real test images"
    except (FashionlabError, KeyError, TypeError):
        c, h, w = input_shape(ckpt)
        x = torch.randint(0, 256, (CHECK_IMAGES, c, h, w), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
        kind = "random images (test set not found)"
    return as_input(x).numpy(), kind


def resolve_format(fmt: str | None, out: Path | str | None) -> str:
    """The format asked for; else what `out`'s suffix names (.onnx, .pt2, .pt); else torch.export."""
    if fmt is not None:
        return fmt
    return SUFFIX_FORMATS.get(Path(out).suffix.lower(), "exported") if out else "exported"


def export_run(run_dir: Path | str, fmt: str | None = None, out: Path | str | None = None, *,
               dynamic_batch: bool = False, checkpoint: str = "best", trust_model_code: bool = False) -> ExportResult:
    """Export, reload from the bytes, compare with PyTorch, then write atomically (nothing is written on failure).

    The path, `out` or the default one in the run folder, must be a new file: a model.onnx found there may be
    the user's (copied in, or edited), and nothing says which. It is checked before any work and created at the
    end with an exclusive create (files.write_new_file: a hard link, which fails if the name exists), so a file
    that appears there while the export runs is never replaced."""
    from fashionlab.evaluate import load_run_model
    from fashionlab.files import check_new_file
    from fashionlab.runfolder import RunFolder

    fmt = resolve_format(fmt, out)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = RunFolder(run_dir).require()
    run_dir = folder.path
    path = Path(out) if out else run_dir / DEFAULT_NAMES[fmt]
    what = "--out" if out else "export"
    check_new_file(path, what)  # before any work; never over an existing file
    if out:
        named = SUFFIX_FORMATS.get(path.suffix.lower())
        if named is not None and named != fmt:
            raise ConfigError(f"--out {path} has the suffix of format {named}, not {fmt}; give --format {named} "
                              f"or a name like {DEFAULT_NAMES[fmt]}")
    config = folder.config()
    model, ckpt = load_run_model(run_dir, checkpoint, "cpu", trust_model_code=trust_model_code)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    x, kind = check_images(config, ckpt)
    # torch.export specializes a batch of 1; a dynamic batch is traced with two images.
    example = torch.from_numpy(x[:2] if dynamic_batch else x[:1]).contiguous()
    exporter, runner = FORMATS[fmt]
    data = exporter(model, example, metadata(ckpt, config, checkpoint, folder.temperature(checkpoint)[0]),
                    dynamic_batch)
    run = runner(data)
    step = len(x) if dynamic_batch else 1
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        got = np.concatenate([run(x[i:i + step]) for i in range(0, len(x), step)])
    diff = float(np.abs(got - expected).max())
    same = int((got.argmax(1) == expected.argmax(1)).sum())
    if same != len(x) or not diff <= MAX_ABS_DIFF:
        raise ExportError(f"{fmt} export does not match PyTorch on {len(x)} {kind}: max |logit diff| {diff:.3g} "
                          f"(limit {MAX_ABS_DIFF:g}), argmax identical for {same}/{len(x)}; nothing written")
    write_output(path, data, what)
    return ExportResult(path, fmt, diff, same, len(x), kind)


def write_output(path: Path, data: bytes, what: str) -> None:
    """Create `path` holding `data`, whole or not at all, and never over a file: one that appeared since the check
    at the start (another program, a user) is kept, and the export is refused."""
    from fashionlab.files import write_new_file

    try:
        write_new_file(path, data)
    except FileExistsError:
        raise RunError(f"{what} {path} appeared while the export ran; fashionlab does not overwrite files it did "
                       "not create (nothing written; give another --out)") from None
    except OSError as e:
        raise RunError(f"cannot write {what} {path}: {e.strerror or type(e).__name__}; nothing written") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--format", choices=tuple(FORMATS), default=None,
                   help="onnx | torchscript | exported (torch.export .pt2); default: what --out's suffix names "
                        "(.onnx, .pt2, .pt), else exported")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="a new file (never over an existing one); default RUN_DIR/model.onnx, model.pt2 or "
                        "model.torchscript.pt")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: fixed batch of 1)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--trust-model-code", action="store_true",
                   help="allow importing the run's external model code (FILE.py:NAME / module:NAME models)")


def run(args: argparse.Namespace) -> int:
    r = export_run(args.run, args.format, args.out, dynamic_batch=args.dynamic_batch, checkpoint=args.checkpoint,
                   trust_model_code=args.trust_model_code)
    engine = "onnxruntime" if r.format == "onnx" else "reloaded model"
    print(f"exported {r.path} ({r.format}, batch {'dynamic' if args.dynamic_batch else 1})")
    print(f"{engine} vs PyTorch on {r.n_checked} {r.check_data}: max |logit diff| {r.max_abs_diff:.3g}, "
          f"argmax identical {r.argmax_equal}/{r.n_checked}")
    return 0
