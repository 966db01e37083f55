"""Training-step time of each learning-curve size alone: one thread, batch 16, median of 5 steps after one.

    python results/images/learning_curves/transformer/step_times.py [OUT.json]   (default step_times.json)
"""

import json
import sys
import time

import torch

from arsmooth.models import count_params
from arsmooth.models.build import build_model
from arsmooth.runtime.config import load_config
from arsmooth.training.trainer import loss_given_noise

SIZES = [("base-w96-l3", "mnist-cpu-baseline", 96, 3), ("base-w64-l6", "mnist-cpu-baseline", 64, 6),
         ("base-w112-l2", "mnist-cpu-baseline", 112, 2), ("s1-w64-l3", "mnist-cpu-stage1", 64, 3),
         ("s1-w48-l5", "mnist-cpu-stage1", 48, 5), ("s1-w80-l2", "mnist-cpu-stage1", 80, 2)]

torch.set_num_threads(1)
out = {}
for name, preset, width, layers in SIZES:
    cfg = load_config(preset, ["model.network=transformer", f"model.tf_width={width}", f"model.tf_layers={layers}",
                               "model.tf_heads=4", "model.dropout=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg, (1, 28, 28))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randint(0, 256, (16, 1, 28, 28)).float() / 255 * 2 - 1
    xt = None if cfg.kind == "baseline" else x + 0.5 * torch.randn_like(x)
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        loss = loss_given_noise(model, x, xt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    out[name] = {"params": count_params(model), "step_seconds_median": sorted(times[1:])[2]}
    print(name, out[name], flush=True)
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "step_times.json", "w"), indent=1)
