"""`fashionlab predict`: classify your own images with a trained run folder or an exported .onnx model.

Each file is decoded and prepared on its own (a bad file becomes an error line, the others still count);
then one batched forward pass over all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashionlab import CLASSES
from fashionlab.errors import ConfigError, RunError
from fashionlab.imageprep import ImageError, find_images, load


@dataclass
class Result:
    file: str
    top: list[dict[str, Any]] | None = None  # [{"label", "index", "prob"}], most probable first
    error: str | None = None
    note: str | None = None
    pixels: np.ndarray | None = None  # uint8 [28, 28]: what the model saw

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "error": self.error} if self.error else {"file": self.file, "top": self.top}


class TorchModel:
    """A run folder's checkpoint, evaluated exactly as `fashionlab evaluate` does (fp32)."""

    def __init__(self, run_dir: Path, checkpoint: str, device: str):
        from fashionlab.device import resolve_device
        from fashionlab.evaluate import load_run_model
        from fashionlab.runio import read_json

        if not (run_dir / "config.json").is_file():
            raise RunError(f"{run_dir} is not a run folder (no config.json) nor an exported .onnx file")
        config = read_json(run_dir / "config.json")
        self.device = resolve_device(device)
        self.model, ckpt = load_run_model(run_dir, checkpoint, self.device)
        self.mean, self.std = ckpt["normalize"]["mean"], ckpt["normalize"]["std"]
        self.tta = bool(config.get("tta", False))
        self.channels_last = bool(config.get("channels_last", True))
        self.classes = list(CLASSES)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        from fashionlab.evaluate import predict_logits

        return predict_logits(self.model, x, self.mean, self.std, device=self.device, tta=self.tta,
                              channels_last=self.channels_last)


class OnnxModel:
    """An exported model run by onnxruntime; classes and normalization come from its metadata."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RunError(f"cannot load ONNX model {path}: {first}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.classes = json.loads(meta["fashionlab.classes"])
            self.mean, self.std = float(meta["fashionlab.mean"]), float(meta["fashionlab.std"])
        except (KeyError, ValueError):
            raise RunError(f"{path} has no fashionlab metadata; export it with "
                           "`fashionlab export --format onnx`") from None
        self.tta = meta.get("fashionlab.tta", "false") == "true"
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        # Exported without --dynamic-batch, the batch dimension is a fixed number (1 from `fashionlab export`).
        self.fixed_batch: int | None = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        step = self.fixed_batch or 1024
        out = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if self.fixed_batch and n < step:  # pad the last chunk up to the fixed batch
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), np.float32)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # The same arithmetic as evaluate.predict_logits, so both backends see identical inputs.
        xn = ((x.unsqueeze(1).float().div_(255) - self.mean) / self.std).numpy()
        logits = self._run(xn)
        if self.tta:
            logits = (logits + self._run(np.ascontiguousarray(xn[..., ::-1]))) / 2
        return torch.from_numpy(logits)


def load_model(model_path: Path, checkpoint: str = "best", device: str = "cpu") -> TorchModel | OnnxModel:
    if model_path.is_file():  # run folders are directories; a file can only be an exported model
        return OnnxModel(model_path)
    if not model_path.exists():
        raise RunError(f"{model_path} does not exist; pass a run folder or an exported .onnx file")
    return TorchModel(model_path, checkpoint, device)


def collect_inputs(paths: list[Path]) -> list[Path | Result]:
    """Files to predict, in order: directories walked recursively (sorted); a problem becomes a Result."""
    items: list[Path | Result] = []
    for p in paths:
        if p.is_dir():
            found = find_images(p)
            items.extend(found or [Result(str(p), error="directory holds no PNG, JPEG, BMP, WebP or GIF images")])
        elif not p.exists():
            items.append(Result(str(p), error="no such file or directory"))
        else:
            items.append(p)
    return items


def predict(model_path: Path | str, inputs: list[Path | str], *, top_k: int = 3, checkpoint: str = "best",
            preprocess: bool = True, device: str = "cpu") -> list[Result]:
    """Top-k predictions for every input file (directories expanded), in input order."""
    model = load_model(Path(model_path), checkpoint, device)
    if not 1 <= top_k <= len(model.classes):
        raise ConfigError(f"--top-k must be between 1 and {len(model.classes)}, got {top_k}")
    results: list[Result] = []
    for item in collect_inputs([Path(p) for p in inputs]):
        if isinstance(item, Result):
            results.append(item)
            continue
        try:
            pixels, note = load(item, preprocess)
            results.append(Result(str(item), note=note, pixels=pixels))
        except ImageError as e:
            results.append(Result(str(item), error=str(e)))
    good = [r for r in results if r.error is None]
    if good:
        batch = torch.from_numpy(np.stack([r.pixels for r in good]))
        probs = torch.softmax(model.logits(batch).float(), 1)
        values, indices = probs.topk(top_k, 1)
        for r, vs, ix in zip(good, values.tolist(), indices.tolist()):
            r.top = [{"label": model.classes[i], "index": i, "prob": round(v, 6)} for v, i in zip(vs, ix)]
    return results


def save_preprocessed(results: list[Result], folder: Path) -> None:
    """One PNG per predicted input, numbered in input order (names from different folders may clash)."""
    import io

    from PIL import Image

    from fashionlab.runio import atomic_write_bytes

    for i, r in enumerate(results):
        if r.pixels is not None:
            buf = io.BytesIO()
            Image.fromarray(r.pixels, "L").save(buf, "PNG")
            atomic_write_bytes(folder / f"{i:05d}-{Path(r.file).stem}.png", buf.getvalue())


def print_table(results: list[Result], top_k: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("file", *(f"#{i + 1}" for i in range(top_k)))
    for r in results:
        if r.error:
            table.add_row(escape(r.file), f"[red]error: {escape(r.error)}[/red]")
        else:
            table.add_row(escape(r.file), *(f"{t['label']} {t['prob']:.1%}" for t in r.top or []))
    Console().print(table)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN_DIR", help="a run folder, or a .onnx file from `fashionlab export`")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="PNG/JPEG/BMP/WebP/GIF files or folders")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--no-preprocess", action="store_true",
                   help="only grayscale + resize to 28x28 (no trimming, centring or inversion)")
    p.add_argument("--save-preprocessed", metavar="DIR", default=None, help="write what the model saw, as PNGs")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))


def run(args: argparse.Namespace) -> int:
    results = predict(args.model, args.inputs, top_k=args.top_k, checkpoint=args.checkpoint,
                      preprocess=not args.no_preprocess, device=args.device)
    for r in results:
        if r.note:
            print(f"note: {r.file}: {r.note}", file=sys.stderr)
    if args.save_preprocessed:
        save_preprocessed(results, Path(args.save_preprocessed))
    if args.json:
        for r in results:
            print(json.dumps(r.as_json()))
    else:
        print_table(results, args.top_k)
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"error: {failed} of {len(results)} inputs could not be predicted", file=sys.stderr)
        return 2
    return 0
