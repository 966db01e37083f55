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

from ..errors import ArsmoothError
from ..maths.kernels import make_kernel
from ..models import count_params
from ..models.build import build_model
from ..models.image_model import ImageModel
from ..networks.cpu_kernels import threads_for_masks
from ..networks.sampling import raster_sample
from ..runtime.config import Settings, load_config
from ..training.trainer import loss_given_noise

# training images of each dataset (CelebA: the paper's 70% of 202,599); the cost estimate's epochs
TRAIN_IMAGES = {"mnist": 60_000, "fashion": 60_000, "cifar10": 50_000, "celeba": 141_819}
PAPER_SAMPLES = 50_000  # images per column of the paper's Fig. 6 / Table 2 metrics
COST_FORMULA = ("hours = images / (images per second) / 3600 at the measured speed: the step budget is "
                "train.max_steps x train.batch_size images, an epoch the dataset's training images, a Fig. 6 "
                "column 50,000 samples of the model (the smoothed, single-step and two-step columns share stage 1's "
                "x~, so the columns cost 50,000 baseline + 50,000 stage-1 + 50,000 stage-2 samples)")
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


def cost_estimate(cfg: Settings, train_images_per_s: float | None = None,
                  sample_images_per_s: float | None = None) -> dict:
    """What a preset's full run costs at a measured speed (:data:`COST_FORMULA`): hours for its step budget
    and per epoch of its dataset (from the training speed), hours for 50,000 samples (from the sampling speed)."""
    out: dict = {}
    n = TRAIN_IMAGES.get(cfg.data.dataset.split(":")[0])
    if train_images_per_s:
        out["train_hours_for_step_budget"] = cfg.train.max_steps * cfg.train.batch_size / train_images_per_s / 3600
        out["train_hours_per_epoch"] = None if n is None else n / train_images_per_s / 3600
        out["step_budget_images"] = cfg.train.max_steps * cfg.train.batch_size
    if sample_images_per_s:
        out[f"hours_for_{PAPER_SAMPLES}_samples"] = PAPER_SAMPLES / sample_images_per_s / 3600
    return {**out, "formula": COST_FORMULA}


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
    ctx = (torch.rand(batch, c, h, w, generator=gen, device=device) * 2 - 1) if model.takes_context else None

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
    t_forward = _forward_seconds(model, batch, ctx, device, seed)
    x_fast, t_fast = run(True, None)
    n_ref = h * w if ref_pixels <= 0 else min(ref_pixels, h * w)
    x_ref, t_ref = run(False, n_ref)
    t_ref_full = t_ref * (h * w) / n_ref
    first = x_fast.flatten(2)[..., :n_ref]
    same = bool(torch.allclose(first, x_ref.flatten(2)[..., :n_ref], atol=1e-4, rtol=1e-4))
    differing = int((first - x_ref.flatten(2)[..., :n_ref]).abs().gt(1e-4).sum())
    return {"bench": "sample", "preset": preset, "kind": model.kind, "batch": batch,
            "fast_images_per_s": batch / t_fast, "obvious_images_per_s": batch / t_ref_full,
            "speedup": t_ref_full / t_fast, "fast_seconds": round(t_fast, 3),
            "obvious_seconds_estimated": round(t_ref_full, 3), "obvious_pixels_timed": n_ref,
            "pixels_per_image": h * w, "same_samples_on_timed_pixels": same,
            "differing_subpixels_on_timed_pixels": differing, "timed_subpixels": batch * c * n_ref,
            "estimate": cost_estimate(cfg, sample_images_per_s=batch / t_fast),
            "forward_passes_of_time": t_fast / t_forward, "forward_passes_of_flops": sampler_work(model, device, seed),
            "model": {**dataclasses.asdict(cfg.model), "params": count_params(model)}, **_env(device)}


def _forward_seconds(model, batch: int, ctx, device: str, seed: int) -> float:
    """Seconds of one full forward pass of ``batch`` images (median of 3): the unit of the sampler's work."""
    h, w = model.image_size
    x = torch.rand(batch, model.channels, h, w, generator=torch.Generator(device).manual_seed(seed), device=device) * 2 - 1
    times = []
    for _ in range(4):
        _sync(device)
        t0 = time.perf_counter()
        model.params(x, ctx)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[1]


