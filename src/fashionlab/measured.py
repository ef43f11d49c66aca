"""measured.json: the measured accuracy and time of each recipe, shipped in the package. Its schema, its one reader
(`load`) and its one writer (`dumps`, `write`, called by benchmarks/results_tables.py) are here.

    {"generated_by": "benchmarks/results_tables.py",
     "recipes": {NAME: null (not measured) | {
         "accuracy_mean", "accuracy_sd" (0..1, over the seeds), "n_seeds", "seeds", "accuracy_source",
         "seconds" (null: not timed), "seconds_kind", "seconds_source", "machine", "torch", "date",
         "budget_reference": {DEVICE KIND: {...}}  (only when some device kind has one; see Reference)}},
     "budget_margin": {"factor", "checks", "source", "machine", "date"}  (absent: --budget never checked; see Margin)}

`fashionlab recipes` shows the figures and `train --budget` chooses from them. A damaged file (bad JSON, a missing
or unexpected key, a wrong type, a non-finite or out-of-range number) is a one-line FashionlabError naming the
key, raised before anything is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fashionlab.errors import FashionlabError
from fashionlab.files import atomic_write_text
from fashionlab.reading import shorten

GENERATED_BY = "benchmarks/results_tables.py"
FILE_NAME = "measured.json"


@dataclass
class StepMachine:
    """The machine benchmarks/step_time.py timed the reference step on, as that script records it."""

    cpu: str
    threads: int
    cuda: str | None  # the GPU's name, or None on a CPU


@dataclass
class Reference:
    """For `train --budget` on one kind of device: the recipe's time on the reference machine and the seconds per
    training step of that run (its time over its steps), so that a step timed here scales the time. The machine
    and settings are those benchmarks/step_time.py recorded for the recipe."""

    seconds: float
    seconds_kind: str
    seconds_source: str
    step_seconds: float
    step_seconds_source: str
    batch_size: int
    precision: str
    machine: str
    step_machine: StepMachine
    threads: int
    torch: str
    date: str


@dataclass
class Recipe:
    """One recipe's measured figures."""

    accuracy_mean: float  # test accuracy, 0..1, mean over the seeds
    accuracy_sd: float  # sample sd over the seeds (0 for one seed)
    n_seeds: int
    seeds: list[int]
    accuracy_source: str  # the folder of the runs, relative to the repository
    seconds: float | None  # None: no run was timed on the idle machine
    seconds_kind: str  # what the seconds are
    seconds_source: str
    machine: str
    torch: str
    date: str
    budget_reference: dict[str, Reference] = field(default_factory=dict)  # device kind -> reference


@dataclass
class Margin:
    """How far `train --budget`'s estimates have run over: the largest actual / estimated wall time over the
    committed checks of benchmarks/budget_check.py. --budget fits a recipe's estimate times this factor."""

    factor: float  # >= 1
    checks: int  # how many trained budgets it is taken over
    source: str  # the files, relative to the repository
    machine: str  # the CPU(s) the checks ran on
    date: str


@dataclass
class Measured:
    generated_by: str
    recipes: dict[str, Recipe | None]  # None: the recipe has no measured figures
    budget_margin: Margin | None = None  # None: --budget's estimates have not been checked


# ---------------------------------------------------------------------------------------------------------
# reading


class _Bad(Exception):
    """A problem at a key path; load() turns it into one FashionlabError line."""


def _fields(value: Any, where: str, want: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{where} must be an object, not {shorten(value, 40)}")
    missing = [k for k in want if k not in value]
    if missing:
        raise _Bad(f"{where} lacks {', '.join(repr(k) for k in missing)}")
    unexpected = [k for k in value if k not in want and k not in optional]
    if unexpected:
        raise _Bad(f"{where} has an unexpected key {shorten(unexpected[0], 40)}")
    return value


def _str(value: Any, where: str, *, none: bool = False) -> Any:
    if isinstance(value, str) or (none and value is None):
        return value
    raise _Bad(f"{where} must be a string{' or null' if none else ''}, not {shorten(value, 40)}")


def _int(value: Any, where: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _Bad(f"{where} must be a whole number ≥ {lo}, not {shorten(value, 40)}")
    return value


def _num(value: Any, where: str, *, lo: float = 0.0, hi: float = math.inf, above: bool = False,
         none: bool = False) -> Any:
    if none and value is None:
        return value
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > lo if above else value >= lo) and value <= hi)
    if not ok:
        bound = f"> {lo:g}" if above else f"≥ {lo:g}"
        span = f"a finite number {bound}" + (f" and ≤ {hi:g}" if math.isfinite(hi) else "")
        raise _Bad(f"{where} must be {span}{' or null' if none else ''}, not {shorten(value, 40)}")
    return value  # an int stays an int, so the file reads back as it was written


