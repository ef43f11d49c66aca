"""`fashionlab audit-labels`: training items whose label is likely wrong, by confident learning (cleanlab).

Every training item needs a predicted probability from a model that never trained on it, so the items are dealt
into K stratified folds (seeded) and K ordinary runs are trained, run k with fold k's items left out by --exclude
(OUT/fold-<k>/, listing OUT/heldout-fold-<k>.csv). Each run then predicts its held-out items with the softmax of its
best checkpoint, preprocessed and normalised as the run was. cleanlab's `find_label_issues` ranks the suspicious
labels from these out-of-sample probabilities (`return_indices_ranked_by="self_confidence"`), and
`get_label_quality_scores` gives each its score (the probability of its given label: lower is more suspicious).

Outputs, in OUT (a new folder, or one an earlier audit-labels made):
    label_issues.csv    index,given,suggested,score: most suspicious first. index: the item's place among the
                        dataset's training items in file order (what --exclude takes); given, suggested: class
                        names; suggested is the out-of-sample argmax
    summary.json        counts by given -> suggested pair, n_items, n_flagged, folds, model, fold_runs, ...
    label_issues.html   the top 100 as thumbnails with both labels (self-contained)
    pred_probs.npy      the out-of-sample probabilities [n_items, n_classes] (float32), and labels.npy the given
                        labels: cleanlab can be run again on them

Resuming: the same command again continues where it stopped: a finished fold is skipped, an interrupted one
resumes from its last checkpoint (fashionlab train --resume's machinery), and a fold trained with other options is
refused. Items in a fold run's validation split are not trained on either; that only costs that run some data.

cleanlab is an optional dependency: `pip install 'fashionlab[audit]'`; `require()` checks for it.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import io
import time
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from fashionlab.config import TrainConfig, given, resolve
from fashionlab.config import add_arguments as add_train_arguments
from fashionlab.errors import ConfigError, FashionlabError, RunError, require_package

INSTALL = "pip install 'fashionlab[audit]'"
DEFAULT_FOLDS = 3
MAX_FOLDS = 50  # each fold is a whole training run
GALLERY = 100  # label_issues.html shows this many, most suspicious first
ISSUES, SUMMARY, HTML, PROBS, LABELS = "label_issues.csv", "summary.json", "label_issues.html", "pred_probs.npy", \
    "labels.npy"
OUTPUTS = (ISSUES, SUMMARY, HTML, PROBS, LABELS)
COLUMNS = ("index", "given", "suggested", "score")
RANKED_BY = "self_confidence"


def require() -> None:
    """Raise a one-line ConfigError unless cleanlab can be imported."""
    require_package("audit-labels", "cleanlab", ("cleanlab", "cleanlab.filter:find_label_issues",
                                                  "cleanlab.rank:get_label_quality_scores"), INSTALL)


def check_folds(folds: Any) -> int:
    if isinstance(folds, bool) or not isinstance(folds, int):
        raise ConfigError(f"--folds must be an integer, got {folds!r}")
    if not 2 <= folds <= MAX_FOLDS:
        raise ConfigError(f"--folds must be >= 2 and <= {MAX_FOLDS} (every item is predicted by a model trained "
                          f"without it: with one fold there is nothing left to train on), got {folds}")
    return folds


def assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 to folds - 1) of each item: each class in a seeded random order, dealt round robin (each class
    continuing the deal where the last stopped), so every fold holds about 1/folds of every class and the fold
    sizes differ by at most one."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    dealt = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        out[idx] = (dealt + np.arange(len(idx))) % folds
        dealt += len(idx)
    return out


@dataclass
class Audit:
    """What an audit wrote: its folder and the flagged items, most suspicious first."""

    out: Path
    issues: list[dict[str, Any]]  # {"index", "given", "suggested", "score"} as in label_issues.csv
    summary: dict[str, Any]


def audit_labels(cfg: TrainConfig, out: Path, folds: int = DEFAULT_FOLDS, *, command: str = "", data=None,
                 verbose: bool = False, log=print) -> Audit:
    """K-fold out-of-sample probabilities for every training item of cfg's dataset, then cleanlab; see the module.

    cfg: the training options of every fold run (its `out` and `exclude` are set per fold). verbose: the fold runs'
    own epoch lines too; log: where the one line per fold goes (None: nowhere)."""
    from fashionlab.data.load import load_for
    from fashionlab.files import check_new_folder, check_outside, make_folder, undo_folder, write_new_file
    from fashionlab.runfolder import RunFolder

    say = log or (lambda _text: None)
    require()
    folds = check_folds(folds)
    if cfg.exclude is not None:
        raise ConfigError("audit-labels leaves out each fold in turn itself; --exclude is not for it (audit the "
                          "data first, then train --exclude with its label_issues.csv)")
    out = Path(out)
    check_outside(out, cfg.data_folder(), "--out")
    check_new_folder(out, "--out")  # new, empty, or made by fashionlab (an audit to continue)
    if RunFolder(out).exists():
        raise RunError(f"--out {out} is a run folder; give audit-labels a folder of its own")
    ds = data or load_for(cfg, progress=verbose)
    labels = ds.train_y.cpu().numpy().astype(np.int64)
    fold = assign_folds(labels, folds, cfg.data_seed())
    heldout = [np.flatnonzero(fold == k) for k in range(folds)]
    csvs = [out / f"heldout-fold-{k + 1}.csv" for k in range(folds)]
    runs = [out / f"fold-{k + 1}" for k in range(folds)]

    fresh_marker = not (out / ".fashionlab").exists()
    created = make_folder(out)
    written: list[str] = []
    try:
        for path, idx in zip(csvs, heldout):
            text = "index\n" + "".join(f"{i}\n" for i in idx)
            if path.exists():
                if path.read_bytes() != text.encode():
                    raise RunError(f"{out} holds an audit with other folds or data ({path.name} differs); give the "
                                   "same --data, --folds and --seed again, or choose another --out")
            else:
                write_new_file(path, text.encode())
                written.append(path.name)
        configs = [fold_config(cfg, runs[k], csvs[k]) for k in range(folds)]
    except BaseException:
        if not any(RunFolder(r).exists() for r in runs):
            undo_folder(out, created, written + ([".fashionlab"] if fresh_marker else []))
        raise

    say(f"audit-labels: {folds} folds of {cfg.model} over {len(labels):,} training items -> {out}")
    probs = np.zeros((len(labels), len(ds.classes)), dtype=np.float32)
    fold_records = []
    for k in range(folds):
        t0 = time.perf_counter()
        try:
            done = train_fold(configs[k], command=command, data=ds, verbose=verbose)
        except FashionlabError:
            if not any(RunFolder(r).exists() for r in runs):  # the first fold failed to start: leave nothing
                undo_folder(out, created, written + ([".fashionlab"] if fresh_marker else []))
            raise
        probs[heldout[k]] = heldout_probs(runs[k], ds, heldout[k])
        acc = float((probs[heldout[k]].argmax(1) == labels[heldout[k]]).mean()) if len(heldout[k]) else float("nan")
        fold_records.append({"run": str(runs[k]), "heldout": int(len(heldout[k])), "heldout_accuracy": acc})
        say(f"fold {k + 1}/{folds}: {done}, {len(heldout[k]):,} held-out items predicted, accuracy {acc:.4f} "
            f"({time.perf_counter() - t0:.0f} s) -> {runs[k]}")

    issues, summary = find_issues(labels, probs, list(ds.classes))
    summary = summary | {
        "folds": folds, "model": cfg.model, "seed": cfg.data_seed(), "fold_runs": [str(r) for r in runs],
        "fold_heldout_accuracy": [r["heldout_accuracy"] for r in fold_records],
        "heldout_accuracy": float((probs.argmax(1) == labels).mean()),
        "data": {"spec": cfg.dataset, "test_sha256": ds.test_sha256,
                 **({"fingerprint": fp} if (fp := (getattr(ds, "identity", None) or {}).get("fingerprint")) else {})},
        "command": command, "files": list(OUTPUTS),
    }
    write_outputs(out, issues, summary, probs, labels, ds)
    say(f"{summary['n_flagged']:,} of {len(labels):,} labels flagged -> {out / ISSUES}, {out / HTML}")
    return Audit(out, issues, summary)


def fold_config(cfg: TrainConfig, run: Path, heldout_csv: Path) -> TrainConfig:
    """Fold k's run: the audit's options, its held-out items excluded, into OUT/fold-<k>. A fold that was started
    before continues with its saved options, which must be these (epochs and patience may change, as for --resume)."""
    from fashionlab.runfolder import RunFolder
    from fashionlab.runstart import resume_config

    # The held-out list by its absolute path: the fold resumes from any working directory, and the same audit
    # given OUT as a relative or an absolute path is the same fold.
    fold = dataclasses.replace(cfg, exclude=str(heldout_csv.absolute()), out=str(run))
    if not RunFolder(run).exists():
        return fold.validate()
    try:
        return resume_config(run, fold.to_dict())
    except ConfigError as e:
        raise ConfigError(f"{run} was trained with other options ({str(e).rpartition('cannot change ')[2]}); give "
                          "the same options again, or choose another --out") from None


def train_fold(cfg: TrainConfig, *, command: str, data, verbose: bool) -> str:
    """Train, resume or skip one fold's run; what was done, in words."""
    from fashionlab.ensemble import finished
    from fashionlab.runfolder import RunFolder
    from fashionlab.runstart import Interrupted
    from fashionlab.train import train

    folder = RunFolder(cfg.out)
    resume = folder.exists()
    if resume and finished(cfg) and folder.test_metrics() is not None:
        return "already trained"
    try:
        train(cfg, command=command, resume=resume, data=data, verbose=verbose, trust_model_code=True)
    except Interrupted as e:  # the way back is the audit's own command, which resumes this fold
        err = RunError(f"{e.args[0].split(':')[0]} in {cfg.out}: state saved; run the same audit-labels command "
                       "again to continue")
        err.exit_code = e.exit_code
        raise err from None
    epochs = len(folder.history())
    return f"{'resumed and finished' if resume else 'trained'} {epochs} epoch{'' if epochs == 1 else 's'}"