@torch.no_grad()
def sampler_work(model, device: str = "cpu", seed: int = 0, batch: int = 2) -> float:
    """Floating-point work of the fast sampler over a whole image, in full forward passes of the same images:
    products and convolutions as ``torch.utils.flop_counter`` counts them, plus the transformer's attention
    (:func:`arsmooth.networks.transformer.counting_attention`, which that counter does not see on CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..networks.transformer import counting_attention

    h, w = model.image_size
    g = torch.Generator(device).manual_seed(seed)
    ctx = (torch.rand(batch, model.channels, h, w, generator=g, device=device) * 2 - 1) if model.takes_context else None
    work = []
    for fast in (True, None):
        x = torch.zeros(batch, model.channels, h, w, device=device)
        with FlopCounterMode(display=False) as counter, counting_attention() as att:
            if fast:
                raster_sample(model, x, 0, ctx, torch.Generator(device).manual_seed(seed + 1), False, fast=True)
            else:
                model.params(x, ctx)
        work.append(counter.get_total_flops() + att[0])
    return work[0] / work[1]


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
    x_tilde = kernel.sample(x, gen) if model.objective.noised else None
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
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16), threads_for_masks(r["model"]):
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
            "estimate": cost_estimate(cfg, train_images_per_s=batch * steps / t_f),
            "model": {**dataclasses.asdict(cfg.model), "params": count_params(model)}, **_env(device)}


def precision_check(preset: str, device: str = "cpu", steps: int = 5, options=((True, False), (False, True), (True, True)),
                    batch: int | None = None, seed: int = 0, overrides=(), cuda_semantics: bool = True) -> dict:
    """Training steps of ``preset`` in fp32 and under each ``(bf16, channels_last)`` option, from the same weights
    and data: images/s of each (``steps`` Adam steps after an untimed one, dropout on), and the loss and
    gradients of one step without dropout against fp32's (largest relative error over the tensors). bf16 and
    channels_last act on CUDA only, as in training; on the CPU (``cuda_semantics=False``) every option is fp32."""
    import copy

    base, cfg = preset_model(preset, device, overrides)
    batch = batch or cfg.train.batch_size
    x, x_tilde = _train_batch(base, cfg, batch, device, seed, False)

    def run(bf16: bool, cl: bool) -> dict:
        m = copy.deepcopy(base)
        xs, xts = x, x_tilde
        if cl:
            m.to(memory_format=torch.channels_last)
            xs = x.contiguous(memory_format=torch.channels_last)
            xts = None if x_tilde is None else x_tilde.contiguous(memory_format=torch.channels_last)
        m.eval()  # the check step: no dropout, so every option computes the same function
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda")):
            loss = loss_given_noise(m, xs, xts)
        loss.backward()
        grads = [q.grad.detach().float().clone() for q in m.parameters()]
        m.train()
        r = {"model": m, "opt": torch.optim.Adam(m.parameters(), lr=cfg.train.lr), "t": 0.0}
        for i in range(steps + 1):
            _train_step(r, xs, xts, bf16 and device.startswith("cuda"), device, i > 0, seed + i)
        return {"loss": loss.item(), "grads": grads, "images_per_s": batch * steps / r["t"]}

    ref = run(False, False)
    out = {"bench": "precision", "preset": preset, "kind": base.kind, "batch": batch, "steps_timed": steps,
           "fp32_images_per_s": ref["images_per_s"], "cuda_semantics": cuda_semantics}
    for bf16, cl in options:
        r = run(bf16, cl)
        name = "+".join(n for n, on in (("bf16", bf16), ("channels_last", cl)) if on)
        out[name] = {"images_per_s": r["images_per_s"], "speedup_over_fp32": r["images_per_s"] / ref["images_per_s"],
                     "loss_rel_err": abs(r["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-12),
                     "grad_max_rel_err": max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                                             for a, b in zip(r["grads"], ref["grads"]))}
    return {**out, "model": {**dataclasses.asdict(cfg.model), "params": count_params(base)}, **_env(device)}


def measure_costs(cfgs: dict, shape: tuple[int, int, int], device: str, n_samples: int = PAPER_SAMPLES,
                  train_batch: int | None = None, train_steps: int = 2, sample_batch: int = 64,
                  sample_rows: int = 1) -> dict:
    """The cost of an experiment's models (``{kind: Settings}``) on ``device``, measured briefly: ``train_steps``
    timed Adam steps (after one untimed) at ``train_batch`` (default: each preset's batch), and the fast sampler
    over the first ``sample_rows`` rows at ``sample_batch``, scaled to the image (the cost per row is about
    even). Returns each model's speeds and :func:`cost_estimate`, and the hours of the ``n_samples`` Fig. 6
    columns (baseline + stage 1 + stage 2 samples)."""
    out, fig6 = {}, 0.0
    for kind, cfg in cfgs.items():
        torch.manual_seed(0)
        model = build_model(cfg, shape).to(device)
        batch = min(train_batch or cfg.train.batch_size, cfg.train.batch_size)
        x, x_tilde = _train_batch(model, cfg, batch, device, 0, False)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
        model.train()
        times = []
        for _ in range(train_steps + 1):
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with threads_for_masks(model):
                loss = loss_given_noise(model, x, x_tilde)
            loss.backward()
            opt.step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        train_ips = batch * train_steps / sum(times[1:])
        row = {"train_batch": batch, "train_images_per_s": train_ips}
        stages = getattr(model, "stages", (model,))
        for stage in stages if not model.objective.joint else ():  # (the joint model is not sampled here)
            stage.eval()
            h, w = stage.image_size
            ctx = torch.zeros(sample_batch, *shape, device=device) if stage.takes_context else None
            xs = torch.zeros(sample_batch, *shape, device=device)
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                raster_sample(stage, xs, 0, ctx, torch.Generator(device).manual_seed(0), False, fast=True,
                              limit=sample_rows * w)
            _sync(device)
            row["sample_images_per_s"] = sample_batch / ((time.perf_counter() - t0) * h / sample_rows)
            fig6 += n_samples / row["sample_images_per_s"] / 3600
        row["estimate"] = cost_estimate(cfg, train_ips, row.get("sample_images_per_s"))
        out[kind] = row
    return {"device": device, "models": out, "fig6_columns_hours": fig6, "samples_per_column": n_samples,
            "sample_batch": sample_batch, "sample_rows_timed": sample_rows, "formula": COST_FORMULA}


def _hours(h: float) -> str:
    return f"{h:,.1f} h" if h >= 1 else f"{60 * h:.1f} min"


def cost_lines(costs: dict) -> list[str]:
    """The estimate of :func:`measure_costs` as lines a person reads."""
    lines = [f"Cost estimate on {costs['device']} (measured now, briefly; {costs['formula']}):"]
    total = 0.0
    for kind, r in costs["models"].items():
        e = r["estimate"]
        total += e.get("train_hours_for_step_budget", 0.0)
        epoch = e.get("train_hours_per_epoch")
        lines.append(f"  {kind}: training {r['train_images_per_s']:.1f} images/s (batch {r['train_batch']}) -> "
                     f"{_hours(e['train_hours_for_step_budget'])} for its {e['step_budget_images']:,} images"
                     + (f", {_hours(epoch)} per epoch" if epoch is not None else "")
                     + (f"; sampling {r['sample_images_per_s']:.2f} images/s" if "sample_images_per_s" in r else ""))
    lines.append(f"  training all models: {_hours(total)}; the Fig. 6 columns ({costs['samples_per_column']:,} samples "
                 f"each): {_hours(costs['fig6_columns_hours'])}")
    return lines


DEFAULT_PRESETS = {"sample": ["mnist-cpu-stage1", "mnist-cpu-stage2", "mnist-cpu-baseline"],
                   "train": ["mnist-cpu-stage1", "mnist-cpu-stage2", "mnist-stage1"]}
