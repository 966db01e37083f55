"""Training of the image models (baseline, stage 1, stage 2) with checkpoints that survive a crash.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON line per log step), ``last.pt``
(written atomically every ``checkpoint_every`` steps and ``checkpoint_minutes`` minutes) and, at the
end, ``summary.json``. ``resume=True`` restores model, optimizer, scheduler, EMA, RNG states and the
position in the data order, so a resumed CPU run reaches the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import warnings
from pathlib import Path

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from . import checkpoint as C
from .checkpoint import read_metrics
from . import distributed as D
from .config import validate
from .data.images import load_configured
from .errors import ArsmoothError
from .fileio import atomic_write_text
from .kernels import make_kernel
from .likelihoods import bits_per_dim
from .models import count_params
from .models.build import build_model, init_weights_from
from .models.image import ImageModel

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "summary.json")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ArsmoothError("device cuda was asked for but no CUDA GPU is available; use device=cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def loss_given_noise(model: ImageModel, x: torch.Tensor, x_tilde: torch.Tensor | None) -> torch.Tensor:
    """The training loss; for kind smoothed ``x_tilde`` is the standard normal eps (x~ = x + sigma eps inside)."""
    if model.kind == "baseline":
        return model.loss(x)
    if model.kind == "smoothed":
        return model.loss(x, x_tilde)
    return model.loss(x_tilde) if model.kind == "stage1" else model.loss(x, context=x_tilde)


class _Loss(torch.nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: ImageModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_tilde: torch.Tensor | None) -> torch.Tensor:
        return loss_given_noise(self.model, x, x_tilde)


def _batch_indices(step: int, n: int, bs: int, seed: int, cache: dict, ctx: D.Context) -> torch.Tensor:
    """This rank's share of the global batch at ``step`` (no state beyond the step).

    A DistributedSampler (shuffle, ``drop_last``, ``set_epoch``) deals a per-epoch permutation
    seeded by (seed, epoch) across ranks; rank ``r`` of ``N`` gets global batch positions
    ``r, r + N, ...``, so the global batch, and so training, is the same for every ``N``.
    """
    b = bs // ctx.world
    per_epoch = max((n // ctx.world) // b, 1)
    epoch, k = divmod(step, per_epoch)
    if cache.get("epoch") != epoch:
        sampler = DistributedSampler(range(n), num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        cache["epoch"], cache["perm"] = epoch, torch.tensor(list(iter(sampler)))
    return cache["perm"][k * b : (k + 1) * b]


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ArsmoothError("--resume and --overwrite contradict each other; pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise ArsmoothError(f"{run_dir} exists and is not a folder; pick another --out")
    has_run = run_dir.is_dir() and any((run_dir / f).exists() for f in RUN_FILES)
    if resume:
        if not (run_dir / "last.pt").exists():
            raise ArsmoothError(f"nothing to resume: {run_dir}/last.pt does not exist")
        return
    if has_run and not overwrite:
        raise ArsmoothError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArsmoothError(f"cannot create run folder {run_dir}: {e.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise ArsmoothError(f"run folder {run_dir} is not writable")
    if overwrite:
        for f in RUN_FILES:
            (run_dir / f).unlink(missing_ok=True)


@torch.no_grad()
def evaluate_bpd(model: ImageModel, kernel, images: torch.Tensor, batch_size: int = 100, seed: int = 0) -> float:
    """Mean test loss in bits per dimension (8-bit for baseline/stage 2 and the smoothed -ELBO; density units for stage 1)."""
    if images.shape[0] == 0:
        return float("nan")
    was = model.training
    model.eval()
    g = torch.Generator(device=images.device).manual_seed(seed)
    total = 0.0
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        if model.kind == "baseline":
            lp = model.log_prob(x)
        elif model.kind == "smoothed":  # -ELBO: a bound in 8-bit bits/dim
            lp = model.elbo(x, torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype))
        else:
            xt = kernel.sample(x, g)
            lp = model.log_prob(xt) if model.kind == "stage1" else model.log_prob(x, context=xt)
        total += float(-lp.sum())
    model.train(was)
    return bits_per_dim(total / images.shape[0], images[0].numel())


def train(
    cfg: dict,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    train_images: torch.Tensor | None = None,
    test_images: torch.Tensor | None = None,
    init_from: str | Path | None = None,
) -> dict:
    """Train the model of ``cfg`` in ``run_dir``; returns the summary (also written to ``summary.json``).

    ``train_images``/``test_images`` (in [-1, 1]) bypass the dataset loader (tests, notebooks).
    ``init_from``: a checkpoint whose network weights start a new run (:func:`init_weights_from`).
    Under ``torchrun`` every rank trains its share of each global batch (DDP); rank 0 alone writes. A worker
    group restarted by ``torchrun --max-restarts`` continues the run from its last checkpoint
    (:func:`restarted_run`).
    """
    if cfg is not None and not resume and not overwrite:  # a worker restarted by torchrun carries on by itself
        again = restarted_run(cfg, Path(run_dir))
        resume, overwrite = again == "resume", again == "restart"
        init_from = None if resume else init_from  # the checkpoint holds the weights by now
    wants = _device_setting(cfg, Path(run_dir), resume)
    ctx = D.setup("cuda" if torch.cuda.is_available() and wants != "cpu" else "cpu")
    try:
        if init_from is not None and resume:
            raise ArsmoothError("--init-from starts a new run; a resumed run already has its weights")
        if init_from is not None and (cfg or {}).get("kind") == "smoothed":
            raise ArsmoothError("--init-from copies one network; a smoothed run trains two (start it from scratch)")
        summary = _train(ctx, cfg, Path(run_dir), resume, overwrite, progress, train_images, test_images, init_from)
    except BaseException:
        D.shutdown(ctx, clean=False)
        raise
    D.shutdown(ctx)  # _train's frame, with the DDP model and optimizer, is gone by now
    return summary


def _test_kill_step(ctx: D.Context) -> int:
    """Crash tests only: the step at which this process SIGKILLs itself (``ARSMOOTH_KILL_AT_STEP``), on the rank
    ``ARSMOOTH_KILL_RANK`` names (default: every rank) and in the first attempt of a torchrun job only."""
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return 0
    rank = os.environ.get("ARSMOOTH_KILL_RANK", "")
    if rank and int(rank) != ctx.rank:
        return 0
    return int(os.environ.get("ARSMOOTH_KILL_AT_STEP", "0") or 0)


def restarted_run(cfg: dict, run_dir: Path) -> str | None:
    """Under ``torchrun --max-restarts``, what a restarted worker does with the run folder its first attempt
    made: ``resume`` (it holds this run's checkpoint), ``restart`` (it holds only this run's config: killed
    before the first checkpoint), else None (not a restart, or not this run: the usual checks apply)."""
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") in ("", "0"):
        return None
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    same = isinstance(saved, dict) and {**saved, "train": {**saved.get("train", {}), "max_steps": None, "max_minutes": None}} \
        == {**cfg, "train": {**cfg["train"], "max_steps": None, "max_minutes": None}}
    if not same:
        return None
    return "resume" if (run_dir / "last.pt").is_file() else "restart"


def _device_setting(cfg: dict | None, run_dir: Path, resume: bool) -> str:
    """The ``device`` setting that picks the process group's backend: the given config's, or on ``--resume``
    without one, the saved run's (so a CPU run resumed under torchrun on a GPU machine stays on gloo)."""
    if cfg is None and resume and (run_dir / "config.yaml").is_file():
        try:
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
            return saved.get("device", "auto") if isinstance(saved, dict) else "auto"
        except yaml.YAMLError:
            return "auto"  # the checkpoint's own config is checked, with a clear error, once loaded
    return (cfg or {}).get("device", "auto")