def heldout_probs(run: Path, ds, idx: np.ndarray) -> np.ndarray:
    """Softmax of the run's best checkpoint on training items `idx`, predicted as evaluation predicts the test set
    (the run's normalisation, precision and TTA)."""
    import torch

    from fashionlab.cpugraph import CpuGraph
    from fashionlab.data.load import take
    from fashionlab.device import inference_precision, resolve_device
    from fashionlab.evaluate import load_run_model, predict_logits
    from fashionlab.runfolder import RunFolder

    config = RunFolder(run).config()
    device = resolve_device(config["device"])
    model, _ = load_run_model(run, "best", device, trust_model_code=True)
    logits = predict_logits(model, take(ds.train_x, torch.from_numpy(idx)), device=device,
                            precision=inference_precision(config["precision"], device), tta=config["tta"],
                            channels_last=config["channels_last"], graph=CpuGraph(model))
    return torch.softmax(logits.double(), 1).float().numpy()


def find_issues(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> tuple[list[dict[str, Any]], dict]:
    """cleanlab's label issues, most suspicious first, and the summary's counts."""
    import cleanlab
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    p = probs.astype(np.float64)
    p /= p.sum(1, keepdims=True)  # exactly 1 per row in float64: float32 softmax sums are off by ~1e-7
    # n_jobs=1: cleanlab's worker pool would fork this process, whose torch threads a fork can deadlock.
    ranked = find_label_issues(labels, p, return_indices_ranked_by=RANKED_BY, n_jobs=1)
    scores = get_label_quality_scores(labels, p, method=RANKED_BY)
    suggested = p.argmax(1)
    issues = [{"index": int(i), "given": classes[labels[i]], "suggested": classes[suggested[i]],
               "score": float(scores[i])} for i in ranked]
    pairs = Counter((r["given"], r["suggested"]) for r in issues)
    summary = {
        "n_items": int(len(labels)), "n_flagged": len(issues), "classes": classes,
        "pairs": [{"given": g, "suggested": s, "count": n}
                  for (g, s), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))],
        "method": {"issues": f"cleanlab.filter.find_label_issues(labels, pred_probs, "
                             f"return_indices_ranked_by={RANKED_BY!r})",
                   "score": f"cleanlab.rank.get_label_quality_scores(labels, pred_probs, method={RANKED_BY!r}): "
                            "lower is more suspicious",
                   "suggested": "argmax of the out-of-sample probabilities"},
        "cleanlab": cleanlab.__version__,
    }
    return issues, summary


