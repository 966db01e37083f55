#!/usr/bin/env bash
# The transformer learning curves: three sizes of the baseline (~300k parameters) and three of stage 1
# (~150k), 6 minutes of wall time each on one thread, two runs at a time (one per core; the tests of the
# session ran beside them, so wall time per step varied: compare at equal steps, and at equal CPU time
# through step_times.py, which times each size alone).
#   results/images/learning_curves/transformer/learning_curves.sh OUT_FOLDER
set -euo pipefail
OUT=${1:?give an output folder}
run() { arsmooth train "$2" --out "$OUT/$1" --threads 1 --no-progress --max-minutes 6 --set model.network=transformer \
  --set model.tf_width="$3" --set model.tf_layers="$4" --set model.tf_heads=4 --set model.dropout=0.0 \
  --set train.checkpoint_every=100 --set train.eval_images=200; }
( run base-w96-l3 mnist-cpu-baseline 96 3; run base-w64-l6 mnist-cpu-baseline 64 6; run base-w112-l2 mnist-cpu-baseline 112 2 ) &
( run s1-w64-l3 mnist-cpu-stage1 64 3; run s1-w48-l5 mnist-cpu-stage1 48 5; run s1-w80-l2 mnist-cpu-stage1 80 2 ) &
wait
