"""Command-line front end. Each subcommand is a small function; errors become one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from pathlib import Path

from fashionlab.config import DATA_OPTIONS
from fashionlab.config import add_arguments as add_train_arguments
from fashionlab.errors import ConfigError, FashionlabError
from fashionlab.runformat import CHECKPOINTS

# Commands that live in their own module: each defines add_arguments(parser) and run(args) -> exit code,
# and keeps heavy imports (onnxruntime, optuna) inside run().
PLUGIN_COMMANDS = {
    "predict": ("fashionlab.predict", "classify your own images with a trained run (or an exported .onnx)"),
    "export": ("fashionlab.export", "export a run's model to ONNX, torch.export (.pt2) or TorchScript"),
    "lr-find": ("fashionlab.lr_find", "LR range test: plot loss vs learning rate and suggest one"),
    "tune": ("fashionlab.tune", "Optuna hyperparameter search (scale out: several workers, one storage)"),
    "audit-labels": ("fashionlab.audit", "find likely label errors in the training data: K-fold out-of-sample "
                     "probabilities, then cleanlab (pip install 'fashionlab[audit]')"),
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def cmd_train(args: argparse.Namespace) -> int:
    from fashionlab.api import resolve_training  # the same resolution as fashionlab.train() in Python
    from fashionlab.config import given
    from fashionlab.train import train

    cfg, resume, trust = resolve_training(given(args), args.config_file, args.resume, args.trust_model_code,
                                          budget=args.budget)
    command = "fashionlab " + shlex.join(sys.argv[1:])
    train(cfg, command=command, resume=resume, verbose=not args.quiet, trust_model_code=trust)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fashionlab.evaluate import evaluate_run
    from fashionlab.runfolder import RunFolder

    run = RunFolder(args.run).require().path
    evaluate_run(run, args.checkpoint, device=args.device, trust_model_code=args.trust_model_code,
                 corruptions=args.corruptions)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fashionlab.errors import ConfigError
    from fashionlab.models import DESCRIPTIONS, MODELS, SIZE_NOTES, build_model, count_params, forward_mflops
    from fashionlab.models.external import ENTRY_POINT_GROUP, entry_point_models

    table = Table()  # names and numbers never wrap; a word longer than its prose column folds, never "…"
    table.add_column("model", no_wrap=True)
    table.add_column("params", no_wrap=True, justify="right")
    table.add_column("MFLOPs/image", no_wrap=True, justify="right")
    table.add_column("description", overflow="fold")
    table.add_column("sizes (--data)", overflow="fold")
    for name in MODELS:
        m = build_model(name)
        table.add_row(name, f"{count_params(m):,}", f"{forward_mflops(m):.1f}", DESCRIPTIONS[name], SIZE_NOTES[name])
    for name, ep in entry_point_models().items():  # installed packages' models: listing them imports them
        if name in MODELS:
            continue
        try:
            m = build_model(name)
            row = [f"{count_params(m):,}", f"{forward_mflops(m):.1f}"]
        except ConfigError as e:
            row = ["?", "?"]
            ep = f"{ep.value}: {e}"
        table.add_row(name, *row, f"from {ENTRY_POINT_GROUP} entry point {getattr(ep, 'value', ep)}", "")
    console = Console()
    console.print(table)
    console.print("Your own model: --model FILE.py:NAME or --model package.module:NAME (an nn.Module class or a "
                  "function returning one).")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table

    from fashionlab.measured import load
    from fashionlab.numfmt import accuracy_over_seeds, seconds
    from fashionlab.recipes import RECIPES

    # Measured figures ship with the package; benchmarks/results_tables.py writes them from committed runs.
    measured = load().recipes
    table = Table("recipe", "model", "epochs", "test accuracy", "time")
    for column in table.columns[3:]:
        column.no_wrap = True  # figures are never cut or folded
    details = []
    for name, r in RECIPES.items():
        rest = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("about", "model", "epochs", "ensemble"))
        lines = [rest]
        m = measured.get(name)
        if m is not None:
            acc = accuracy_over_seeds(m.accuracy_mean, m.accuracy_sd, m.n_seeds)
            secs = ("not timed" if m.seconds is None else
                    f"{seconds(m.seconds, 0)} ({'wall' if m.seconds_kind.startswith('wall') else 'train'})")
            lines.append(f"measured: accuracy {m.accuracy_source}; time {m.seconds_kind} "
                         f"({m.seconds_source}); {m.machine}, torch {m.torch}, {m.date}")
        else:
            acc = secs = "not measured"
        model = r["model"] + (f" x{r['ensemble']}" if r.get("ensemble", 1) > 1 else "")
        table.add_row(name, model, str(r["epochs"]), acc, secs)
        details.append((f"[bold]{name}[/bold]: {r['about']}", "\n".join(lines)))
    console = Console()
    console.print(table)
    for head, text in details:
        console.print(head, highlight=False)
        console.print(Padding(text, (0, 0, 0, 2)), highlight=False)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from fashionlab.config import FASHION_MNIST, check_option, data_folder
    from fashionlab.data.load import load_dataset
    from fashionlab.files import check_outside

    spec = getattr(args, "dataset", FASHION_MNIST)
    if args.locate:
        if args.export_imagefolder is not None:
            raise ConfigError("--export-imagefolder goes alone: not with --grid or --locate")
        if spec != FASHION_MNIST:
            raise ConfigError("--locate finds Fashion-MNIST's files; --data names your dataset already")
        from fashionlab.data import locate

        src = locate(args.data_dir, download=False, progress=False)
        print(f"{src.path} ({src.origin})")
        return 0
    check_option("val_fraction", args.val_fraction)
    loading = getattr(args, "data_loading", "auto")
    workers = check_option("data_workers", getattr(args, "data_workers", None))
    if args.export_imagefolder is not None:  # the dataset as PNGs that read back in the same order
        from fashionlab.data.own import check_export_folder, export_imagefolder

        if args.grid:
            raise ConfigError("--export-imagefolder goes alone: not with --grid or --locate")
        folder = Path(args.export_imagefolder)
        check_outside(folder, data_folder(spec), "--export-imagefolder")
        check_export_folder(folder)  # before loading anything: a bad DIR costs nothing and creates nothing
        ds = load_dataset(spec, data_dir=args.data_dir, image_size=getattr(args, "image_size", None),
                          channels=getattr(args, "channels", None), skip_bad=bool(getattr(args, "skip_bad", False)),
                          loading=loading, workers=workers, download=not args.no_download,
                          progress=not args.json)
        done = export_imagefolder(ds, folder, progress=not args.json)
        if args.json:
            print(json.dumps(done))
            return 0
        val = f", {done['val']} val" if "val" in done else ""
        print(f"wrote {done['train']} train{val} and {done['test']} test PNGs in ImageFolder layout -> {folder} "
              f"(read back in the same order: fashionlab train --data {shlex.quote(str(folder))} ...)")
        return 0
    if args.grid:
        from fashionlab.files import check_new_file

        check_outside(Path(args.grid), data_folder(spec), "--grid")
        check_new_file(Path(args.grid), "--grid", suffixes=(".png",))  # before any work, never over a file
    # The card lists bad files instead of stopping at the first: `data` is where one looks for them.
    ds = load_dataset(spec, data_dir=args.data_dir, image_size=getattr(args, "image_size", None),
                      channels=getattr(args, "channels", None), skip_bad=spec != FASHION_MNIST,
                      loading=loading, workers=workers, download=not args.no_download,
                      progress=not args.json)
    from fashionlab.data.inspect import card, save_grid

    info = card(ds, args.val_fraction, args.seed)
    if args.json:
        print(json.dumps(info))
    else:
        print_data_card(info)
    if args.grid:
        save_grid(ds, args.grid)
        if not args.json:
            print(f"sample grid -> {args.grid}")
    return 0


def print_data_card(c: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fashionlab.data.inspect import card_problems

    console = Console()
    say = lambda text: console.print(escape(text), highlight=False)  # noqa: E731 - names are the user's own text
    origin = f", found by {c['origin']}" if c.get("origin") else ""
    say(f"dataset: {c['name']} ({c['kind']}: {c['path']}{origin})")
    say(f"{len(c['classes'])} classes, {c['channels']} channel{'s' if c['channels'] > 1 else ''}, "
        f"{c['size'][0]}x{c['size'][1]} pixels" + (" (test split: a stratified holdout)" if c["holdout"] else ""))
    mean, std = c["mean"], c["std"]
    shown = (f"{mean:.4f}  std {std:.4f}" if isinstance(mean, float) else
             " ".join(f"{m:.4f}" for m in mean) + "  std " + " ".join(f"{v:.4f}" for v in std))
    say(f"train-split pixel mean {shown}")
    counts = c["counts"]
    table = Table("class", *counts)
    for cls in c["classes"]:
        table.add_row(escape(cls), *(str(counts[sp][cls]) for sp in counts))
    table.add_row("total", *(str(sum(counts[sp].values())) for sp in counts), style="bold")
    console.print(table)
    problems = card_problems(c)
    if c["ignored_files"]:
        say(f"ignored {len(c['ignored_files'])} files that are not images, e.g. " + ", ".join(c["ignored_files"][:3]))
    say("problems: none found" if not problems else "problems:")
    for line in problems:
        say(f"  - {line}")


def cmd_compare(args: argparse.Namespace) -> int:
    from fashionlab.report import compare_runs, default_report_dir, print_summary

    out = Path(args.out) if args.out else default_report_dir()
    summary = compare_runs(args.runs, out, family=args.family)
    print_summary(summary)
    print(f"report: {out / 'report.html'}\n        {out / 'summary.md'}\n        {out / 'summary.json'}")
    return 0


FAMILY_HELP = ("pairs tested and Holm-adjusted together: base = each group against the first, all-pairs = "
               "every pair (default: base when later groups carry a --label or --variant name, else all-pairs)")


def cmd_run(args: argparse.Namespace) -> int:
    from fashionlab.study import run_study

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.quick_minutes is not None and (not args.quick or args.quick_minutes <= 0):
        raise ConfigError("--quick-minutes M needs --quick and M > 0")
    data_options = {k: v for k, v in vars(args).items() if k in DATA_OPTIONS}
    run_study(models, seeds=args.seeds, quick=args.quick, out=args.out, data_dir=args.data_dir,
              device=args.device, command="fashionlab " + shlex.join(sys.argv[1:]), variants=args.variant,
              epochs=args.epochs, family=args.family, quick_minutes=args.quick_minutes, data_options=data_options,
              corruptions=args.corruptions)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; a plugin command's module (which may import torch) is imported only when it is `command`,
    so `fashionlab --help` and `fashionlab train --help` start without torch."""
    from fashionlab.about import __version__

    parser = Parser(prog="fashionlab", description="Train, evaluate and compare CNNs on Fashion-MNIST.")
    parser.add_argument("--version", action="version", version=f"fashionlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("data", help="the dataset card: counts, sizes, statistics, problems; a sample grid")
    add_train_arguments(p, only=DATA_OPTIONS)
    p.add_argument("--json", action="store_true", help="print the card as one JSON object")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--grid", default=None, metavar="FILE",
                   help="write a sample grid to FILE (.png; never over an existing file)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.add_argument("--locate", action="store_true", help="print where the data is (no download) and exit")
    p.add_argument("--export-imagefolder", default=None, metavar="DIR",
                   help="write the dataset as PNGs in ImageFolder layout (DIR/train/<class>/00000.png, DIR/test/...) "
                        "into DIR, a new or empty folder; files are named so that --data DIR reads them in the same "
                        "order, so training on DIR matches training on the original data")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list models with parameters and forward MFLOPs per image")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("recipes", help="list named recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("train", help="train a model into a run folder, then evaluate it on the test set")
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a stopped run from last.pt")
    p.add_argument("--trust-model-code", action="store_true",
                   help="with --resume: allow importing the run's external model code (or give the same --model)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--budget", metavar="DURATION", default=None,
                   help="train the most accurate measured recipe estimated to fit in DURATION here (90s, 5m, 1h30m); "
                        "not with --recipe/--model")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run folder's checkpoint on the test set")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    p.add_argument("--device", default=None, choices=("cpu", "cuda", "mps"))
    p.add_argument("--trust-model-code", action="store_true",
                   help="allow importing the run's external model code (FILE.py:NAME / module:NAME models)")
    p.add_argument("--corruptions", action="store_true",
                   help="also evaluate on the seeded corruption suite (noise, blur, contrast, brightness, rotation, "
                        "translation, flip, pixelation, JPEG; severities 1-5): RUN_DIR/corruptions.json")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="compare run folders: report.html, summary.md, summary.json")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=None, metavar="REPORT_DIR", help="default reports/compare-<timestamp>")
    p.add_argument("--family", choices=("base", "all-pairs"), default=None, help=FAMILY_HELP)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("run", help="the main job: train each model, evaluate, write the comparison report")
    p.add_argument("--models", default="cnn1,cnn2", help="comma list of models (default cnn1,cnn2)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per model (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="time-boxed: times a few steps of each model here, then picks epochs (at most 3) and, if "
                        "needed, a stratified training subset so the whole job trains in about --quick-minutes")
    p.add_argument("--quick-minutes", type=float, default=None, metavar="M", help="--quick's time box (default 2)")
    p.add_argument("--epochs", type=int, default=None, help="one training length for every model and variant")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE...]",
                   help="also train each model with these options changed (repeatable; JSON values; keys that are "
                        "not training options go to the model, e.g. no-bn=bn=false); the base is always included")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<timestamp>)")
    p.add_argument("--family", choices=("base", "all-pairs"), default=None, help=FAMILY_HELP)
    p.add_argument("--corruptions", action="store_true",
                   help="also evaluate every run on the seeded corruption suite (as evaluate --corruptions); the "
                        "report then compares robustness per corruption")
    add_train_arguments(p, only=DATA_OPTIONS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_run)
    for name, (module, help_) in PLUGIN_COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == command:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command=next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FashionlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback for users; the debug switch shows it
        if os.environ.get("FASHIONLAB_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"error: unexpected {type(e).__name__}: {first} (set FASHIONLAB_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