def issues_csv(issues: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in issues:
        w.writerow([r["index"], r["given"], r["suggested"], f"{r['score']:.6g}"])
    return buf.getvalue()


def write_outputs(out: Path, issues: list[dict[str, Any]], summary: dict[str, Any], probs: np.ndarray,
                  labels: np.ndarray, ds) -> None:
    from fashionlab.files import atomic_write_bytes, atomic_write_json, atomic_write_text

    for name, arr in ((PROBS, probs.astype(np.float32)), (LABELS, labels.astype(np.int64))):
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(out / name, buf.getvalue())
    atomic_write_text(out / ISSUES, issues_csv(issues))
    atomic_write_text(out / HTML, render_html(issues[:GALLERY], summary, ds))
    atomic_write_json(out / SUMMARY, summary)  # last: its presence says the audit is complete


def render_html(top: list[dict[str, Any]], summary: dict[str, Any], ds) -> str:
    """label_issues.html: the most suspicious items as thumbnails with both labels, in the compare report's style."""
    import torch

    from fashionlab.data.load import take
    from fashionlab.data.stream import materialize
    from fashionlab.report.figures import thumbnail_png
    from fashionlab.report.html import CSS

    idx = torch.tensor([r["index"] for r in top], dtype=torch.int64)
    images = materialize(take(ds.train_x, idx)).cpu().numpy() if len(top) else []
    tiles = []
    for r, image in zip(top, images):
        uri = "data:image/png;base64," + base64.b64encode(thumbnail_png(image)).decode("ascii")
        given_, suggested = escape(r["given"]), escape(r["suggested"])
        tiles.append(f'<figure><img src="{uri}" alt="training item {r["index"]}: labelled {given_}, likely '
                     f'{suggested}"><figcaption>#{r["index"]}<br>given: {given_}<br><span class="pred">suggested: '
                     f'{suggested}</span><br>score {r["score"]:.3f}</figcaption></figure>')
    pairs = "".join(f"<tr><td>{escape(p['given'])}</td><td>{escape(p['suggested'])}</td>"
                    f'<td class="num">{p["count"]:,}</td></tr>' for p in summary["pairs"][:20])
    gallery = f'<div class="gallery">{"".join(tiles)}</div>' if tiles else '<p class="note">No label issues found.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fashionlab audit-labels: {escape(summary["model"])}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>Likely label errors</h1>
<p class="meta">{summary["n_flagged"]:,} of {summary["n_items"]:,} training items flagged by cleanlab
 {escape(summary["cleanlab"])} from out-of-sample probabilities of {escape(summary["model"])}
 ({summary["folds"]} folds; held-out accuracy {summary["heldout_accuracy"]:.4f})</p>
</header>
<section id="gallery">
<h2>The {len(top)} most suspicious</h2>
<p class="note">Most suspicious first. #: the item's index among the dataset's training items in file order (as in
label_issues.csv and --exclude); score: the out-of-sample probability of the given label.</p>
{gallery}
</section>
<section id="pairs">
<h2>Given → suggested</h2>
<table><thead><tr><th>given</th><th>suggested</th><th class="num">flagged</th></tr></thead>
<tbody>{pairs}</tbody></table>
</section>
</main>
</body>
</html>
"""


# ---------------------------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help=f"K: trainings, each without one K-th of the training items, which it then predicts "
                             f"(default {DEFAULT_FOLDS}, at least 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--verbose", action="store_true", help="also each fold run's epoch lines")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    require()  # before anything is resolved or read
    check_folds(args.folds)
    cfg = resolve(given(args), args.config_file)
    out = Path(cfg.out or f"runs/audit-{cfg.model.rsplit(':', 1)[-1]}-{time.strftime('%Y%m%d-%H%M%S')}")
    audit_labels(dataclasses.replace(cfg, out=None), out, args.folds, command="fashionlab " + shlex.join(sys.argv[1:]),
                 verbose=args.verbose and not args.quiet, log=None if args.quiet else print)
    return 0
