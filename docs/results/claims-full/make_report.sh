#!/usr/bin/env bash
# The full-length claims report (issue 28), from the study's full run folders under runs/claims-full/ (made by
# run_study.py; not committed). `fashionlab compare` needs each run's test_probs.npy, which only the full folders
# hold: the committed docs/results/claims-full/<arm>/seed<N>/ folders keep config.json, metrics.csv,
# test_metrics.json and test_predictions.npy, enough for results_tables.py but not for compare.
# Copies report.html, summary.md and summary.json here, then regenerates the README section from summary.json.
set -euo pipefail
cd "$(dirname "$0")/../../.."
FL=${FL:-.venv/bin/fashionlab}
runs=()
for g in cnn2 no-augment no-bn no-dropout no-schedule cnn1; do  # the base first: each arm is tested against it
  for s in 0 1 2 3 4; do
    if [ -f "runs/claims-full/$g-seed$s/test_metrics.json" ]; then runs+=("runs/claims-full/$g-seed$s"); fi
  done
done
COLUMNS=100 $FL compare "${runs[@]}" --family base --out runs/claims-full/report
cp runs/claims-full/report/{report.html,summary.md,summary.json} docs/results/claims-full/
.venv/bin/python benchmarks/results_tables.py
