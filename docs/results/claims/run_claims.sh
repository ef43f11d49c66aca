#!/usr/bin/env bash
# The claims study (issue 15): does each ingredient of CNN_2's recipe help? Six groups x 3 seeds, 10 epochs each
# (the recipe's 30 do not fit the 2-core CPU's session; one length for every group, never a mix).
# Two trainings at a time, one thread each. Runs go to runs/claims/<group>-seed<N> (full folders), and the
# files the docs quote are copied to docs/results/claims/<group>/seed<N>/ as each run finishes.
# The same study as one command: fashionlab run --models cnn2 --epochs 10 --seeds 3 --variant ... (README).
set -uo pipefail
cd "$(dirname "$0")/../../.."
EPOCHS=${EPOCHS:-10}
FL=${FL:-.venv/bin/fashionlab}
declare -A FLAGS=(
  [cnn2]="--recipe cnn2"
  [no-augment]="--recipe cnn2 --label no-augment --augment none"
  [no-bn]="--recipe cnn2 --label no-bn --config docs/results/claims/no-bn.yaml"
  [no-dropout]="--recipe cnn2 --label no-dropout --dropout 0"
  [no-schedule]="--recipe cnn2 --label no-schedule --scheduler none"
  [cnn1]="--recipe cnn1"
)
one() {  # group seed
  local g=$1 s=$2 run=runs/claims/$1-seed$2 dst=docs/results/claims/$1/seed$2
  mkdir -p runs/claims "$dst"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $FL train ${FLAGS[$g]} --epochs "$EPOCHS" --seed "$s" --out "$run" --quiet \
    > "$dst/train.log" 2>&1
  echo "exit $?" >> "$dst/train.log"
  cp "$run"/{config.json,metrics.csv,test_metrics.json} "$dst"/ 2>/dev/null || true
}
export -f one; export EPOCHS FL
for s in 0 1 2; do for g in cnn2 no-augment no-bn no-dropout no-schedule cnn1; do echo "$g $s"; done; done \
  | FLAGS_DECL="$(declare -p FLAGS)" xargs -P 2 -L 1 bash -c 'eval "$FLAGS_DECL"; one "$0" "$1"'
