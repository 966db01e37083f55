#!/usr/bin/env bash
# Time 1,000 two-step MNIST samples from the CPU-scale checkpoints of results/images/mnist (issue 5).
# Usage: results/bench/scripts/time_two_step.sh [THREADS] [OUT]
set -eu
THREADS=${1:-2}
OUT=${2:-results/bench/two_step_1000.txt}
RUNS=results/images/mnist/runs
tmp=$(mktemp -d)
cmd="arsmooth sample --method two-step -n 1000 --batch-size 100 --stage1 $RUNS/stage1/last.pt --stage2 $RUNS/stage2/last.pt --out $tmp --threads $THREADS --no-progress"
load=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
$cmd > /dev/null
end=$(date +%s.%N)
{
  echo "command: $cmd"
  echo "date: $(date -u +%FT%TZ); $(nproc) CPU cores; load average before: $load (other jobs on the machine)"
  echo "wall seconds: $(echo "$end - $start" | bc)"
} > "$OUT"
rm -rf "$tmp"
cat "$OUT"
