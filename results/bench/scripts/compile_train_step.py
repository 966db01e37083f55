"""Does torch.compile speed up a PixelCNN++ training step on CPU? Compile time and step times.

    python results/bench/scripts/compile_train_step.py mnist-stage1 --threads 1 --batch 16
"""

import argparse
import time

import torch

from arsmooth.evaluation.bench import preset_model

ap = argparse.ArgumentParser()
ap.add_argument("preset")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=16)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model, _ = preset_model(a.preset, "cpu", ["model.fused=false"])
model.train()
h, w = model.image_size
x = torch.randint(0, 256, (a.batch, model.channels, h, w)).float() / 127.5 - 1


def loss_fn(xx):
    return model.loss(xx)


def timed(f, n=4):
    def step():
        model.zero_grad(set_to_none=True)
        f(x).backward()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return first, (time.perf_counter() - t0) / n


for name, f in (("eager", loss_fn), ("compiled", torch.compile(loss_fn))):
    first, per_step = timed(f)
    print(f"{name}: first step {first:.1f} s, then {per_step:.3f} s per step of {a.batch} images", flush=True)
