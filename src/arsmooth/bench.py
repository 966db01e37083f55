"""``arsmooth bench``: throughput of our fast paths against their references, in one process.

Each benchmark prints one JSON line: both throughputs (images/s), their ratio, the batch size, the
model configuration, threads and device. The obvious sampler costs one full network pass per pixel,
the same for every pixel, so it is timed on the first ``ref_pixels`` pixels and scaled to the whole
image (``"obvious_pixels_timed"`` says how many); ``ref_pixels=0`` times it on the whole image.

The training benchmark times full steps (loss, backward, Adam) of the fused network (with the preset's
``model.dropout_masks``, by default bit masks) against the straightforward one built as the public
PixelCNN++ ports are (``model.fused=false``, ``model.dropout_masks=bernoulli``: ``F.pad``, ``torch.cat``,
``F.elu``, ``F.dropout``), steps interleaved so that machine load hits both alike, after checking that the
fused step's loss and gradients equal those of the straightforward network drawing the same masks from the
same random numbers (with bit masks, a third copy of the straightforward network does). It also reports
the step's floating-point work (``torch.utils.flop_counter``: the convolutions and products), the
GFLOP/s of both paths beside a 2048^3 matrix product timed in the same run, the CPUs the process may
use and the threads each path actually ran (with ``dropout_masks=bernoulli`` the fused path draws its masks
on one extra thread during the forward pass). Compare with another implementation at equal
``model.dropout_mode``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import torch

from .config import Settings, load_config
from .errors import ArsmoothError
from .models import count_params
from .models.image import ImageModel
from .sampling import raster_sample
from .kernels import make_kernel
from .models.build import build_model
from .train import loss_given_noise

SHAPES = {"mnist": (1, 28, 28), "fashion": (1, 28, 28), "cifar10": (3, 32, 32), "celeba": (3, 32, 32),
          "digits": (1, 8, 8)}


def preset_model(preset: str, device: str, overrides=()) -> tuple[ImageModel, Settings]:
    """A preset's network with its initial (random) weights, for the image shape of its dataset."""
    cfg = load_config(preset, list(overrides))
    name = cfg.data.dataset.split(":")[0]
    if name not in SHAPES:
        raise ArsmoothError(f"bench needs a preset of a built-in dataset ({', '.join(SHAPES)}), got {name!r}")
    torch.manual_seed(0)
    return build_model(cfg, SHAPES[name]).to(device).eval(), cfg


def _env(device: str) -> dict:
    return {"threads": torch.get_num_threads(), "device": device,
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
            "torch": torch.__version__}


def cpus_available() -> int:
    """CPUs this process may run on (``taskset`` and cgroups narrow it), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def matmul_gflops(device: str = "cpu", n: int = 2048, reps: int = 3) -> float:
    """GFLOP/s of an ``n x n`` float32 matrix product on ``device``: the machine's compute ceiling here."""
    g = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=g, device=device) for _ in range(2))
    torch.mm(a, b)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def step_flops(model: ImageModel, x: torch.Tensor, x_tilde: torch.Tensor | None) -> int:
    """Floating-point operations of one training step's forward and backward pass (convolutions and
    matrix products, as ``FlopCounterMode`` counts them; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_given_noise(model, x, x_tilde).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bench_sample(preset: str, batch: int = 64, ref_pixels: int = 28, device: str = "cpu", seed: int = 0,
                 overrides=()) -> dict:
    """Fast sampler vs the obvious one on one preset's network (random weights)."""
    model, cfg = preset_model(preset, device, overrides)
    h, w = model.image_size
    c = model.channels
    gen = torch.Generator(device).manual_seed(seed)
    ctx = (torch.rand(batch, c, h, w, generator=gen, device=device) * 2 - 1) if model.kind == "stage2" else None

    def run(fast: bool, limit: int | None):
        x = torch.zeros(batch, c, h, w, device=device)
        g = torch.Generator(device).manual_seed(seed + 1)
        _sync(device)
        t0 = time.perf_counter()
        raster_sample(model, x, 0, ctx, g, False, fast=fast, limit=limit)
        _sync(device)
        return x, time.perf_counter() - t0

    run(True, w)  # warm-up: first-call allocations and kernel set-up are not sampling speed
    run(False, 1)
    x_fast, t_fast = run(True, None)
    n_ref = h * w if ref_pixels <= 0 else min(ref_pixels, h * w)
    x_ref, t_ref = run(False, n_ref)
    t_ref_full = t_ref * (h * w) / n_ref
    first = x_fast.flatten(2)[..., :n_ref]
    same = bool(torch.allclose(first, x_ref.flatten(2)[..., :n_ref], atol=1e-4, rtol=1e-4))
    return {"bench": "sample", "preset": preset, "kind": model.kind, "batch": batch,
            "fast_images_per_s": batch / t_fast, "obvious_images_per_s": batch / t_ref_full,
            "speedup": t_ref_full / t_fast, "fast_seconds": round(t_fast, 3),
            "obvious_seconds_estimated": round(t_ref_full, 3), "obvious_pixels_timed": n_ref,
            "pixels_per_image": h * w, "same_samples_on_timed_pixels": same,
            "model": {**dataclasses.asdict(cfg.model), "params": count_params(model)}, **_env(device)}


def _train_networks(preset: str, device: str, overrides) -> tuple[ImageModel, ImageModel, ImageModel, dict]:
    """The fused network, the port-style reference (``fused=false``, ``bernoulli`` masks) and the straightforward
    network drawing the fused one's masks (the reference itself unless the masks are bits), one set of weights."""
    model, cfg = preset_model(preset, device, [*overrides, "model.fused=true"])
    ref, _ = preset_model(preset, device, [*overrides, "model.fused=false", "model.dropout_masks=bernoulli"])
    ref.load_state_dict(model.state_dict())
    same = ref
    if cfg.model.dropout_masks != "bernoulli":
        same, _ = preset_model(preset, device, [*overrides, "model.fused=false"])
        same.load_state_dict(model.state_dict())
    return model, ref, same, cfg


