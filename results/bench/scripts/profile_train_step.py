"""Where a PixelCNN++ training step spends its time on CPU, and how fast one convolution runs.

    python results/bench/scripts/profile_train_step.py mnist-cpu-stage1 --fused false --threads 1 --batch 16

Prints the profiler's top operators for loss + backward + Adam of the preset's network (random
weights and images), then the GFLOP/s of the largest convolution of the paper-size network
(2x3 kernel, 80 channels in and out, 16x28x28, forward + backward) for the compute ceiling.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import profile

from arsmooth.bench import _model
from arsmooth.train import loss_given_noise

ap = argparse.ArgumentParser()
ap.add_argument("preset")
ap.add_argument("--fused", choices=("true", "false"), default="false")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=16)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model, cfg = _model(a.preset, "cpu", [f"model.fused={a.fused}"])
model.train()
h, w = model.image_size
x = torch.randint(0, 256, (a.batch, model.channels, h, w)).float() / 127.5 - 1
xt = None if model.kind == "baseline" else x + cfg["smoothing"]["sigma"] * torch.randn_like(x)
opt = torch.optim.Adam(model.parameters())


def step():
    opt.zero_grad(set_to_none=True)
    loss_given_noise(model, x, xt).backward()
    opt.step()


for _ in range(2):
    step()
with profile() as p:
    for _ in range(3):
        step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

inp = torch.randn(16, 80, 29, 30, requires_grad=True)
wt = torch.randn(80, 80, 2, 3, requires_grad=True)
for _ in range(3):
    F.conv2d(inp, wt).sum().backward()
n, t0 = 20, time.perf_counter()
for _ in range(n):
    F.conv2d(inp, wt).sum().backward()
dt = (time.perf_counter() - t0) / n
flops = 3 * 2 * 16 * 28 * 28 * 80 * 80 * 6  # forward, grad input, grad weight
print(f"conv 2x3 80->80 on 16x28x28, forward+backward: {dt * 1e3:.1f} ms, {flops / dt / 1e9:.0f} GFLOP/s")
