#!/usr/bin/env bash
# Warm starts (KTH reproduction, sec. 6.2): stage 1 of the baseline's size (1 resnet / 23 filters / 5 logistics)
# trained 3,000 steps (48,000 images) from scratch and from the clean MNIST baseline of ../mnist
# (307,808 images), same seed, data order and noise; then scored with the long spatial stage 2.
# Run from the repository root with ARSMOOTH_DATA pointing at the MNIST files; one thread per job.
set -euo pipefail
W=results/images/warm_start
B=results/images/mnist/runs/baseline/last.pt
S2=results/images/mnist/runs/stage2/last.pt
CLF=results/classifiers/mnist.pt
T="--threads 1 --no-progress"
if [ "${1:-}" != "--eval-only" ]; then
  arsmooth train mnist-cpu-stage1 --set model.nr_filters=23 --out $W/runs/scratch --max-steps 3000 --max-minutes 600 $T
  arsmooth train mnist-cpu-stage1 --set model.nr_filters=23 --init-from $B --out $W/runs/warm --max-steps 3000 --max-minutes 600 $T
fi
for arm in scratch warm; do
  S1=$W/runs/$arm/last.pt
  arsmooth evaluate --stage1 $S1 --stage2 $S2 --n-images 2000 --iw 16 --threads 1 > $W/$arm.bounds.json
  arsmooth sample --method single-step --stage1 $S1 -n 1000 --batch-size 125 --out $W/samples_$arm --force $T
  arsmooth sample --method two-step --stage1 $S1 --stage2 $S2 -n 1000 --batch-size 125 --out $W/samples_$arm --force $T
  arsmooth metrics $W/samples_$arm/samples_single_step.npz $W/samples_$arm/samples_two_step.npz \
    --dataset mnist --classifier $CLF --threads 1 > $W/$arm.metrics.jsonl
done
