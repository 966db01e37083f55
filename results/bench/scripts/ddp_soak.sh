#!/usr/bin/env bash
# Run the 2-process gloo training (digits preset) N times in a row and record every exit status:
# the check that a correct DDP run never aborts at exit (issue 6). Usage: results/bench/scripts/ddp_soak.sh [N] [OUT]
set -u
N=${1:-10}
OUT=${2:-results/bench/ddp_soak.txt}
PY=${PYTHON:-python}
tmp=$(mktemp -d)
{
  echo "# $N runs of: $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m arsmooth train digits-stage1 --max-steps 20"
  echo "# $(date -u +%FT%TZ), torch $($PY -c 'import torch; print(torch.__version__)'), $(nproc) CPU cores"
} > "$OUT"
fails=0
for i in $(seq 1 "$N"); do
  start=$(date +%s)
  OMP_NUM_THREADS=1 $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m arsmooth train digits-stage1 \
    --out "$tmp/run$i" --max-steps 20 --set train.batch_size=8 --no-progress --threads 1 > "$tmp/log$i" 2>&1
  rc=$?
  [ "$rc" -ne 0 ] && fails=$((fails + 1))
  echo "run $i: exit $rc, $(( $(date +%s) - start )) s" >> "$OUT"
done
echo "aborted or failed: $fails of $N" >> "$OUT"
rm -rf "$tmp"
cat "$OUT"
