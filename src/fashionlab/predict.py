"""`fashionlab predict`: classify your own images with a trained run folder or an exported .onnx model.

Each file is decoded and prepared on its own (a bad file becomes an error line, the others still count);
then one batched forward pass over all of them. Anything that is not a regular file (FIFO, device, broken link)
is refused from `os.stat` without being opened. A doubtful input (tiny, blank) is predicted with warnings.
`--save-preprocessed` and `--explain` (Grad-CAM heatmaps, explain.py; a run folder only) are checked before any
work, never overwrite a file nor write into the run's dataset folder, and their failure cannot hide the
predictions: they are printed first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashionlab.config import FASHION_MNIST, data_folder
from fashionlab.errors import ConfigError, FashionlabError, RunError
from fashionlab.files import check_outside, write_new_file
from fashionlab.imageprep import (
    MAX_PIXELS,
    MIN_SIDE,
    ImageError,
    blank_warning,
    decode,
    describe_os_error,
    file_kind,
    find_images,
    flatten,
    not_regular,
    prepare,
    upright,
)
from fashionlab.reading import read_bytes, shorten, show_path


@dataclass
class Result:
    file: str
    top: list[dict[str, Any]] | None = None  # [{"label", "index", "prob"}], most probable first
    error: str | None = None
    note: str | None = None
    pixels: np.ndarray | None = None  # uint8 [H, W] or [C, H, W]: what the model saw
    warnings: tuple[str, ...] = ()  # predicted, but doubtful: tiny image, blank after preprocessing
    heat: np.ndarray | None = None  # float [H, W] in [0, 1]: Grad-CAM of the top-1 class (--explain)
    explanation: str | None = None  # where that heatmap's PNG is written

    def as_json(self) -> dict[str, Any]:
        if self.error:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "top": self.top, **({"warnings": list(self.warnings)} if self.warnings else {}),
                **({"explanation": self.explanation} if self.explanation else {})}


@dataclass
class InMemory:
    """An image given as an object (Python API), prepared like a decoded file once the model says how."""

    name: str
    image: Any  # PIL.Image.Image


class TorchModel:
    """A run folder's checkpoint, evaluated exactly as `fashionlab evaluate` does (in the run's precision where
    this machine has it natively, device.inference_precision: bf16 on a CPU with AVX512-BF16 or AMX, faster than
    fp32, docs/performance.md). net: the architecture
    object of a run trained from one (Python API). What predict needs of any model: classes, shape (C, H, W),
    fashion_mnist (whether photos are prepared the way Fashion-MNIST was made) and logits()."""

    def __init__(self, run_dir: Path, checkpoint: str, device: str, trust_model_code: bool = False, net=None):
        from fashionlab.cpugraph import CpuGraph
        from fashionlab.device import inference_precision, resolve_device
        from fashionlab.evaluate import class_names, input_shape, load_run_model
        from fashionlab.runfolder import RunFolder

        folder = RunFolder(run_dir)
        if not folder.exists():
            raise RunError(f"{run_dir} is not a run folder (no {RunFolder.CONFIG}) nor an exported .onnx file")
        config = folder.config()
        self.device = resolve_device(device)
        self.model, ckpt = load_run_model(run_dir, checkpoint, self.device, trust_model_code=trust_model_code,
                                          net=net)
        self.tta, self.channels_last = bool(config["tta"]), bool(config["channels_last"])
        self.precision = inference_precision(config["precision"], self.device)
        self.graph = CpuGraph(self.model)  # built on the first prediction with enough images, then kept
        self.classes, self.shape = class_names(ckpt), input_shape(ckpt)
        self.fashion_mnist = (config.get("dataset") or FASHION_MNIST) == FASHION_MNIST
        self.temperature, self.uncalibrated_reason = folder.temperature(checkpoint)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        from fashionlab.evaluate import predict_logits

        return predict_logits(self.model, x, device=self.device, precision=self.precision, tta=self.tta,
                              channels_last=self.channels_last, graph=self.graph)

    def heatmaps(self, x: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Grad-CAM maps (float32 [N, H, W] in [0, 1]) of uint8 images for classes `targets`, of the last conv
        layer (an ensemble: of each member's, averaged). With the run's flip TTA the prediction averages the image
        and its mirror; the map is of the image as given."""
        from fashionlab.data import as_input
        from fashionlab.explain import gradcam, last_conv
        from fashionlab.models import Ensemble

        net = getattr(self.model, "net", None)
        layers = [last_conv(m) for m in net.members] if isinstance(net, Ensemble) else None
        # In parts: the backward pass holds every activation of its batch.
        maps = [gradcam(self.model, as_input(x[i:i + batch_size]).to(self.device),
                        targets[i:i + batch_size], layers).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(maps).numpy().astype(np.float32) if maps else np.empty((0, *self.shape[1:]), np.float32)


class OnnxModel:
    """An exported model run by onnxruntime; classes and normalization come from its metadata."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        # Read by us (a regular file, at most CAPS["checkpoint"] bytes), then parsed by onnxruntime from memory.
        data = read_bytes(path, kind="checkpoint", error=RunError)
        try:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RunError(f"cannot load ONNX model {show_path(path)}: {first}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.classes = json.loads(meta["fashionlab.classes"])
            mean, std = json.loads(meta["fashionlab.mean"]), json.loads(meta["fashionlab.std"])
            self.shape = tuple(json.loads(meta.get("fashionlab.input_shape", "[1, 28, 28]")))
        except (KeyError, ValueError):
            raise RunError(f"{path} has no fashionlab metadata; export it with "
                           "`fashionlab export --format onnx`") from None
        self.fashion_mnist = meta.get("fashionlab.dataset", FASHION_MNIST) == FASHION_MNIST
        self.tta = meta.get("fashionlab.tta", "false") == "true"
        self.temperature, self.uncalibrated_reason = _temperature(meta.get("fashionlab.temperature"))
        # Exports made before the model normalized itself take (pixel/255 - mean) / std, as their metadata says.
        self.norm = (mean, std) if "- mean" in meta.get("fashionlab.input", "") else (0.0, 1.0)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        # Exported without --dynamic-batch, the batch dimension is a fixed number (1 from `fashionlab export`).
        self.fixed_batch: int | None = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        from fashionlab.evaluate import CPU_INFERENCE_BATCH

        step = self.fixed_batch or CPU_INFERENCE_BATCH  # onnxruntime runs on the CPU here
        out = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if self.fixed_batch and n < step:  # pad the last chunk up to the fixed batch
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), np.float32)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # The same input as evaluate.predict_logits gives a Classifier (data.as_input).
        from fashionlab.data import as_input

        mean, std = self.norm
        xn = ((as_input(x) - mean) / std).numpy() if self.norm != (0.0, 1.0) else as_input(x).numpy()
        logits = self._run(xn)
        if self.tta:
            logits = (logits + self._run(np.ascontiguousarray(xn[..., ::-1]))) / 2
        return torch.from_numpy(logits)


def _temperature(text: str | None) -> tuple[float | None, str]:
    """An export's temperature metadata: (T, "") or (None, why not)."""
    try:
        t = float(text) if text is not None else None
    except ValueError:
        t = None
    if t is None or not 0 < t < float("inf"):
        return None, "the export carries no fitted temperature"
    return t, ""


def calibration_note(model: TorchModel | OnnxModel, calibrate: bool) -> str:
    """One line saying what the probabilities are."""
    if not calibrate:
        return "probabilities: the model's softmax, uncalibrated (--no-calibrate)"
    if model.temperature is None:
        return f"probabilities: the model's softmax, uncalibrated: {model.uncalibrated_reason}"
    return (f"probabilities: calibrated with temperature {model.temperature:.3g}, fitted on the run's validation "
            "split (--no-calibrate: the raw softmax)")


def load_model(model_path: Path, checkpoint: str = "best", device: str = "cpu",
               trust_model_code: bool = False) -> TorchModel | OnnxModel:
    if model_path.is_file():  # run folders are directories; a file can only be an exported model
        return OnnxModel(model_path)
    if not model_path.exists():
        raise RunError(f"{model_path} does not exist; pass a run folder or an exported .onnx file")
    if not model_path.is_dir():  # a FIFO or a device: never opened
        raise RunError(f"{model_path} is {file_kind(os.stat(model_path).st_mode)}, not a run folder "
                       "nor an exported .onnx file")
    return TorchModel(model_path, checkpoint, device, trust_model_code)


def collect_inputs(paths: list[Path]) -> list[Path | Result]:
    """Files to predict, in order: directories walked recursively (sorted); a problem becomes a Result.
    Only `os.stat` is used here: nothing is opened, so a FIFO or a device cannot block or be read."""
    items: list[Path | Result] = []
    for p in paths:
        if os.path.isdir(p):
            unreadable: list[tuple[Path, str]] = []
            found: list[Path | Result] = [*find_images(p, unreadable)]
            found += [Result(str(d), error=why) for d, why in unreadable]
            items.extend(found or [Result(str(p), error="directory holds no PNG, JPEG, BMP, WebP or GIF images")])
        else:
            problem = not_regular(p)
            items.append(Result(str(p), error="no such file or directory" if problem == "no such file" else problem)
                         if problem else p)
    # Inside a walked folder, entries named like images are listed whatever they are: refuse the odd ones here.
    return [Result(str(i), error=why) if isinstance(i, Path) and (why := not_regular(i)) else i for i in items]


def prepare_for(model, image, preprocess: bool) -> np.ndarray:
    """A decoded image (upright, 8-bit L or RGB) as the model's input pixels. A Fashion-MNIST run: the dataset's
    own recipe (imageprep.prepare: trim, fit, centre, invert), or only grayscale + 28x28 without `preprocess`.
    A run on the user's own data: exactly what its dataset reader did to each training image (data.own)."""
    if model.fashion_mnist:
        return prepare(image, preprocess)
    from fashionlab.imageprep import prepare_image

    c, h, w = model.shape
    pixels = prepare_image(image, "L" if c == 1 else "RGB", (h, w))
    return pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def prepared(model, name: str, image, preprocess: bool, note: str | None = None) -> Result:
    """One decoded image's Result, with its warnings for a Fashion-MNIST run: smaller than its 28 pixels, or blank
    once prepared. A run on the user's own data prepares images exactly as its training images were (which may
    have been as small or as plain), so the same checks would only be noise there."""
    w, h = image.size
    pixels = prepare_for(model, image, preprocess)
    warnings: tuple[str, ...] = ()
    if model.fashion_mnist and min(w, h) < MIN_SIDE:
        warnings += (f"tiny image ({w}x{h} pixels, under {MIN_SIDE} on its short side): prediction unreliable",)
    if model.fashion_mnist and (blank := blank_warning(pixels)):
        warnings += (blank,)
    return Result(name, note=note, pixels=pixels, warnings=warnings)


def read_item(model, path: Path, preprocess: bool) -> Result:
    decoded = decode(path)
    result = prepared(model, str(path), decoded.image, preprocess, decoded.note)
    if model.fashion_mnist:  # decode's own size check (of the file, before a JPEG draft) is the one shown
        result.warnings = decoded.warnings + tuple(w for w in result.warnings if not w.startswith("tiny image"))
    return result


def predict_items(model: TorchModel | OnnxModel, items: list[Path | Result | InMemory], top_k: int = 3,
                  preprocess: bool = True, calibrate: bool = True, explain: bool = False) -> list[Result]:
    """Top-k predictions for collected inputs, in order. calibrate: softmax(logits / T) with the temperature
    fitted on the run's validation split, when it has one (the ranking is the same; the probabilities are
    calibrated); else the plain softmax. explain: each Result's `heat`, Grad-CAM of its top-1 class."""
    if not 1 <= top_k <= len(model.classes):
        raise ConfigError(f"--top-k must be between 1 and {len(model.classes)}, got {top_k}")
    if explain and not isinstance(model, TorchModel):
        raise RunError(ONNX_EXPLAIN)
    results: list[Result] = []
    for item in items:
        if isinstance(item, Result):
            results.append(item)
        elif isinstance(item, InMemory):
            results.append(prepared(model, item.name, item.image, preprocess))
        else:
            try:
                results.append(read_item(model, item, preprocess))
            except ImageError as e:
                results.append(Result(str(item), error=str(e)))
    good = [r for r in results if r.error is None]
    if good:
        batch = torch.from_numpy(np.stack([r.pixels for r in good]))
        logits = model.logits(batch).float()
        if calibrate and model.temperature is not None:
            logits = logits / model.temperature
        probs = torch.softmax(logits, 1)
        values, indices = probs.topk(top_k, 1)
        for r, vs, ix in zip(good, values.tolist(), indices.tolist()):
            r.top = [{"label": model.classes[i], "index": i, "prob": round(v, 6)} for v, i in zip(vs, ix)]
        if explain:
            for r, heat in zip(good, model.heatmaps(batch, indices[:, 0])):
                r.heat = heat
    return results


def predict(model_path: Path | str, inputs: list[Path | str], *, top_k: int = 3, checkpoint: str = "best",
            preprocess: bool = True, device: str = "cpu", trust_model_code: bool = False,
            calibrate: bool = True, explain: Path | str | None = None) -> list[Result]:
    """Top-k predictions for every input file (directories expanded), in input order. explain: a folder for a
    Grad-CAM heatmap PNG of each prediction (checked before any work; a failure to write raises RunError)."""
    explain_to = Path(explain) if explain is not None else None
    if explain_to:
        check_explain_model(Path(model_path))
        check_output_folder(explain_to, EXPLAIN, Path(model_path))
    items = collect_inputs([Path(p) for p in inputs])
    if explain_to:
        check_save_names(explain_to, items, EXPLAIN)
    model = load_model(Path(model_path), checkpoint, device, trust_model_code)
    results = predict_items(model, items, top_k, preprocess, calibrate, explain=explain_to is not None)
    if explain_to and (error := save_explanations(results, explain_to)):
        raise RunError(error)
    return results


# ---------------------------------------------------------------------------------------------- in-memory images


def collect_images(images) -> list[Path | Result | InMemory]:
    """The Python API's `images` (one or a list: file paths, folders, PIL images, uint8 arrays HxW or HxWxC) as
    predict_items' input: paths as collect_inputs gives them, in-memory images named "<image N>"."""
    from PIL import Image

    if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
        images = [images]
    elif not isinstance(images, Sequence):
        raise ConfigError(f"predict(): images must be an image or a list of them, got {shorten(images, 40)} "
                          f"({type(images).__name__})")
    items: list[Path | Result | InMemory] = []
    for i, image in enumerate(images):
        if isinstance(image, (str, os.PathLike)):
            items += collect_inputs([Path(image)])
        elif isinstance(image, np.ndarray):
            items.append(InMemory(f"<image {i}>", _array_image(image, i)))
        elif isinstance(image, Image.Image):
            items.append(InMemory(f"<image {i}>", _checked_image(image, i)))
        else:
            raise ConfigError(f"predict(): images[{i}] is {shorten(image, 40)} ({type(image).__name__}); give a "
                              "file path, a PIL image or a uint8 numpy array")
    return items


def _array_image(a: np.ndarray, i: int):
    from PIL import Image

    if a.dtype != np.uint8:
        raise ConfigError(f"predict(): images[{i}] is a {a.dtype} array; give uint8 pixels (0-255)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or min(a.shape[:2]) == 0:
        raise ConfigError(f"predict(): images[{i}] has shape {a.shape}; give HxW or HxWxC (C = 1, 3 or 4)")
    return _checked_image(Image.fromarray(np.ascontiguousarray(a)), i)


def _checked_image(image, i: int):
    """Upright and flattened to 8-bit L or RGB, as imageprep.decode leaves a file; its size within limits."""
    w, h = image.size
    if w * h > MAX_PIXELS or min(w, h) == 0:
        raise ConfigError(f"predict(): images[{i}] is {w}x{h}; give 1 to {MAX_PIXELS:,} pixels")
    try:
        return flatten(upright(image))
    except Exception as e:  # noqa: BLE001 - an image mode PIL cannot convert
        raise ConfigError(f"predict(): images[{i}] (PIL mode {image.mode}) cannot be used: {e}") from None




# --------------------------------------------------------------------------------------- --save-preprocessed, --explain

SAVE, EXPLAIN = "--save-preprocessed", "--explain"
SUFFIX = {SAVE: "", EXPLAIN: "-gradcam"}  # distinct, so both options may share one folder
ONNX_EXPLAIN = ("--explain needs a run folder: Grad-CAM takes the model's gradients, which an exported .onnx model "
                "does not give; pass the run folder it was exported from")


def preprocessed_name(index: int, file: str, suffix: str = "") -> str:
    """The PNG name for the input at `index`: numbered in input order, as names from different folders may
    clash; the stem is shortened (in bytes) so the name stays under file-system limits. An in-memory image
    (Python API, "<image N>") is named image-N."""
    stem = f"image-{file[7:-1]}" if file.startswith("<image ") and file.endswith(">") else Path(file).stem
    return f"{index:05d}-{os.fsdecode(os.fsencode(stem)[:200])}{suffix}.png"


def check_save_folder(folder: Path, what: str = SAVE) -> None:
    """Before any work: the folder exists (or can be made: its nearest existing ancestor is a writable folder)."""
    try:
        st = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(folder):
            raise RunError(f"{what} {folder} is a broken symbolic link") from None
        parent = next(p for p in folder.absolute().parents if os.path.lexists(p))
        if not os.path.isdir(parent):
            raise RunError(f"cannot create {what} folder {folder}: {parent} is not a folder") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunError(f"cannot create {what} folder {folder}: permission denied in {parent}") from None
        return
    except OSError as e:
        raise RunError(f"cannot use {what} folder {folder}: {describe_os_error(e)}") from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
        raise RunError(f"{what} {folder} is {kind}, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to {what} folder {folder}: permission denied")


def run_data_folder(model_path: Path) -> Path | None:
    """The dataset folder a run was trained on (its own images), where nothing may be written; None for
    Fashion-MNIST, a CSV or npz, an export, or a folder that is not a readable run (loading it says why)."""
    from fashionlab.runfolder import RunFolder

    folder = RunFolder(model_path)
    try:
        spec = folder.config().get("dataset") if model_path.is_dir() and folder.exists() else None
    except (FashionlabError, OSError):
        return None
    return data_folder(spec) if isinstance(spec, str) else None


def check_output_folder(folder: Path, what: str, model_path: Path) -> None:
    """Before any work: `folder` can hold the PNGs, and is not inside the run's dataset folder."""
    check_save_folder(folder, what)
    check_outside(folder, run_data_folder(model_path), what)


def check_explain_model(model_path: Path) -> None:
    """Before any work: --explain needs captum and a run folder (an .onnx export has no gradients)."""
    if model_path.is_file():  # as load_model decides: a file can only be an exported model
        raise RunError(ONNX_EXPLAIN)
    from fashionlab.explain import require

    require()


def check_save_names(folder: Path, items: list[Path | Result | InMemory], what: str = SAVE) -> None:
    """Before any work: none of the PNG names this run would write exists yet (predict never overwrites)."""
    taken = [name for i, item in enumerate(items) if isinstance(item, (Path, InMemory))
             if os.path.lexists(folder / (name := preprocessed_name(
                 i, item.name if isinstance(item, InMemory) else str(item), SUFFIX[what])))]
    if taken:
        more = f" and {len(taken) - 1} more of the names it would write" if len(taken) > 1 else ""
        raise RunError(f"{what} folder {folder} already holds {taken[0]}{more}; predict never "
                       "overwrites files: choose a new or empty folder, or remove them")


def name_explanations(results: list[Result], folder: Path) -> None:
    """Each explained Result's `explanation`: the path its heatmap PNG is written to."""
    for i, r in enumerate(results):
        if r.heat is not None:
            r.explanation = str(folder / preprocessed_name(i, r.file, SUFFIX[EXPLAIN]))


def save_preprocessed(results: list[Result], folder: Path) -> str | None:
    """One PNG per predicted input, named by `preprocessed_name`; the folder (and its parents) made if missing.
    Returns None, or a one-line description of what could not be saved."""
    from PIL import Image

    def png(pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(
            buf, "PNG")
        return buf.getvalue()

    return save_pngs([(preprocessed_name(i, r.file), lambda r=r: png(r.pixels))
                      for i, r in enumerate(results) if r.pixels is not None], folder, SAVE)


def save_explanations(results: list[Result], folder: Path) -> str | None:
    """One heatmap PNG (explain.overlay_png) per explained input, named as `name_explanations` says."""
    from fashionlab.explain import overlay_png

    name_explanations(results, folder)
    return save_pngs([(Path(r.explanation).name, lambda r=r: overlay_png(r.pixels, r.heat))
                      for r in results if r.explanation is not None and r.heat is not None], folder, EXPLAIN)


def save_pngs(todo: list[tuple[str, Callable[[], bytes]]], folder: Path, what: str) -> str | None:
    """Write each (name, PNG maker) into `folder`, made with its parents if missing; never over an existing file.
    Returns None, or a one-line description of what could not be saved."""
    if not todo:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {what} folder {folder}: {describe_os_error(e)}; no image saved"
    failed: list[tuple[str, str]] = []
    for name, make in todo:
        try:
            write_new_file(folder / name, make())
        except FileExistsError:
            failed.append((name, "already exists, not overwritten"))
        except OSError as e:
            failed.append((name, describe_os_error(e)))
    if not failed:
        return None
    name, why = failed[0]
    return f"{what}: {len(failed)} of {len(todo)} images not saved to {folder} (first: {name}: {why})"


def print_table(results: list[Result], top_k: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("file", *(f"#{i + 1}" for i in range(top_k)))
    for r in results:
        if r.error:
            table.add_row(escape(r.file), f"[red]error: {escape(r.error)}[/red]")
        else:
            name = escape(r.file) + (" [yellow](warning below)[/yellow]" if r.warnings else "")
            table.add_row(name, *(f"{t['label']} {t['prob']:.1%}" for t in r.top or []))
    Console().print(table)
    # Plain lines, not table cells: a long warning is neither wrapped nor cut.
    for r in results:
        for w in r.warnings:
            print(f"warning: {r.file}: {w}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN_DIR", help="a run folder, or a .onnx file from `fashionlab export`")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="PNG/JPEG/BMP/WebP/GIF files or folders (walked recursively). A FIFO, device or broken link "
                        "gets an error without being opened. An image under 28 pixels on its short side, or blank "
                        "once preprocessed, is predicted with a warning")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line instead of a table: {"file", "top"} (plus "warnings": [...] '
                        'when there are any) or {"file", "error"}')
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--no-calibrate", action="store_true",
                   help="the model's plain softmax; by default the probabilities are calibrated with the temperature "
                        "fitted on the run's validation split (test_metrics.json; an export carries it), when there "
                        "is one. Either way the line under the table says which")
    p.add_argument("--no-preprocess", action="store_true",
                   help="only grayscale + resize to 28x28 (no trimming, centring or inversion)")
    p.add_argument("--save-preprocessed", metavar="DIR", default=None,
                   help="write what the model saw, as PNGs named NNNNN-<name>.png (input order); DIR and its "
                        "parents are made if missing. Checked before any work: if DIR is a file, or already holds "
                        "one of those names, predict stops with an error (it never overwrites a file). If saving "
                        "fails later, the predictions are still printed, then the error (exit 2)")
    p.add_argument("--explain", metavar="DIR", default=None,
                   help="write a Grad-CAM heatmap of each prediction's top-1 class (the model's last conv layer), "
                        "over the image the model saw, as PNGs named NNNNN-<name>-gradcam.png; a run folder only, "
                        "not an .onnx export. Checked before any work, like --save-preprocessed, and never written "
                        "into the run's dataset folder. Needs captum: pip install 'fashionlab[explain]'")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    p.add_argument("--trust-model-code", action="store_true",
                   help="allow importing the run's external model code (FILE.py:NAME / module:NAME models)")


def run(args: argparse.Namespace) -> int:
    model_path = Path(args.model)
    outputs = {what: Path(folder) for what, folder in ((SAVE, args.save_preprocessed), (EXPLAIN, args.explain))
               if folder}
    # Before the inputs are read or the model is loaded: nothing is done, and nothing made, unless all can be.
    if EXPLAIN in outputs:
        check_explain_model(model_path)
    for what, folder in outputs.items():
        check_output_folder(folder, what, model_path)
    items = collect_inputs([Path(p) for p in args.inputs])
    for what, folder in outputs.items():
        check_save_names(folder, items, what)
    model = load_model(model_path, args.checkpoint, args.device, args.trust_model_code)
    results = predict_items(model, items, args.top_k, preprocess=not args.no_preprocess,
                            calibrate=not args.no_calibrate, explain=EXPLAIN in outputs)
    if EXPLAIN in outputs:
        name_explanations(results, outputs[EXPLAIN])
    for r in results:
        if r.note:
            print(f"note: {r.file}: {r.note}", file=sys.stderr)
    # Every prediction is printed before anything is saved: a failing save cannot hide them.
    if args.json:
        for r in results:
            print(json.dumps(r.as_json()))
    else:
        print_table(results, args.top_k)
        print(calibration_note(model, not args.no_calibrate))  # under the table it describes
    sys.stdout.flush()
    save_errors = [e for e in (save_preprocessed(results, outputs[SAVE]) if SAVE in outputs else None,
                               save_explanations(results, outputs[EXPLAIN]) if EXPLAIN in outputs else None) if e]
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"error: {failed} of {len(results)} inputs could not be predicted", file=sys.stderr)
    for e in save_errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if failed or save_errors else 0
