"""A small in-memory training loop for the synthetic experiments.

It knows nothing of the model: it minimises ``loss_fn(batch)`` over shuffled mini-batches of a
tensor with Adam, optionally with the paper's per-iteration learning-rate decay.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import ArsmoothError


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # running mean loss, one per logged step
    seconds: float = 0.0
    steps: int = 0


def fit(
    module: torch.nn.Module,
    loss_fn,
    data: Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
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
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay)
    n = data.shape[0]
    bs = min(batch_size, n)
    result, t0, run, perm, pos = FitResult(), time.perf_counter(), 0.0, None, n
    module.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        batch = data[perm[pos : pos + bs]]
        pos += bs
        loss = loss_fn(batch)
        if not math.isfinite(loss.item()):
            raise ArsmoothError(f"{desc}: the loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            result.losses.append(run)
            bar.set_postfix(loss=f"{run:.3f}")
    module.eval()
    result.seconds, result.steps = time.perf_counter() - t0, steps
    return result


@torch.no_grad()
def evaluate(fn, data: Tensor, batch_size: int = 4096) -> float:
    """Mean of a per-example function (e.g. negative log-likelihood) over ``data``, in batches."""
    vals = [fn(data[i : i + batch_size]) for i in range(0, data.shape[0], batch_size)]
    return float(torch.cat(vals).mean())
