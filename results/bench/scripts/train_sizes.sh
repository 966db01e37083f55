#!/usr/bin/env bash
# The training-step benchmark of issue 26: three network sizes x element / channel dropout, on 2 threads
# and on one pinned core (taskset -c 0), fused step (bit masks) against the port-style straightforward
# network (fused=false, F.dropout's bernoulli masks). Run it on a quiet machine.
# Usage: results/bench/scripts/train_sizes.sh [OUT] [STEPS]     (then: python results/bench/scripts/train_table.py OUT)
# CORES="2 pinned" and MODES="element channel" (the defaults) pick a part of the matrix, e.g.
# CORES=2 MODES=element results/bench/scripts/train_sizes.sh results/bench/train_sizes_run3.jsonl 10
set -eu
OUT=${1:-results/bench/train_sizes.jsonl}
STEPS=${2:-10}
[ -e "$OUT" ] && { echo "$OUT already exists; remove it first" >&2; exit 1; }
tmp=$(mktemp -d)
# resnets filters logistics batch: the paper's MNIST size, the mnist-cpu size, a middle one
SIZES=("5 40 10 16" "1 16 5 16" "2 32 5 32")
for cores in ${CORES:-2 pinned}; do
  for mode in ${MODES:-element channel}; do
    for size in "${SIZES[@]}"; do
      set -- $size
      args=(bench train --preset mnist-stage1 --set kind=baseline --set model.nr_resnet=$1 --set model.nr_filters=$2
            --set model.nr_logistic_mix=$3 --set model.dropout_mode=$mode --batch-size $4 --steps $STEPS
            --out "$tmp/r.jsonl" --force)
      load=$(cut -d' ' -f1 /proc/loadavg)
      if [ "$cores" = 2 ]; then arsmooth "${args[@]}" --threads 2 > /dev/null
      else taskset -c 0 arsmooth "${args[@]}" --threads 1 > /dev/null; fi
      python - "$tmp/r.jsonl" "$cores" "$load" >> "$OUT" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
r.update(cores="1 pinned (taskset -c 0)" if sys.argv[2] == "pinned" else "2", load_average_before=float(sys.argv[3]))
print(json.dumps(r))
PY
      tail -n 1 "$OUT" | cut -c1-160
    done
  done
done
rm -rf "$tmp"
