#!/usr/bin/env bash
# Learning curves of candidate CPU sizes for the MNIST baseline (issue: presets chosen by measurement).
# Each candidate trains for the same wall time on one thread (the other core busy with other work),
# scoring 500 test images at every time-based checkpoint; metrics.jsonl then gives test bits/dim
# against images seen and seconds. Usage: results/images/learning_curves/learning_curves.sh [MINUTES] [RUNS_DIR]
set -euo pipefail
MIN="${1:-20}"; RUNS="${2:-runs/lc}"
export ARSMOOTH_DATA="${ARSMOOTH_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}"
common=(--threads 1 --no-progress --seed 0 --max-minutes "$MIN" --max-steps 10000000
        --set train.eval_images=500 --set train.checkpoint_every=10000000 --set train.checkpoint_minutes=2.5)
declare -A CAND=(
  [r1f23b16]="--set model.nr_resnet=1 --set model.nr_filters=23 --set train.batch_size=16"
  [r1f23b48]="--set model.nr_resnet=1 --set model.nr_filters=23 --set train.batch_size=48"
  [r2f32b16]="--set model.nr_resnet=2 --set model.nr_filters=32 --set train.batch_size=16"
)
for name in r1f23b16 r1f23b48 r2f32b16; do
  if [ -f "$RUNS/$name/summary.json" ]; then echo "$name done"; continue; fi
  if [ -f "$RUNS/$name/last.pt" ]; then
    arsmooth train --out "$RUNS/$name" --resume --threads 1 --no-progress
  else
    # shellcheck disable=SC2086
    arsmooth train mnist-cpu-baseline --out "$RUNS/$name" "${common[@]}" ${CAND[$name]}
  fi
done
