"""Ensembles: `--ensemble N` trains N members one after another and predicts with the mean of their softmax.

Each member is an ordinary run folder inside the ensemble's, RUN/members/member<k>, trained with seed + k on the
ensemble's one split (split_seed), so it trains, resumes and evaluates like any run. After the last member, RUN
gets what every run folder has: checkpoints/best.pt (a Classifier whose net is models.Ensemble of the members'
best weights), metrics.csv (each epoch's mean over the members; seconds: their sum) and the test evaluation.
Evaluate, predict and export need nothing more: they load best.pt through evaluate.load_run_model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from fashionlab.config import TrainConfig
from fashionlab.data.load import load_for
from fashionlab.errors import ConfigError
from fashionlab.evaluate import evaluate_run, load_run_model
from fashionlab.files import check_outside
from fashionlab.models import Classifier, Ensemble
from fashionlab.runfolder import RunFolder
from fashionlab.runstart import (
    Context,
    Dist,
    Interrupted,
    claim_run_dir,
    default_run_dir,
    distributed,
    epochs_since_best,
    make_context,
    run_record,
    save_best,
)
from fashionlab.trainsetup import validation_metrics


def member_configs(cfg: TrainConfig, folder: RunFolder) -> list[TrainConfig]:
    """Member k: the ensemble's options with seed + k on the ensemble's split (each logs its own --tensorboard)."""
    return [dataclasses.replace(cfg, ensemble=1, seed=cfg.seed + k, split_seed=cfg.data_seed(),
                                out=str(folder.member(k).path)) for k in range(cfg.ensemble)]


def finished(member: TrainConfig) -> bool:
    """All its epochs done, or stopped early by --patience (the training loop's rule, replayed from its history)."""
    folder = RunFolder(member.out)
    rows = folder.history() if folder.exists() and folder.has_checkpoint("best") else []
    if len(rows) >= member.epochs:
        return True
    return (member.patience is not None and bool(rows)
            and epochs_since_best([r["val_acc"] for r in rows], member.val_fraction > 0) >= member.patience)


def train_ensemble(cfg: TrainConfig, train: Callable[..., Path], *, command: str, resume: bool,
                   data, verbose: bool, evaluate_test: bool, trust_model_code: bool,
                   architecture: nn.Module | None, corruptions: bool = False) -> Path:
    """`train`: the function that trains one run (train.train), called for each member that is not finished: to
    resume it where an interrupted attempt saved it, or to start it; never on the test set."""
    dist = Dist.from_env()
    if dist.world > 1:
        raise ConfigError("--ensemble trains its members one after another in one process; run it without torchrun")
    folder = RunFolder(cfg.out or default_run_dir(cfg))
    check_outside(folder.path, cfg.data_folder(), "run folder")
    cfg = dataclasses.replace(cfg, out=str(folder.path))
    members = member_configs(cfg, folder)
    with claim_run_dir(folder, resume), distributed(dist, cfg) as device:
        ds = data or load_for(cfg, progress=verbose)
        ctx = make_context(cfg, dist, device, ds, folder, verbose)
        if not folder.exists():
            folder.write_config(run_record(ctx, ds, command), ds.test_files, ds.skipped)
        for k, member in enumerate(members):
            if finished(member):
                continue
            ctx.log(f"ensemble member {k + 1} of {cfg.ensemble}: seed {member.seed} -> {member.out}")
            try:
                train(member, resume=RunFolder(member.out).exists(), evaluate_test=False, command=command, data=ds,
                      verbose=verbose, trust_model_code=trust_model_code,
                      architecture=copy.deepcopy(architecture) if architecture is not None else None)
            except Interrupted as e:  # the way back is the ensemble's resume, which resumes this member
                raise Interrupted(f"{e.where} of ensemble member {k + 1}", e.signum, folder.path) from None
        assemble(ctx, members, architecture)
        if evaluate_test:
            evaluate_run(folder.path, "best", data=ds, device=device, verbose=verbose, trust_model_code=True,
                         net=copy.deepcopy(architecture) if architecture is not None else None,
                         corruptions=corruptions)
    return folder.path


def assemble(ctx: Context, members: list[TrainConfig], architecture: nn.Module | None) -> None:
    """The ensemble's best.pt (the members' best weights behind one normalization: they share the split, so its
    statistics) and metrics.csv (the member mean of each epoch)."""
    nets, epochs = [], []
    for m in members:
        model, ckpt = load_run_model(Path(m.out), "best", ctx.device, trust_model_code=True,
                                     net=copy.deepcopy(architecture) if architecture is not None else None)
        nets.append(model.net)
        epochs.append(ckpt.get("epoch", 0))
    model = Classifier(Ensemble(nets), ctx.splits.mean, ctx.splits.std).to(ctx.device)
    _, val_acc = validation_metrics(model, ctx.splits, ctx.cfg, ctx.precision, ctx.device)
    save_best(ctx, model, max(epochs), val_acc)
    ctx.folder.write_history(mean_rows([RunFolder(m.out).history() for m in members]))
    ctx.log(f"ensemble of {len(members)}: validation accuracy {val_acc:.4f}")


def mean_rows(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per epoch, the members' mean of each column and the sum of their seconds (members may stop at different
    epochs under --patience: each epoch averages the members that trained it)."""
    rows = []
    for e in range(max(map(len, histories))):
        here = [h[e] for h in histories if len(h) > e]
        row = {k: sum(r[k] for r in here) / len(here) for k in here[0]}
        rows.append(row | {"epoch": e + 1, "seconds": sum(r["seconds"] for r in here)})
    return rows
