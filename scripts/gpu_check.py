"""The GPU path, measured: run on a machine with a CUDA GPU (a few minutes), or with --cpu-dry-run anywhere.

    python scripts/gpu_check.py --out results/bench/gpu.jsonl

1. fast == obvious sampling on CUDA (CIFAR-10 stage 1 and the spatial stage 2, same random numbers);
2. a training step of the CIFAR-10 stage-1 preset in fp32, bf16 autocast and channels_last, fused against
   straightforward (images/s, and whether the first step's loss and gradients agree);
3. the fast sampler against the obvious one (images/s).
One JSON line per measurement. Without a GPU it writes the one line saying so. --cpu-dry-run runs the same
code on CPU with the 8x8 digits presets (tests).
"""

import argparse
import json
from pathlib import Path

import torch

from arsmooth.bench import bench_sample, bench_train
from arsmooth.fileio import atomic_write_text

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="results/bench/gpu.jsonl")
p.add_argument("--cpu-dry-run", action="store_true", help="the same measurements on CPU with tiny presets")
a = p.parse_args()
lines = []
if not torch.cuda.is_available() and not a.cpu_dry_run:
    lines.append({"gpu": None, "note": "no CUDA GPU was available to torch on this machine; nothing was measured",
                  "torch": torch.__version__})
else:
    dev = "cpu" if a.cpu_dry_run else "cuda"
    stage1, stage2 = ("digits-stage1", "digits-stage2-spatial") if a.cpu_dry_run else \
        ("cifar10-stage1", "cifar10-stage2-spatial")
    for preset in (stage1, stage2):  # exactness first, on a full image for the small batch
        lines.append(bench_sample(preset, batch=8, ref_pixels=0 if a.cpu_dry_run else 64, device=dev))
    options = ((False, False),) if a.cpu_dry_run else ((False, False), (True, False), (False, True), (True, True))
    for bf16, cl in options:  # (bf16 and channels_last are CUDA-only: the dry run times plain fp32 once)
        lines.append(bench_train(stage1, steps=2 if a.cpu_dry_run else 10, device=dev,
                                 overrides=[f"gpu.bf16={str(bf16).lower()}", f"gpu.channels_last={str(cl).lower()}"]))
    lines.append(bench_sample(stage1, batch=64 if not a.cpu_dry_run else 4, device=dev))
text = "\n".join(json.dumps(x) for x in lines) + "\n"
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
atomic_write_text(a.out, text)
print(text, end="")