def _train(ctx: D.Context, cfg, run_dir: Path, resume, overwrite, progress, train_images, test_images,
           init_from=None) -> dict:
    sync_dev = torch.device("cuda", ctx.local_rank) if ctx.enabled and torch.cuda.is_available() and \
        _device_setting(cfg, run_dir, resume) != "cpu" else torch.device("cpu")
    err = None
    if ctx.main:
        try:
            prepare_run_dir(run_dir, resume, overwrite)
        except ArsmoothError as e:
            err = e
    D.check_all(ctx, err is None, f"rank 0 could not use the run folder {run_dir}", sync_dev)
    if err is not None:
        raise err
    ckpt_path = run_dir / "last.pt"
    ckpt = None
    if resume:
        ckpt = C.load_checkpoint(ckpt_path)
        saved = ckpt["config"]
        if cfg is not None and cfg != saved:
            diff = sorted(f"{s}.{k}" for s in saved if isinstance(saved[s], dict) for k in saved[s]
                          if cfg.get(s, {}).get(k) != saved[s][k])
            # budgets may grow on resume; anything else must match the run being resumed
            allowed = {"train.max_steps", "train.max_minutes"}
            bad = [d for d in diff if d not in allowed] + (["kind"] if cfg["kind"] != saved["kind"] else [])
            if bad:
                raise ArsmoothError(f"the config differs from the run being resumed in {', '.join(bad)}; "
                                    "resume with the run's own config (omit the preset)")
            saved = {**saved, "train": {**saved["train"], **{k.split(".")[1]: cfg["train"][k.split(".")[1]] for k in diff}}}
        cfg = saved
    validate(cfg)
    t_cfg = cfg["train"]
    device = pick_device(cfg["device"])
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    if train_images is None:
        train_images = load_configured(cfg["data"], "train")[0]
        test_images = load_configured(cfg["data"], "test")[0]
    if cfg["data"]["limit"]:
        train_images = train_images[: cfg["data"]["limit"]]
    if test_images is None:
        test_images = train_images[:0]
    test_images = test_images[: t_cfg["eval_images"]].to(device)
    train_images = train_images.to(device)
    shape = tuple(train_images.shape[1:])

    n, bs = train_images.shape[0], min(t_cfg["batch_size"], train_images.shape[0])
    if bs % ctx.world:  # refused before anything is written to the run folder
        raise ArsmoothError(f"the global batch size {bs} must be divisible by the number of processes ({ctx.world}); "
                            f"pick a train.batch_size that is")
    torch.manual_seed(t_cfg["seed"])  # the same initial weights on every rank
    model = build_model(cfg, shape).to(device)
    warm = init_weights_from(model, cfg, init_from) if init_from is not None and ckpt is None else None
    model._check(train_images[:1])
    for stage in getattr(model, "stages", (model,)):
        stage.net.check_size(train_images[:1])  # image size the network can take: refuse before writing anything
    opt = torch.optim.Adam(model.parameters(), lr=t_cfg["lr"])
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=t_cfg["lr_decay"])
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if t_cfg["ema"] else None
    kernel = make_kernel(cfg["smoothing"]["kernel"], cfg["smoothing"]["sigma"])
    # noise of the whole global batch comes from one generator, the same on every rank; dropout
    # draws from the global generator, seeded per rank
    noise_gen = torch.Generator(device).manual_seed(t_cfg["seed"] + 7919)
    torch.manual_seed(t_cfg["seed"] * 1000 + 1 + ctx.rank)
    step, seconds_before, running = 0, 0.0, None
    if ckpt is not None:
        if tuple(ckpt["extra"]["image_shape"]) != shape:
            raise ArsmoothError(f"the run was trained on images {tuple(ckpt['extra']['image_shape'])}, these are {shape}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema"):
            ema = {k: v.to(device) for k, v in ckpt["ema"].items()}
        step, seconds_before = ckpt["step"], ckpt["extra"].get("train_seconds", 0.0)
        running, warm = ckpt["extra"].get("running_bpd"), ckpt["extra"].get("init_from")
        if ctx.main:
            C.restore_rng(ckpt["rng"])
            _truncate_metrics(run_dir / "metrics.jsonl", step)
        else:
            torch.manual_seed(t_cfg["seed"] * 1000 + 1 + ctx.rank + 7 * step)
        if "noise" in ckpt["rng"]:
            noise_gen.set_state(ckpt["rng"]["noise"])
    elif ctx.main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    gpu = cfg.get("gpu") or {}
    use_bf16 = device.type == "cuda" and gpu.get("bf16", False)  # GPU options never touch CPU runs
    if device.type == "cuda" and gpu.get("channels_last", False):
        model = model.to(memory_format=torch.channels_last)
        train_images = train_images.contiguous(memory_format=torch.channels_last)
    loss_module = _Loss(model)
    if ctx.enabled:
        # DDP's hint that it copies gradients whose strides differ from its bucket (weight norm's (C, 1, 1, 1)
        # magnitudes): a speed note, not a correctness issue, printed once per rank; keep the log clean
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    dims = math.prod(shape)
    cache: dict = {}
    t0 = time.perf_counter()
    last_ckpt_time, last_good = t0, step
    max_s = None if t_cfg["max_minutes"] is None else 60 * t_cfg["max_minutes"]
    kill_at = _test_kill_step(ctx)

    def save(stopped: str) -> None:
        nonlocal last_ckpt_time, last_good
        test_bpd = evaluate_bpd(model, kernel, test_images, seed=t_cfg["seed"] + 1)
        C.save_checkpoint(ckpt_path, kind=cfg["kind"], model_state=model.state_dict(), config=cfg,
                          sigma=_sigma_of(model, cfg), step=step,
                          optimizer_state=opt.state_dict(), scheduler_state=sched.state_dict(), ema_state=ema,
                          rng_state={**C.capture_rng(), "noise": noise_gen.get_state()},
                          extra={"image_shape": list(shape), "train_seconds": seconds_before + time.perf_counter() - t0,
                                 "test_bpd": test_bpd, "params": count_params(model), "stopped": stopped,
                                 "running_bpd": running, "init_from": warm})
        last_ckpt_time, last_good = time.perf_counter(), step
        _append_metric(run_dir, {"step": step, "images": step * bs, "test_bpd": test_bpd, "checkpoint": True,
                                 "seconds": round(seconds_before + time.perf_counter() - t0, 2)})

    start_step = step
    if ctx.main and ckpt is not None and step < t_cfg["max_steps"]:
        (run_dir / "summary.json").unlink(missing_ok=True)  # the run goes on: its old summary no longer holds
    model.train()
    bar = tqdm(total=t_cfg["max_steps"], initial=step, desc=f"train {cfg['kind']}", disable=not (progress and ctx.main),
               dynamic_ncols=True)
    stopped = "max_steps"
    signals = _StopOnSignal()
    try:
        while step < t_cfg["max_steps"]:
            out_of_time = max_s is not None and seconds_before + time.perf_counter() - t0 >= max_s
            if D.agree(ctx, signals.received is not None, sync_dev):
                stopped = signals.received or "signal"  # on another rank
                break
            if D.agree(ctx, out_of_time, sync_dev):
                stopped = "max_minutes"
                break
            x = train_images[_batch_indices(step, n, bs, t_cfg["seed"], cache, ctx)]
            x_tilde = None
            if model.kind == "smoothed":  # eps of the global batch, this rank's rows; x~ = x + sigma eps in the model
                x_tilde = torch.randn((bs, *shape), generator=noise_gen, device=x.device, dtype=x.dtype)[ctx.rank :: ctx.world]
            elif model.kind != "baseline":  # the global batch's noise, this rank's rows
                x_tilde = x + kernel.noise((bs, *shape), x, noise_gen)[ctx.rank :: ctx.world]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_module(x, x_tilde)
            loss_all = D.mean(ctx, loss.detach())
            if not torch.isfinite(loss_all):
                bar.close()
                raise ArsmoothError(f"the training loss became {loss_all.item()} at step {step + 1}; stopped. The last "
                                    f"good checkpoint (step {last_good}) is kept in {ckpt_path}; lower train.lr and --resume")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].mul_(t_cfg["ema"]).add_(v, alpha=1 - t_cfg["ema"])
                        else:
                            ema[k].copy_(v)
            step += 1
            bpd = bits_per_dim(loss_all.item(), dims)
            running = bpd if running is None else 0.98 * running + 0.02 * bpd
            bar.update(1)
            if step % t_cfg["log_every"] == 0 and ctx.main:
                bar.set_postfix(bpd=f"{running:.3f}")
                rec = {"step": step, "train_bpd": running, "lr": sched.get_last_lr()[0]}
                if model.kind == "smoothed":
                    rec["sigma"] = model.sigma
                _append_metric(run_dir, {**rec, "seconds": round(seconds_before + time.perf_counter() - t0, 2)})
            now = time.perf_counter()
            if step == t_cfg["max_steps"] or (max_s is not None and seconds_before + now - t0 >= max_s):
                continue  # the loop head decides; the final checkpoint follows the loop
            if ctx.main and (step % t_cfg["checkpoint_every"] == 0 or now - last_ckpt_time >= 60 * t_cfg["checkpoint_minutes"]):
                save("running")
            if kill_at and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        signals.restore()
    bar.close()
    summary = {"kind": cfg["kind"], "steps": step, "stopped": stopped, "params": count_params(model),
               "eval_images": int(test_images.shape[0]), "device": str(device), "processes": ctx.world,
               "threads": torch.get_num_threads(), "batch_size": cfg["train"]["batch_size"]}
    finished = stopped in ("max_steps", "max_minutes")
    if ctx.main:
        if step != start_step or ckpt is None:  # resuming a run with nothing left to do writes nothing new
            save(stopped if finished else "running")
        summary = {**summary, "train_seconds": round(seconds_before + time.perf_counter() - t0, 1),
                   "test_bpd": _last_test_bpd(run_dir)}
        if finished:  # a run stopped by a signal is not finished: no summary, so --resume and reproduce go on
            atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    D.barrier(ctx)
    return summary


def _sigma_of(model, cfg: dict) -> float | None:
    """The noise level a checkpoint records: none for a baseline, the learned value of a smoothed model."""
    if cfg["kind"] == "baseline":
        return None
    return model.sigma if cfg["kind"] == "smoothed" else cfg["smoothing"]["sigma"]


class _StopOnSignal:
    """SIGINT / SIGTERM ask the loop to stop after the current step, with a checkpoint, instead of
    killing it (main thread only; elsewhere the default handlers stay)."""

    def __init__(self):
        self.received: str | None = None
        self._old = {}
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.received is not None:  # a second signal: stop now, the last checkpoint stays
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _append_metric(run_dir: Path, rec: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the crash
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def _last_test_bpd(run_dir: Path) -> float | None:
    vals = [rec["test_bpd"] for rec in read_metrics(run_dir) if "test_bpd" in rec]
    return vals[-1] if vals else None
