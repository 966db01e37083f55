"""The training loop every model here shares, and its in-memory form for the small models.

:class:`Loop` is the skeleton: ``run`` repeats ``should_stop`` -> ``batch`` -> ``train_step`` ->
``after_step`` until a step budget and keeps the running loss. :func:`fit` is the loop of the synthetic
experiments and the demo (shuffled mini-batches of a tensor, Adam, the paper's per-step learning-rate
decay); the image runs (:mod:`arsmooth.training.trainer`) add resume, DDP, EMA, logging and checkpoints to it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ArsmoothError


class Loop:
    """``run(total, bar)`` trains until ``step == total`` or ``should_stop`` names a reason, and returns it
    (``max_steps`` at the budget). Subclasses give ``opt`` and ``sched`` and fill in the pieces; ``running``
    is the running mean (0.98 / 0.02) of what ``train_step`` returns, ``hooks`` run after every step
    (``hook(loop)``: tests use them to crash a run at a chosen step)."""

    step: int = 0
    running: float | None = None
    hooks: tuple = ()

    def run(self, total: int, bar) -> str:
        while self.step < total:
            reason = self.should_stop()
            if reason:
                return reason
            value = self.train_step(*self.batch())
            self.step += 1
            self.running = value if self.running is None else 0.98 * self.running + 0.02 * value
            bar.update(1)
            self.after_step(bar)
            for hook in self.hooks:
                hook(self)
        return "max_steps"

    def update(self, loss: Tensor) -> None:
        """One optimizer step on ``loss``, then one step of the learning-rate schedule."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()

    def should_stop(self) -> str | None:
        return None

    def batch(self) -> tuple:
        raise NotImplementedError

    def train_step(self, *batch) -> float:
        raise NotImplementedError

    def after_step(self, bar) -> None:
        pass


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # running mean loss, one per logged step
    seconds: float = 0.0
    steps: int = 0


class _Fit(Loop):
    """Shuffled mini-batches of an in-memory tensor: a seeded permutation per epoch."""

    def __init__(self, module, loss_fn, data: Tensor, steps: int, batch_size: int, lr: float, lr_decay: float,
                 seed: int, desc: str, log_every: int):
        self.loss_fn, self.data, self.steps, self.desc, self.log_every = loss_fn, data, steps, desc, log_every
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.Adam(module.parameters(), lr=lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=lr_decay)
        self.n = data.shape[0]
        self.bs, self.perm, self.pos = min(batch_size, self.n), None, self.n
        self.losses: list[float] = []

    def batch(self) -> tuple[Tensor]:
        if self.pos + self.bs > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        self.pos += self.bs
        return (self.data[self.perm[self.pos - self.bs : self.pos]],)

    def train_step(self, batch: Tensor) -> float:
        loss = self.loss_fn(batch)
        if not math.isfinite(loss.item()):
            raise ArsmoothError(f"{self.desc}: the loss became {loss.item()} at step {self.step}; lower the learning rate")
        self.update(loss)
        return loss.item()

    def after_step(self, bar) -> None:
        if self.step % self.log_every == 0 or self.step == self.steps:
            self.losses.append(self.running)
            bar.set_postfix(loss=f"{self.running:.3f}")


def fit(
    module: torch.nn.Module,
    loss_fn,
    data: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    lr_decay: float = 1.0,
    seed: int = 0,
    desc: str = "train",
    progress: bool = True,
    log_every: int = 50,
) -> FitResult:
    """Minimise ``loss_fn(batch)`` for ``steps`` Adam steps; returns the loss history and wall time.

    Batches are drawn by a seeded permutation per epoch, so a run is reproducible from ``seed``.
    ``lr_decay`` multiplies the learning rate every step (the paper uses 0.999995).
    """
    if steps < 0 or batch_size < 1:
        raise ArsmoothError(f"steps must be >= 0 and batch size >= 1, got {steps} and {batch_size}")
    t0 = time.perf_counter()
    loop = _Fit(module, loss_fn, data, steps, batch_size, lr, lr_decay, seed, desc, log_every)
    module.train()
    with tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        loop.run(steps, bar)
    module.eval()
    return FitResult(losses=loop.losses, seconds=time.perf_counter() - t0, steps=steps)


@torch.no_grad()
def evaluate(fn, data: Tensor, batch_size: int = 4096) -> float:
    """Mean of a per-example function (e.g. negative log-likelihood) over ``data``, in batches."""
    vals = [fn(data[i : i + batch_size]) for i in range(0, data.shape[0], batch_size)]
    return float(torch.cat(vals).mean())