def _train_batch(model, cfg, batch: int, device: str, seed: int, channels_last: bool):
    """8-bit images in [-1, 1] and, for the smoothed kinds, x~ from the preset's kernel."""
    h, w = model.image_size
    gen = torch.Generator(device).manual_seed(seed)
    x = torch.randint(0, 256, (batch, model.channels, h, w), generator=gen, device=device).float() / 127.5 - 1
    kernel = make_kernel(cfg.smoothing.kernel, cfg.smoothing.sigma)
    x_tilde = None if model.kind == "baseline" else kernel.sample(x, gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        x_tilde = None if x_tilde is None else x_tilde.contiguous(memory_format=torch.channels_last)
    return x, x_tilde


def _train_step(r: dict, x, x_tilde, bf16: bool, device: str, timed: bool, rng_seed: int):
    """One Adam step of ``r["model"]``; the gradients when untimed (the check), else its time added to ``r["t"]``."""
    torch.manual_seed(rng_seed)  # the same dropout masks for both networks
    _sync(device)
    t0 = time.perf_counter()
    r["opt"].zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_given_noise(r["model"], x, x_tilde)
    loss.backward()
    grads = [p.grad.detach().clone() for p in r["model"].parameters()] if not timed else None
    r["opt"].step()
    _sync(device)
    if timed:
        r["t"] += time.perf_counter() - t0
    return loss.detach(), grads


def bench_train(preset: str, batch: int | None = None, steps: int = 5, device: str = "cpu", seed: int = 0,
                overrides=()) -> dict:
    """Training steps of the fused network vs the port-style straightforward one (same weights, same data)."""
    model, ref, same, cfg = _train_networks(preset, device, overrides)
    masks = cfg.model.dropout_masks
    batch = batch or cfg.train.batch_size
    cuda = device.startswith("cuda")
    bf16, channels_last = cuda and cfg.gpu.bf16, cuda and cfg.gpu.channels_last  # as train does
    x, x_tilde = _train_batch(model, cfg, batch, device, seed, channels_last)
    if channels_last:
        for m in (model, ref, same):
            m.to(memory_format=torch.channels_last)  # in place (a module's .to returns itself)

    def run_of(m) -> dict:
        m.train()
        return {"model": m, "opt": torch.optim.Adam(m.parameters(), lr=cfg.train.lr), "t": 0.0}

    runs = {"fused": run_of(model), "straightforward": run_of(ref)}
    check = runs["straightforward"] if same is ref else run_of(same)

    def step(r: dict, timed: bool, rng_seed: int) -> tuple[torch.Tensor, list | None]:
        return _train_step(r, x, x_tilde, bf16, device, timed, rng_seed)

    torch.manual_seed(seed)
    flops = step_flops(ref, x, x_tilde)  # the same convolutions in both networks
    (l_f, g_f), (l_r, g_r) = step(runs["fused"], False, seed), step(check, False, seed)
    if check is not runs["straightforward"]:
        step(runs["straightforward"], False, seed)  # its untimed first step, as the fused one had
    grad_err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(g_f, g_r))
    loss_err = abs(l_f.item() - l_r.item()) / max(abs(l_r.item()), 1e-12)
    for i in range(steps):  # interleaved, alternating who goes first
        order = ("fused", "straightforward") if i % 2 == 0 else ("straightforward", "fused")
        for name in order:
            step(runs[name], True, seed + 1 + i)
    t_f, t_r = runs["fused"]["t"], runs["straightforward"]["t"]
    threads = torch.get_num_threads()
    # with bernoulli masks, the fused forward pass runs threads - 1 for torch and 1 for the masks
    mask_thread = not cuda and cfg.model.dropout > 0 and masks == "bernoulli"
    peak = matmul_gflops(device)
    return {"bench": "train", "preset": preset, "kind": model.kind, "batch": batch, "steps_timed": steps,
            "fast_images_per_s": batch * steps / t_f, "reference_images_per_s": batch * steps / t_r,
            "speedup": t_r / t_f, "fast_seconds_per_step": round(t_f / steps, 4),
            "reference_seconds_per_step": round(t_r / steps, 4),
            "first_step_loss_rel_err": loss_err, "first_step_grad_max_rel_err": grad_err,
            "same_loss_and_grads": bool(loss_err < 1e-5 and grad_err < 1e-4), "bf16": bf16,
            "channels_last": channels_last, "gflop_per_step": flops / 1e9,
            "fast_gflops_per_s": flops * steps / t_f / 1e9, "reference_gflops_per_s": flops * steps / t_r / 1e9,
            "matmul_gflops_per_s": peak, "fast_fraction_of_matmul": flops * steps / t_f / 1e9 / peak,
            "cpus_available": cpus_available() if not cuda else None,
            "threads_used": {"fast": max(threads - 1, 1) + 1 if mask_thread else threads, "reference": threads},
            "dropout_mode": cfg.model.dropout_mode, "dropout_masks": masks,
            "reference_dropout_masks": "bernoulli",
            "model": {**dataclasses.asdict(cfg.model), "params": count_params(model)}, **_env(device)}


DEFAULT_PRESETS = {"sample": ["mnist-cpu-stage1", "mnist-cpu-stage2", "mnist-cpu-baseline"],
                   "train": ["mnist-cpu-stage1", "mnist-cpu-stage2", "mnist-stage1"]}
