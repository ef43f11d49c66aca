#!/usr/bin/env bash
# The claims report, from the study's full run folders under runs/claims/ (made by run_claims.sh; not committed,
# as their checkpoints and test arrays are large). Copies report.html, summary.md and summary.json here, then
# regenerates the README section from summary.json.
set -euo pipefail
cd "$(dirname "$0")/../../.."
FL=${FL:-.venv/bin/fashionlab}
runs=()
for g in cnn2 no-augment no-bn no-dropout no-schedule cnn1; do  # the base first: the report's "versus the base"
  for s in 0 1 2; do
    if [ -f "runs/claims/$g-seed$s/test_metrics.json" ]; then runs+=("runs/claims/$g-seed$s"); fi
  done
done
COLUMNS=100 $FL compare "${runs[@]}" --out runs/claims/report
cp runs/claims/report/{report.html,summary.md,summary.json} docs/results/claims/
.venv/bin/python benchmarks/results_tables.py
