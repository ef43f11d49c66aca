#!/usr/bin/env bash
# Reproduce every experiment of docs/tuning.md.
#
#   docs/tuning/run_experiments.sh [OUT_DIR] [STEP ...]
#
# OUT_DIR defaults to runs/tuning. STEPs: lrfind grid reg sched seeds epochs tune reuse figures
# (default: all, in that order).
# Each run goes into its own folder under OUT_DIR; a step whose output already exists is skipped, so the
# script can be re-run after an interruption. Runs one training at a time, one thread each (the guide's
# numbers were measured this way on a shared 2-core CPU). Set FASHIONLAB to use another executable and
# THREADS to use more threads (timings will differ; accuracies should not, up to float nondeterminism).
set -euo pipefail

OUT=${1:-runs/tuning}
shift || true
STEPS=${*:-lrfind grid reg sched seeds epochs tune reuse figures}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# fashionlab from $FASHIONLAB, else from PATH, else the repository's .venv (make run / make test create it)
FL=${FASHIONLAB:-$(command -v fashionlab || echo "$ROOT/.venv/bin/fashionlab")}
PY=${PYTHON:-$(dirname "$(command -v "$FL")")/python}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$OUT"

# The base of every experiment: CNN_2 with its recipe as measured (AdamW, one-cycle, label smoothing 0.1,
# flip/crop/erase, no TTA: pinned, the recipe has changed since), a stratified 10k-image subset, seed 0
# (SEED=1 train ... for the replicate runs; the seed also picks the split and the subset).
BASE=(--model cnn2 --augment flip,crop,erase --no-tta --train-subset 10000 --quiet)

timed() { local t0=$SECONDS; "$@"; echo "   $((SECONDS - t0)) s wall"; }

train() {  # train RUN_NAME [flags...]
  local name=$1; shift
  if [[ -f "$OUT/$name/test_metrics.json" ]]; then echo "skip $name (done)"; return; fi
  rm -rf "${OUT:?}/$name"
  echo "== $name: fashionlab train ${BASE[*]} --seed ${SEED:-0} $* --out $OUT/$name"
  timed nice -n 5 "$FL" train "${BASE[@]}" --seed "${SEED:-0}" "$@" --out "$OUT/$name"
}

for step in $STEPS; do
  case $step in
  lrfind)  # 1. LR range test: 200 steps, LR 1e-7 -> 10, batch 128, AdamW (the recipe's optimizer)
    if [[ -f "$OUT/lr_find/lr_find.json" ]]; then echo "skip lr_find (done)"; else
      echo "== lr_find"
      nice -n 5 "$FL" lr-find "${BASE[@]}" --seed 0 --out "$OUT/lr_find"
    fi ;;
  grid)    # 2. batch size x peak learning rate, 6 epochs each
    for bs in 64 256; do for lr in 1e-3 3e-3 1e-2 3e-2; do
      train "grid_bs${bs}_lr${lr}" --epochs 6 --batch-size "$bs" --lr "$lr"
    done; done ;;
  reg)     # 3. regularization: switch each regularizer off in turn, then all of them, 10 epochs each
    train reg_defaults --epochs 10
    train reg_no_dropout --epochs 10 --dropout 0
    train reg_no_wd --epochs 10 --weight-decay 0
    train reg_no_aug --epochs 10 --augment none
    train reg_all_off --epochs 10 --dropout 0 --weight-decay 0 --augment none --label-smoothing 0 ;;
  sched)   # 4. LR schedules, 10 epochs each (onecycle is reg_defaults)
    train sched_cosine --epochs 10 --scheduler cosine
    train sched_plateau --epochs 10 --scheduler plateau
    train sched_none --epochs 10 --scheduler none ;;
  seeds)   # a replicate with another seed (other split, subset, init and order) of defaults vs all off
    SEED=1 train seed1_reg_defaults --epochs 10
    SEED=1 train seed1_reg_all_off --epochs 10 --dropout 0 --weight-decay 0 --augment none --label-smoothing 0 ;;
  epochs)  # the recipe at 6 instead of 10 epochs (compare with reg_defaults)
    train epochs6_defaults --epochs 6 ;;
  tune)    # 5. a small Optuna study: 8 trials of 3 epochs on a 5k subset
    if [[ -f "$OUT/tune/summary.json" ]]; then echo "skip tune (done)"; else
      mkdir -p "$OUT/tune"
      echo "== tune"
      timed nice -n 5 "$FL" tune --model cnn2 --no-tta --train-subset 5000 --epochs 3 --seed 0 \
        --trials 8 --storage "sqlite:///$(cd "$OUT/tune" && pwd)/tune.db" --study guide --out "$OUT/tune" --quiet
    fi ;;
  reuse)   # retrain the study's best trial from its best.yaml, as its header says (same subset and epochs)
    if [[ -f "$OUT/tune_best_retrained/test_metrics.json" ]]; then echo "skip tune_best_retrained (done)"; else
      rm -rf "${OUT:?}/tune_best_retrained"
      echo "== tune_best_retrained"
      timed nice -n 5 "$FL" train --config "$OUT/tune/best.yaml" --train-subset 5000 \
        --quiet --out "$OUT/tune_best_retrained"
    fi ;;
  figures) # tables and plots from the runs' metrics.csv files (into OUT/figures)
    "$PY" "$HERE/make_figures.py" "$OUT" "$OUT/figures" ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
