"""Where a PixelCNN++ training step spends its time on CPU: the components of one step timed alone.

    python results/bench/scripts/profile_train_step.py mnist-stage1 --set kind=baseline --batch 16 --threads 1

One step = loss, backward pass and Adam update of the preset's network (random weights, random 8-bit
images; baseline kind: the discretized mixture on x). It is timed whole (median of ``--reps``), for the
fused network with the preset's masks (``--fused true``, default) or the port-style network
(``--fused false`` with ``--set model.dropout_masks=bernoulli``), and then piece by piece, each timed alone:

- every convolution of the step, grouped by shape, forward + backward (input and weight gradients) in the
  default layout and in channels_last;
- the likelihood, forward + backward, given the network's output;
- weight norm: recomputing every weight ``g v / |v|`` and its backward;
- the dropout masks one step draws, as random bits and as ``bernoulli_``;
- the Adam update.

What the pieces do not cover (concat-ELU, gates, padding, additions, autograd bookkeeping) is the rest
of the step. The second table is torch.profiler's top operators of the whole step (self time).
Seeded (``torch.manual_seed(0)``); timings depend on the machine and its load, so run it on a quiet one.
"""

import argparse
import statistics
import time
from collections import defaultdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import profile

from arsmooth.evaluation.bench import preset_model
from arsmooth.maths import likelihoods as L
from arsmooth.networks.pixelcnnpp import draw_dropout_mask
from arsmooth.training.trainer import loss_given_noise

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("preset")
ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
ap.add_argument("--fused", choices=("true", "false"), default="true")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--reps", type=int, default=5)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
model, cfg = preset_model(a.preset, "cpu", [*a.set, f"model.fused={a.fused}"])
model.train()
h, w = model.image_size
x = torch.randint(0, 256, (a.batch, model.channels, h, w)).float() / 127.5 - 1
xt = None if model.kind == "baseline" else x + cfg["smoothing"]["sigma"] * torch.randn_like(x)
opt = torch.optim.Adam(model.parameters())


def step():
    opt.zero_grad(set_to_none=True)
    loss_given_noise(model, x, xt).backward()
    opt.step()


def timed(fn, reps=a.reps):
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


# the convolutions of one step: every Conv2d / ConvTranspose2d call with its input shape
calls = []
hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, tuple(i[0].shape))))
         for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
step()
for hk in hooks:
    hk.remove()
t_step = timed(step)
m = cfg["model"]
print(f"# {a.preset} {' '.join(a.set)}: {m['nr_resnet']}/{m['nr_filters']}/{m['nr_logistic_mix']}, kind {model.kind}, "
      f"batch {a.batch}, fused {a.fused}, masks {m['dropout_masks']}, dropout {m['dropout']} ({m['dropout_mode']}), "
      f"threads {a.threads}, torch {torch.__version__}")
print(f"whole step: {t_step * 1e3:.1f} ms ({a.batch / t_step:.2f} images/s), median of {a.reps}")

groups = defaultdict(int)
for mod, shape in calls:
    kind = "deconv" if isinstance(mod, nn.ConvTranspose2d) else "conv"
    groups[(kind, shape, tuple(mod.weight.shape), mod.stride, mod.padding)] += 1


def conv_time(kind, shape, wshape, stride, padding, fmt):
    inp = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_()
    wt = torch.randn(wshape).contiguous(memory_format=fmt).requires_grad_()
    fn = F.conv_transpose2d if kind == "deconv" else F.conv2d
    out = fn(inp, wt, stride=stride, padding=padding)
    g = torch.randn_like(out)

    def run():
        torch.autograd.grad(fn(inp, wt, stride=stride, padding=padding), (inp, wt), g)

    flops = 3 * 2 * out.numel() * wshape[1 if kind == "conv" else 0] * wshape[2] * wshape[3]
    if kind == "deconv":
        flops = 3 * 2 * inp.numel() * wshape[1] * wshape[2] * wshape[3]
    return timed(run), flops


rows, t_conv, t_conv_cl = [], 0.0, 0.0
for (kind, shape, wshape, stride, padding), n in sorted(groups.items(), key=lambda kv: -kv[1]):
    t, flops = conv_time(kind, shape, wshape, stride, padding, torch.contiguous_format)
    t_cl, _ = conv_time(kind, shape, wshape, stride, padding, torch.channels_last)
    t_conv += n * t
    t_conv_cl += n * t_cl
    rows.append(f"| {kind} {'x'.join(map(str, wshape[2:]))} {wshape[1] if kind == 'conv' else wshape[0]}->"
                f"{wshape[0] if kind == 'conv' else wshape[1]}, stride {stride[0]} | {'x'.join(map(str, shape))} | {n} | "
                f"{n * t * 1e3:.1f} | {flops / t / 1e9:.1f} | {n * t_cl * 1e3:.1f} |")

# the likelihood on the network's output
params = model.params(x if model.kind != "stage1" else xt, xt if model.kind == "stage2" else None).detach()
target = xt if model.kind == "stage1" else x


def likelihood():
    p = params.clone().requires_grad_()
    (-L.image_log_prob(target, p, model.nr_mix, model.discretized).mean()).backward()


t_lik = timed(likelihood)

# weight norm: every parametrized weight recomputed, and its backward
wn = [mod for mod in model.modules() if hasattr(mod, "parametrizations")]


def weight_norm():
    torch.autograd.backward([mod.weight.sum() for mod in wn])


t_wn = timed(weight_norm)

# the masks of one step
shapes = model.net._mask_shapes(a.batch, h, w) if m["dropout"] > 0 else []
t_bits = timed(lambda: [draw_dropout_mask(x, s, m["dropout"], "bits") for s in shapes])
t_bern = timed(lambda: [draw_dropout_mask(x, s, m["dropout"], "bernoulli") for s in shapes])
masks_used = t_bits if m["dropout_masks"] == "bits" else t_bern

# Adam
for p_ in model.parameters():
    p_.grad = torch.randn_like(p_)
t_adam = timed(opt.step)

t_rest = t_step - t_conv - t_lik - t_wn - masks_used - t_adam
print("\n| component (timed alone) | ms per step | share of the step |\n|---|---|---|")
for name, t in (("convolutions, forward + backward", t_conv), ("likelihood, forward + backward", t_lik),
                (f"dropout masks ({m['dropout_masks']}, {len(shapes)} per step)", masks_used),
                ("weight norm, forward + backward", t_wn), ("Adam update", t_adam),
                ("the rest: concat-ELU, gates, padding, additions, autograd", t_rest)):
    print(f"| {name} | {t * 1e3:.1f} | {100 * t / t_step:.0f}% |")
print(f"\nmasks alone: bits {t_bits * 1e3:.1f} ms, bernoulli {t_bern * 1e3:.1f} ms per step; all convolutions in "
      f"channels_last: {t_conv_cl * 1e3:.1f} ms (default layout {t_conv * 1e3:.1f} ms)")
print("\n| convolution | input | calls per step | ms per step | GFLOP/s | ms per step, channels_last |\n|---|---|---|---|---|---|")
print("\n".join(rows))

with profile() as prof:
    step()
ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
tot = sum(e.self_cpu_time_total for e in ev)
print(f"\ntorch.profiler, one step, top operators by self time (total {tot / 1e3:.0f} ms):\n")
print("| operator | ms | share | calls |\n|---|---|---|---|")
for e in ev[:15]:
    print(f"| {e.key} | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / tot:.1f}% | {e.count} |")
