"""Training of the image models (baseline, stage 1, stage 2) with checkpoints that survive a crash.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (one JSON line per log step), ``last.pt``
(written atomically every ``checkpoint_every`` steps and ``checkpoint_minutes`` minutes) and, at the
end, ``summary.json``. ``resume=True`` restores model, optimizer, scheduler, EMA, RNG states and the
position in the data order, so a resumed CPU run reaches the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
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

from ..data.image_sets import load_configured
from ..errors import ArsmoothError, WriteFailed
from ..maths.kernels import make_kernel
from ..maths.likelihoods import bits_per_dim
from ..maths.objectives import objective_of
from ..models import count_params
from ..models.build import build_model, init_weights_from
from ..models.image_model import ImageModel
from ..networks.cpu_kernels import threads_for_masks
from ..runtime import checkpoint as ckpt_io
from ..runtime import distributed
from ..runtime.config import UNLIMITED_STEPS, Settings
from ..runtime.fileio import atomic_write_text, forget_created_folders, remove_unused_folders
from ..runtime.run_folder import append_metric, last_test_bpd, prepare_run_dir, saved_settings, truncate_metrics
from .loop import Loop


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ArsmoothError("device cuda was asked for but no CUDA GPU is available; use device=cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def loss_given_noise(model: ImageModel, x: torch.Tensor, x_tilde: torch.Tensor | None) -> torch.Tensor:
    """The training loss of the model's objective; for the joint ELBO ``x_tilde`` is the standard normal eps
    (x~ = x + sigma eps inside)."""
    return model.objective.loss(model, x, x_tilde)


class _Loss(torch.nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: ImageModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_tilde: torch.Tensor | None) -> torch.Tensor:
        return loss_given_noise(self.model, x, x_tilde)


def _batch_indices(step: int, n: int, bs: int, seed: int, cache: dict, ctx: distributed.Context) -> torch.Tensor:
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
        total += float(-model.objective.log_prob(model, images[i : i + batch_size], kernel, g).sum())
    model.train(was)
    return bits_per_dim(total / images.shape[0], images[0].numel())


def train(
    cfg: Settings | dict | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    train_images: torch.Tensor | None = None,
    test_images: torch.Tensor | None = None,
    init_from: str | Path | None = None,
    hooks=(),
) -> dict:
    """Train the model of ``cfg`` in ``run_dir``; returns the summary (also written to ``summary.json``).

    ``cfg`` may be None on ``resume`` (the run's own settings); a plain dict is read as :class:`Settings`.

    ``train_images``/``test_images`` (in [-1, 1]) bypass the dataset loader (tests, notebooks).
    ``init_from``: a checkpoint whose network weights start a new run (:func:`init_weights_from`).
    ``hooks``: callables run with the trainer after every step (after its log line and checkpoint).
    Under ``torchrun`` every rank trains its share of each global batch (DDP); rank 0 alone writes. A worker
    group restarted by ``torchrun --max-restarts`` continues the run from its last checkpoint
    (:func:`restarted_run`).
    """
    if isinstance(cfg, dict):
        cfg = Settings.from_dict(cfg)
    if cfg is not None and not resume and not overwrite:  # a worker restarted by torchrun carries on by itself
        again = restarted_run(cfg, Path(run_dir))
        resume, overwrite = again == "resume", again == "restart"
        init_from = None if resume else init_from  # the checkpoint holds the weights by now
    wants = _device_setting(cfg, Path(run_dir), resume)
    ctx = distributed.setup("cuda" if torch.cuda.is_available() and wants != "cpu" else "cpu")
    try:
        if init_from is not None and resume:
            raise ArsmoothError("--init-from starts a new run; a resumed run already has its weights")
        if init_from is not None and cfg is not None and objective_of(cfg.kind).joint:
            raise ArsmoothError("--init-from copies one network; a smoothed run trains two (start it from scratch)")
        hooks = (*hooks, *crash_hooks_from_env(ctx))
        summary = _train(ctx, cfg, Path(run_dir), resume, overwrite, progress, train_images, test_images, init_from,
                         hooks, wants)
    except BaseException:
        distributed.shutdown(ctx, clean=False)
        raise
    distributed.shutdown(ctx)  # _train's frame, with the DDP model and optimizer, is gone by now
    return summary


def crash_hooks_from_env(ctx: distributed.Context) -> list:
    """Crash tests of runs in a subprocess (where no hook can be passed in): ``ARSMOOTH_KILL_AT_STEP=N`` adds a
    hook that SIGKILLs the process after step N, on the rank ``ARSMOOTH_KILL_RANK`` names (default: every
    rank), in the first attempt of a torchrun job only."""
    step = int(os.environ.get("ARSMOOTH_KILL_AT_STEP", "0") or 0)
    rank = os.environ.get("ARSMOOTH_KILL_RANK", "")
    if not step or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0") or (rank and int(rank) != ctx.rank):
        return []

    def kill(trainer) -> None:
        if trainer.step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return [kill]


def restarted_run(cfg: Settings, run_dir: Path) -> str | None:
    """Under ``torchrun --max-restarts``, what a restarted worker does with the run folder its first attempt
    made: ``resume`` (it holds this run's checkpoint), ``restart`` (it holds only this run's config: killed
    before the first checkpoint), else None (not a restart, or not this run: the usual checks apply)."""
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") in ("", "0"):
        return None
    saved = saved_settings(run_dir)
    if saved is None or _without_budgets(saved) != _without_budgets(cfg):
        return None
    return "resume" if (run_dir / "last.pt").is_file() else "restart"


def _without_budgets(cfg: Settings) -> Settings:
    """``cfg`` with the two settings a resumed run may change (its step and time budgets) blanked."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=0, max_minutes=None))


def _device_setting(cfg: Settings | None, run_dir: Path, resume: bool) -> str:
    """The ``device`` setting that picks the process group's backend: the given config's, or on ``--resume``
    without one, the saved run's (so a CPU run resumed under torchrun on a GPU machine stays on gloo)."""
    if cfg is None and resume:
        saved = saved_settings(run_dir)
        return "auto" if saved is None else saved.device
    return "auto" if cfg is None else cfg.device


def _train(ctx: distributed.Context, cfg, run_dir: Path, resume, overwrite, progress, train_images, test_images,
           init_from, hooks, wants: str) -> dict:
    """Set up a run (or restore it from its checkpoint), train it until a budget or a signal stops it, and
    write its record; the pieces are :class:`_Trainer`'s. ``wants`` is the device setting that chose the
    process group's backend (:func:`_device_setting`)."""
    sync_dev = torch.device("cuda", ctx.local_rank) if ctx.enabled and torch.cuda.is_available() and \
        wants != "cpu" else torch.device("cpu")
    err = lock = None
    if ctx.main:
        try:
            lock = prepare_run_dir(run_dir, resume, overwrite)
        except ArsmoothError as e:
            err = e
    distributed.check_all(ctx, err is None, f"rank 0 could not use the run folder {run_dir}", sync_dev)
    if err is not None:
        raise err
    try:
        ckpt = ckpt_io.load_checkpoint(run_dir / "last.pt") if resume else None
        cfg, changed = _resumed_config(cfg, ckpt)
        trainer = _Trainer(ctx, cfg, run_dir, sync_dev, train_images, test_images, init_from, ckpt, hooks, changed)
    except BaseException:
        if lock is not None:
            lock.release()
        remove_unused_folders()  # refused before the run wrote anything: no empty run folder is left behind
        raise
    forget_created_folders()
    try:
        return trainer.finish(trainer.loop(progress))
    finally:
        if lock is not None:
            lock.release()


# settings a resumed run may change (the change is logged in metrics.jsonl and config.yaml follows it): the budgets,
# the learning rate and the bookkeeping; data.dataset only to point a folder: run at the folder's new place
RESUME_MAY_CHANGE = ("train.max_steps", "train.max_minutes", "train.lr", "train.lr_decay", "train.checkpoint_every",
                     "train.checkpoint_minutes", "train.log_every", "train.eval_images", "data.data_root")


def _resumed_config(cfg: Settings | None, ckpt: dict | None) -> tuple[Settings, dict]:
    """The settings a run trains with, and what differs from the saved run (``{key: [old, new]}``): ``cfg`` for a
    new run; on resume the checkpoint's, with the changes :data:`RESUME_MAY_CHANGE` allows."""
    if ckpt is None:
        return cfg, {}
    saved = ckpt_io.settings_of(ckpt)
    if cfg is None or cfg == saved:
        return saved, {}
    new, old = _flat(cfg), _flat(saved)
    changed = {k: [old[k], new[k]] for k in old if new[k] != old[k]}
    moved = lambda k: k == "data.dataset" and all(str(v).startswith("folder:") for v in changed[k])  # noqa: E731
    bad = [k for k in changed if k not in RESUME_MAY_CHANGE and not moved(k)]
    if bad:
        raise ArsmoothError(f"a resumed run keeps its settings, but {', '.join(bad)} would change; only "
                            f"{', '.join(RESUME_MAY_CHANGE)} (and a moved data.dataset=folder:) may. Start a new run "
                            "(--init-from the checkpoint) to change more")
    return cfg, changed


def _flat(cfg: Settings) -> dict:
    """``{"section.key": value}`` of every setting."""
    out = {}
    for name, v in cfg.to_dict().items():
        out.update({f"{name}.{k}": x for k, x in v.items()} if isinstance(v, dict) else {name: v})
    return out


class _Trainer(Loop):
    """One training run: its data, model, optimizer and random streams, and the pieces of the shared loop
    (:class:`arsmooth.training.loop.Loop`: ``should_stop``, ``batch``, ``train_step``, ``after_step``; ``finish``)."""

    def __init__(self, ctx: distributed.Context, cfg: Settings, run_dir: Path, sync_dev: torch.device, train_images,
                 test_images, init_from, ckpt: dict | None, hooks=(), changed: dict | None = None):
        self.ctx, self.cfg, self.t_cfg, self.run_dir, self.sync_dev = ctx, cfg, cfg.train, run_dir, sync_dev
        self.ckpt_path, self.resumed = run_dir / "last.pt", ckpt is not None
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda" and ctx.enabled:
            self.device = torch.device("cuda", ctx.local_rank)
        self._data(train_images, test_images)
        self._build(init_from if ckpt is None else None)
        self.step, self.seconds_before, self.running = 0, 0.0, None
        self.config_changed = bool(changed)  # config.yaml follows the checkpoint: rewritten with the next one
        if ckpt is not None:
            self._restore(ckpt, changed or {})
        elif ctx.main:
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self._accelerate()
        self.cache: dict = {}
        self.t0 = time.perf_counter()
        self.last_ckpt_time, self.last_good = self.t0, self.step
        self.max_s = None if self.t_cfg.max_minutes is None else 60 * self.t_cfg.max_minutes
        self.hooks = tuple(hooks)

    def _data(self, train_images, test_images) -> None:
        cfg, t_cfg = self.cfg, self.t_cfg
        if train_images is None:
            train_images = load_configured(cfg.data, "train")[0]
            test_images = load_configured(cfg.data, "test")[0]
        if cfg.data.limit:
            train_images = train_images[: cfg.data.limit]
        if test_images is None:
            test_images = train_images[:0]
        self.test_images = test_images[: t_cfg.eval_images].to(self.device)
        self.train_images = train_images.to(self.device)
        self.shape = tuple(self.train_images.shape[1:])
        self.n, self.bs = self.train_images.shape[0], t_cfg.batch_size
        if self.bs > self.n:  # refused, not shrunk: the settings, the summary and the report say what ran
            raise ArsmoothError(f"train.batch_size={self.bs} is larger than the {self.n} training images; "
                                f"give --set train.batch_size={self.n} or less (or more images)")
        if self.bs % self.ctx.world:  # refused before anything is written to the run folder
            raise ArsmoothError(f"the global batch size {self.bs} must be divisible by the number of processes "
                                f"({self.ctx.world}); pick a train.batch_size that is")

    def _build(self, init_from) -> None:
        """Model (the same initial weights on every rank), optimizer, schedule, EMA, kernel, random streams."""
        cfg, t_cfg = self.cfg, self.t_cfg
        torch.manual_seed(t_cfg.seed)
        model = build_model(cfg, self.shape).to(self.device)
        self.warm = init_weights_from(model, cfg, init_from) if init_from is not None else None
        model._check(self.train_images[:1])
        for stage in getattr(model, "stages", (model,)):
            stage.net.check_size(self.train_images[:1])  # image size the network can take: refuse before writing
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=t_cfg.lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=t_cfg.lr_decay)
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if t_cfg.ema else None
        self.kernel = make_kernel(cfg.smoothing.kernel, cfg.smoothing.sigma)
        # noise of the whole global batch comes from one generator, the same on every rank; dropout
        # draws from the global generator, seeded per rank
        self.noise_gen = torch.Generator(self.device).manual_seed(t_cfg.seed + 7919)
        torch.manual_seed(t_cfg.seed * 1000 + 1 + self.ctx.rank)

    def _restore(self, ckpt: dict, changed: dict) -> None:
        """Continue exactly where the checkpoint stopped: weights, optimizer, schedule, EMA, random states; a
        changed learning rate (``changed``, logged to ``metrics.jsonl``) holds from here on, its decay going on."""
        if tuple(ckpt["extra"]["image_shape"]) != self.shape:
            raise ArsmoothError(f"the run was trained on images {tuple(ckpt['extra']['image_shape'])}, "
                                f"these are {self.shape}")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        self.step, self.seconds_before = ckpt["step"], ckpt["extra"].get("train_seconds", 0.0)
        self.running, self.warm = ckpt["extra"].get("running_bpd"), ckpt["extra"].get("init_from")
        if self.ctx.main:
            ckpt_io.restore_rng(ckpt["rng"])
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        else:
            torch.manual_seed(self.t_cfg.seed * 1000 + 1 + self.ctx.rank + 7 * self.step)
        if "noise" in ckpt["rng"]:
            self.noise_gen.set_state(ckpt["rng"]["noise"])
        if "train.lr" in changed:
            for group in self.opt.param_groups:
                group["lr"] = self.t_cfg.lr
        if changed and self.ctx.main:
            append_metric(self.run_dir, {"step": self.step, "resumed_with": changed})

    def _accelerate(self) -> None:
        """GPU options (never on CPU, so CPU results never change) and the DDP wrapper under torchrun."""
        gpu = self.cfg.gpu
        self.use_bf16 = self.device.type == "cuda" and gpu.bf16
        if self.device.type == "cuda" and gpu.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.train_images = self.train_images.contiguous(memory_format=torch.channels_last)
        self.loss_module = _Loss(self.model)
        if self.ctx.enabled:
            # DDP's hint that it copies gradients whose strides differ from its bucket (weight norm's (C, 1, 1, 1)
            # magnitudes): a speed note, not a correctness issue, printed once per rank; keep the log clean
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def loop(self, progress: bool) -> str:
        """Train until ``train.max_steps``, ``train.max_minutes`` or a signal; returns what stopped it."""
        self.start_step = self.step
        if self.ctx.main and self.resumed and self.step < self.t_cfg.max_steps:
            (self.run_dir / "summary.json").unlink(missing_ok=True)  # the run goes on: its old summary no longer holds
        self.model.train()
        show, desc = progress and self.ctx.main, f"train {self.cfg.kind}"
        if self.max_s is not None and self.t_cfg.max_steps >= UNLIMITED_STEPS:  # a time budget alone
            self.bar = _MinutesBar(self, desc, disable=not show)
        else:
            self.bar = tqdm(total=self.t_cfg.max_steps, initial=self.step, desc=desc, disable=not show, dynamic_ncols=True)
        self.signals = _StopOnSignal()
        try:
            stopped = self.run(self.t_cfg.max_steps, self.bar)
        finally:
            self.signals.restore()
        self.bar.close()
        return stopped

    def should_stop(self) -> str | None:
        """A signal on any rank, or the time budget; every rank agrees with rank 0, so all stop together."""
        if distributed.agree(self.ctx, self.signals.received is not None, self.sync_dev):
            return self.signals.received or "signal"  # on another rank
        out_of_time = self.max_s is not None and self._seconds() >= self.max_s
        return "max_minutes" if distributed.agree(self.ctx, out_of_time, self.sync_dev) else None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's rows of the global batch of ``self.step`` and their noise (eps for a smoothed model)."""
        ctx, bs, shape = self.ctx, self.bs, self.shape
        x = self.train_images[_batch_indices(self.step, self.n, bs, self.t_cfg.seed, self.cache, ctx)]
        rows = slice(ctx.rank, None, ctx.world)
        return x, self.model.objective.batch_noise(x, self.kernel, (bs, *shape), self.noise_gen, rows)

    def train_step(self, x: torch.Tensor, x_tilde: torch.Tensor | None) -> float:
        """One optimizer step; returns the loss averaged over the ranks (before the step) in bits/dim."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_bf16), threads_for_masks(self.model):
            loss = self.loss_module(x, x_tilde)
        loss_all = distributed.mean(self.ctx, loss.detach())
        if not torch.isfinite(loss_all):
            self.bar.close()
            raise ArsmoothError(f"the training loss became {loss_all.item()} at step {self.step + 1}; stopped. "
                                + self._after_nan())
        self.update(loss)
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.model.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].mul_(self.t_cfg.ema).add_(v, alpha=1 - self.t_cfg.ema)
                    else:
                        self.ema[k].copy_(v)
        return bits_per_dim(loss_all.item(), math.prod(self.shape))

    def _after_nan(self) -> str:
        """What to do after a non-finite loss: resume the last checkpoint with a lower rate, or start again."""
        lower = f"train.lr={self.t_cfg.lr / 10:g}"
        if self.ckpt_path.is_file():
            step = ckpt_io.load_checkpoint(self.ckpt_path)["step"]
            return (f"The last good checkpoint, step {step}, is {self.ckpt_path}: arsmooth train --out {self.run_dir} "
                    f"--resume --set {lower}")
        return (f"No checkpoint was written yet (the first comes at step {self.t_cfg.checkpoint_every}): start again "
                f"with --overwrite --set {lower}")

    def after_step(self, bar) -> None:
        self._log(bar)
        self._checkpoint()

    def _log(self, bar) -> None:
        if self.step % self.t_cfg.log_every or not self.ctx.main:
            return
        bar.set_postfix(bpd=f"{self.running:.3f}")
        rec = {"step": self.step, "train_bpd": self.running, "lr": self.sched.get_last_lr()[0],
               **self.model.objective.logged(self.model)}
        try:
            append_metric(self.run_dir, {**rec, "seconds": round(self._seconds(), 2)})
        except OSError as e:
            raise self._write_stopped(e) from None

    def _checkpoint(self) -> None:
        """A checkpoint every ``checkpoint_every`` steps or ``checkpoint_minutes`` minutes (the last one is
        written by ``finish``)."""
        now = time.perf_counter()
        if self.step == self.t_cfg.max_steps or (self.max_s is not None and self._seconds() >= self.max_s):
            return  # the loop head decides; the final checkpoint follows the loop
        due = self.step % self.t_cfg.checkpoint_every == 0 or now - self.last_ckpt_time >= 60 * self.t_cfg.checkpoint_minutes
        if self.ctx.main and due:
            self.save("running")

    def save(self, stopped: str) -> None:
        """Write ``last.pt`` atomically (with the test bits/dim) and log it; a failed write (a full disk) stops
        the run with one line: the previous checkpoint is intact and resumes."""
        try:
            self._save(stopped)
        except (WriteFailed, OSError) as e:
            raise self._write_stopped(e) from None

    def _write_stopped(self, e: OSError | WriteFailed) -> ArsmoothError:
        """One line for a write that failed mid-run: what, that the previous checkpoint is intact, how to resume."""
        why = str(e).split("; ")[0] if isinstance(e, WriteFailed) else \
            f"could not write {e.filename or self.run_dir} ({e.strerror or e})"
        where = (f"the previous checkpoint {self.ckpt_path} is intact; once there is space: arsmooth train "
                 f"--out {self.run_dir} --resume") if self.ckpt_path.is_file() else "no checkpoint was written yet"
        return ArsmoothError(f"{why}; stopped at step {self.step}: {where}")

    def _save(self, stopped: str) -> None:
        cfg, t_cfg, model = self.cfg, self.t_cfg, self.model
        test_bpd = evaluate_bpd(model, self.kernel, self.test_images, seed=t_cfg.seed + 1)
        ckpt_io.save_checkpoint(self.ckpt_path, kind=cfg.kind, model_state=model.state_dict(), config=cfg.to_dict(),
                          sigma=model.objective.sigma(model, cfg.smoothing), step=self.step,
                          optimizer_state=self.opt.state_dict(), scheduler_state=self.sched.state_dict(), ema_state=self.ema,
                          rng_state={**ckpt_io.capture_rng(), "noise": self.noise_gen.get_state()},
                          extra={"image_shape": list(self.shape), "train_seconds": self._seconds(),
                                 "test_bpd": test_bpd, "params": count_params(model), "stopped": stopped,
                                 "running_bpd": self.running, "init_from": self.warm})
        self.last_ckpt_time, self.last_good = time.perf_counter(), self.step
        if self.config_changed:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.config_changed = False
        append_metric(self.run_dir, {"step": self.step, "images": self.step * self.bs, "test_bpd": test_bpd,
                                      "checkpoint": True, "seconds": round(self._seconds(), 2)})

    def finish(self, stopped: str) -> dict:
        """The final checkpoint and, for a run that reached its budget, ``summary.json``; returns the summary."""
        summary = {"kind": self.cfg.kind, "steps": self.step, "stopped": stopped, "params": count_params(self.model),
                   "eval_images": int(self.test_images.shape[0]), "device": str(self.device),
                   "processes": self.ctx.world, "threads": torch.get_num_threads(),
                   "batch_size": self.t_cfg.batch_size}
        finished = stopped in ("max_steps", "max_minutes")
        if self.ctx.main:
            if self.step != self.start_step or not self.resumed:  # resuming a run with nothing left to do writes nothing
                self.save(stopped if finished else "running")
            summary = {**summary, "train_seconds": round(self._seconds(), 1), "test_bpd": last_test_bpd(self.run_dir)}
            if finished:  # a run stopped by a signal is not finished: no summary, so --resume and reproduce go on
                atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        distributed.barrier(self.ctx)
        return summary


class _MinutesBar:
    """The progress bar of a run with a time budget and no step budget: elapsed of budgeted minutes (a
    resumed run's earlier minutes included), with the steps done so far."""

    def __init__(self, trainer: _Trainer, desc: str, disable: bool):
        self.trainer, self.extra = trainer, {}
        self.bar = tqdm(total=round(trainer.max_s / 60, 2), desc=desc, disable=disable, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}{postfix}]")
        self.update(0)

    def update(self, n: int) -> None:
        t = self.trainer
        self.bar.n = min(round(t._seconds() / 60, 2), self.bar.total)
        self.bar.set_postfix(steps=t.step, **self.extra)

    def set_postfix(self, **kw) -> None:
        self.extra.update(kw)

    def close(self) -> None:
        self.bar.close()


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