def _step_machine(value: Any, where: str) -> StepMachine:
    d = _fields(value, where, ("cpu", "threads", "cuda"))
    return StepMachine(_str(d["cpu"], f"{where}.cpu"), _int(d["threads"], f"{where}.threads", 1),
                       _str(d["cuda"], f"{where}.cuda", none=True))


def _reference(value: Any, where: str) -> Reference:
    d = _fields(value, where, ("seconds", "seconds_kind", "seconds_source", "step_seconds", "step_seconds_source",
                               "batch_size", "precision", "machine", "step_machine", "threads", "torch", "date"))
    return Reference(
        seconds=_num(d["seconds"], f"{where}.seconds", above=True),
        seconds_kind=_str(d["seconds_kind"], f"{where}.seconds_kind"),
        seconds_source=_str(d["seconds_source"], f"{where}.seconds_source"),
        step_seconds=_num(d["step_seconds"], f"{where}.step_seconds", above=True),
        step_seconds_source=_str(d["step_seconds_source"], f"{where}.step_seconds_source"),
        batch_size=_int(d["batch_size"], f"{where}.batch_size", 1),
        precision=_str(d["precision"], f"{where}.precision"),
        machine=_str(d["machine"], f"{where}.machine"),
        step_machine=_step_machine(d["step_machine"], f"{where}.step_machine"),
        threads=_int(d["threads"], f"{where}.threads", 1),
        torch=_str(d["torch"], f"{where}.torch"),
        date=_str(d["date"], f"{where}.date"))


def _recipe(value: Any, where: str) -> Recipe | None:
    if value is None:
        return None
    d = _fields(value, where, ("accuracy_mean", "accuracy_sd", "n_seeds", "seeds", "accuracy_source", "seconds",
                               "seconds_kind", "seconds_source", "machine", "torch", "date"),
                optional=("budget_reference",))
    seeds = d["seeds"]
    if not isinstance(seeds, list):
        raise _Bad(f"{where}.seeds must be a list, not {shorten(seeds, 40)}")
    seeds = [_int(s, f"{where}.seeds[{i}]") for i, s in enumerate(seeds)]
    n_seeds = _int(d["n_seeds"], f"{where}.n_seeds", 1)
    if n_seeds != len(seeds):
        raise _Bad(f"{where}.n_seeds is {n_seeds} but {where}.seeds lists {len(seeds)}")
    refs = d.get("budget_reference", {})
    if "budget_reference" in d and (not isinstance(refs, dict) or not refs):  # the writer leaves an empty one out
        raise _Bad(f"{where}.budget_reference must be a non-empty object (or absent), not {shorten(refs, 40)}")
    return Recipe(
        accuracy_mean=_num(d["accuracy_mean"], f"{where}.accuracy_mean", hi=1.0),
        accuracy_sd=_num(d["accuracy_sd"], f"{where}.accuracy_sd", hi=1.0),
        n_seeds=n_seeds,
        seeds=seeds,
        accuracy_source=_str(d["accuracy_source"], f"{where}.accuracy_source"),
        seconds=_num(d["seconds"], f"{where}.seconds", above=True, none=True),
        seconds_kind=_str(d["seconds_kind"], f"{where}.seconds_kind"),
        seconds_source=_str(d["seconds_source"], f"{where}.seconds_source"),
        machine=_str(d["machine"], f"{where}.machine"),
        torch=_str(d["torch"], f"{where}.torch"),
        date=_str(d["date"], f"{where}.date"),
        budget_reference={kind: _reference(ref, f"{where}.budget_reference.{kind}") for kind, ref in refs.items()})


def _margin(value: Any, where: str) -> Margin:
    d = _fields(value, where, ("factor", "checks", "source", "machine", "date"))
    return Margin(factor=_num(d["factor"], f"{where}.factor", lo=1.0, hi=10.0),
                  checks=_int(d["checks"], f"{where}.checks", 1), source=_str(d["source"], f"{where}.source"),
                  machine=_str(d["machine"], f"{where}.machine"), date=_str(d["date"], f"{where}.date"))


