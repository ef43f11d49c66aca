#!/usr/bin/env bash
# Did a refactor change any result? Trains the same five cases with the code at BEFORE (a commit) and with this
# checkout, one thread each, and compares metrics.csv (every column but seconds), the test predictions and
# probabilities byte for byte. Cases: cnn1, cnn2 (rotate/crop/erase, EMA, TTA, cosine), a 2-member ensemble, a run
# stopped after one epoch and resumed for a second, and a `fashionlab run` with a variant.
#   benchmarks/same_results.sh BEFORE [WORKDIR]     (prints one line per case and exits 1 on any difference)
set -uo pipefail
before=${1:?usage: same_results.sh BEFORE_COMMIT [WORKDIR]}
work=${2:-$(mktemp -d /tmp/same-results.XXXX)}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
git -C "$here" worktree add -f --detach "$work/before-src" "$before" >/dev/null 2>&1 || { echo "cannot check out $before"; exit 2; }
trap 'git -C "$here" worktree remove --force "$work/before-src" >/dev/null 2>&1' EXIT
export OMP_NUM_THREADS=1 FASHIONLAB_DEBUG=1
common="--train-subset 2000 --seed 0 --quiet"
run_case() {  # side case args...
  local side=$1 case=$2; shift 2
  local src=$here/src; [ "$side" = before ] && src=$work/before-src/src
  local out=$work/$side/$case
  mkdir -p "$work/$side"
  case $case in
    resumed)
      PYTHONPATH=$src "$py" -m fashionlab train --model cnn1 --epochs 1 $common --out "$out" >/dev/null &&
      PYTHONPATH=$src "$py" -m fashionlab train --resume "$out" --epochs 2 --quiet >/dev/null ;;
    variant)
      PYTHONPATH=$src "$py" -m fashionlab run --models cnn1 --epochs 1 --seeds 1 --variant tiny=train_subset=1000 \
        --out "$out" >/dev/null ;;
    *) PYTHONPATH=$src "$py" -m fashionlab train "$@" $common --out "$out" >/dev/null ;;
  esac
}
compare() {  # case: every run folder under it, matched by relative path
  local case=$1 bad=0 n=0
  while IFS= read -r m; do
    rel=${m#"$work/before/$case"}; a=$work/before/$case$rel; b=$work/after/$case$rel; d=$(dirname "$rel")
    n=$((n + 1))
    diff -q <(cut -d, -f1-6 "$a") <(cut -d, -f1-6 "$b") >/dev/null || { echo "  $d: metrics.csv differs"; bad=1; }
    for f in test_predictions.npy test_probs.npy; do
      [ -f "$(dirname "$a")/$f" ] || continue
      cmp -s "$(dirname "$a")/$f" "$(dirname "$b")/$f" || { echo "  $d: $f differs"; bad=1; }
    done
  done < <(find "$work/before/$case" -name metrics.csv | sort)
  [ $n -gt 0 ] || { echo "$case: no runs (training failed?)"; return 1; }
  [ $bad = 0 ] && echo "$case: identical ($n run folders)" || echo "$case: DIFFERENT"
  return $bad
}
status=0
for side in before after; do
  run_case $side cnn1 --model cnn1 --epochs 2
  run_case $side cnn2 --model cnn2 --epochs 2 --augment flip,rotate,crop,erase --ema 0.9 --tta --scheduler cosine
  run_case $side ensemble --recipe fast --ensemble 2 --epochs 1
  run_case $side resumed
  run_case $side variant
done
for c in cnn1 cnn2 ensemble resumed variant; do compare $c || status=1; done
echo "work folder: $work"
exit $status