def parse(data: Any) -> Measured:
    """The typed figures of measured.json's parsed JSON; FashionlabError (one line, naming the key) if damaged."""
    try:
        d = _fields(data, "the file", ("generated_by", "recipes"), optional=("budget_margin",))
        recipes = d["recipes"]
        if not isinstance(recipes, dict):
            raise _Bad(f"recipes must be an object, not {shorten(recipes, 40)}")
        margin = d.get("budget_margin")
        return Measured(_str(d["generated_by"], "generated_by"),
                        {name: _recipe(entry, f"recipes.{name}") for name, entry in recipes.items()},
                        None if margin is None else _margin(margin, "budget_margin"))
    except _Bad as e:
        raise FashionlabError(f"{FILE_NAME} is damaged: {e}; regenerate it (python {GENERATED_BY}) "
                              "or reinstall fashionlab") from None


def loads(text: str) -> Measured:
    """parse() of measured.json's text; bad JSON (NaN included) is the same one-line FashionlabError."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except ValueError as e:
        msg = " ".join(str(e).split())
        raise FashionlabError(f"{FILE_NAME} is damaged: not JSON ({msg}); regenerate it (python {GENERATED_BY}) "
                              "or reinstall fashionlab") from None
    return parse(data)


def load(path: str | Path | None = None) -> Measured:
    """The figures shipped in the package (or those in PATH), validated."""
    try:
        if path is None:
            from importlib.resources import files

            text = files("fashionlab").joinpath(FILE_NAME).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        where = f"the package's {FILE_NAME}" if path is None else shorten(str(path), 120)
        why = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise FashionlabError(f"cannot read {where}: {why} (reinstall fashionlab)") from None
    return loads(text)


# ---------------------------------------------------------------------------------------------------------
# writing


def _step_machine_dict(m: StepMachine) -> dict[str, Any]:
    return {"cpu": m.cpu, "threads": m.threads, "cuda": m.cuda}


def _reference_dict(r: Reference) -> dict[str, Any]:
    return {"seconds": r.seconds, "seconds_kind": r.seconds_kind, "seconds_source": r.seconds_source,
            "step_seconds": r.step_seconds, "step_seconds_source": r.step_seconds_source,
            "batch_size": r.batch_size, "precision": r.precision, "machine": r.machine,
            "step_machine": _step_machine_dict(r.step_machine), "threads": r.threads, "torch": r.torch,
            "date": r.date}


def recipe_dict(r: Recipe) -> dict[str, Any]:
    """One recipe's JSON object, keys in the file's order; budget_reference only when there is one."""
    out: dict[str, Any] = {
        "accuracy_mean": r.accuracy_mean, "accuracy_sd": r.accuracy_sd, "n_seeds": r.n_seeds, "seeds": list(r.seeds),
        "accuracy_source": r.accuracy_source, "seconds": r.seconds, "seconds_kind": r.seconds_kind,
        "seconds_source": r.seconds_source, "machine": r.machine, "torch": r.torch, "date": r.date}
    if r.budget_reference:
        out["budget_reference"] = {kind: _reference_dict(ref) for kind, ref in r.budget_reference.items()}
    return out


def dumps(recipes: dict[str, Recipe | None], generated_by: str = GENERATED_BY, margin: Margin | None = None) -> str:
    """measured.json's text for these figures. The text is read back through loads() first, so the writer cannot
    write what the reader would refuse (the same one-line FashionlabError, naming the key)."""
    data: dict[str, Any] = {"generated_by": generated_by,
                            "recipes": {name: None if r is None else recipe_dict(r) for name, r in recipes.items()}}
    if margin is not None:
        data["budget_margin"] = {"factor": margin.factor, "checks": margin.checks, "source": margin.source,
                                 "machine": margin.machine, "date": margin.date}
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    loads(text)
    return text


def write(path: str | Path, recipes: dict[str, Recipe | None], generated_by: str = GENERATED_BY,
          margin: Margin | None = None) -> None:
    """dumps() into PATH, atomically (a reader never sees half a file)."""
    atomic_write_text(path, dumps(recipes, generated_by, margin))
