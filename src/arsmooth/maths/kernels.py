"""Smoothing kernels q(x~ | x): symmetric, stationary noise added to the data (paper section 3).

Each kernel is parameterised by its standard deviation so that kernels of different families can
be compared on one axis (paper Fig. 4). ``log_prob`` and ``entropy`` sum over every non-batch
dimension, so they work for points ``(N, D)`` and images ``(B, C, H, W)`` alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ArsmoothError
from .likelihoods import draw


def event_dims(x: Tensor) -> int:
    """Dimensions per example of a batch ``x``."""
    return int(math.prod(x.shape[1:]))


def _sum_event(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


class Kernel:
    """Base class: ``x~ = x + eps`` with ``eps`` i.i.d. per coordinate and standard deviation ``std``."""

    name = "kernel"

    def __init__(self, std: float):
        std = float(std)
        if not math.isfinite(std) or std <= 0:
            raise ArsmoothError(f"sigma must be a positive number, got {std}; e.g. --sigma 0.3")
        self.std = std

    def noise(self, shape, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x~ ~ q(. | x)``; never clamped (x~ may leave the data range)."""
        return x + self.noise(x.shape, x, generator)

    def log_prob_noise(self, eps: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x_tilde: Tensor, x: Tensor) -> Tensor:
        """``log q(x~ | x)`` summed over the event dimensions, shape ``(N,)``."""
        return _sum_event(self.log_prob_noise(x_tilde - x))

    def entropy_per_dim(self) -> float:
        raise NotImplementedError

    def entropy(self, dims: int) -> float:
        """Differential entropy ``H(q(. | x))`` of ``dims`` coordinates, in nats."""
        return dims * self.entropy_per_dim()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std:g})"


class Gaussian(Kernel):
    """``N(x, sigma^2 I)``: the paper's main kernel; H = (D/2) log(2 pi e sigma^2)."""

    name = "gaussian"

    def noise(self, shape, like, generator=None):
        return self.std * draw("normal", shape, generator, like)

    def log_prob_noise(self, eps):
        return -0.5 * (eps / self.std) ** 2 - math.log(self.std) - 0.5 * math.log(2 * math.pi)

    def entropy_per_dim(self):
        return 0.5 * math.log(2 * math.pi * math.e * self.std**2)


class Laplace(Kernel):
    """Laplace with scale ``b = std / sqrt(2)``; H = 1 + log(2 b) per dimension."""

    name = "laplace"

    @property
    def scale(self) -> float:
        return self.std / math.sqrt(2.0)

    def noise(self, shape, like, generator=None):
        u = draw("uniform", shape, generator, like)
        u = (u - 0.5).clamp(-0.5 + 1e-7, 0.5 - 1e-7)
        return -self.scale * torch.sign(u) * torch.log1p(-2 * u.abs())

    def log_prob_noise(self, eps):
        return -eps.abs() / self.scale - math.log(2 * self.scale)

    def entropy_per_dim(self):
        return 1.0 + math.log(2 * self.scale)


class Uniform(Kernel):
    """Uniform on ``[x - w, x + w]`` with ``w = sqrt(3) std``; H = log(2 w) per dimension."""

    name = "uniform"

    @property
    def half_width(self) -> float:
        return math.sqrt(3.0) * self.std

    def noise(self, shape, like, generator=None):
        u = draw("uniform", shape, generator, like)
        return (2 * u - 1) * self.half_width

    def log_prob_noise(self, eps):
        inside = eps.abs() <= self.half_width
        val = torch.full_like(eps, -math.log(2 * self.half_width))
        return torch.where(inside, val, torch.full_like(eps, -math.inf))

    def entropy_per_dim(self):
        return math.log(2 * self.half_width)


KERNELS = {k.name: k for k in (Gaussian, Laplace, Uniform)}


def make_kernel(name: str, std: float) -> Kernel:
    """Kernel by name (``gaussian``, ``laplace``, ``uniform``) and standard deviation."""
    if name not in KERNELS:
        raise ArsmoothError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
    return KERNELS[name](std)


def sigma_heuristic(data: Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Saremi & Hyvarinen's choice: median pairwise Euclidean distance / (2 sqrt(D)).

    Uses a random subset of at most ``max_points`` examples so large datasets stay cheap.
    """
    x = data.flatten(1).double()
    if x.shape[0] < 2:
        raise ArsmoothError("the sigma heuristic needs at least 2 data points")
    if x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    d = torch.cdist(x, x)
    iu = torch.triu_indices(len(x), len(x), offset=1)
    return float(d[iu[0], iu[1]].median() / (2 * math.sqrt(x.shape[1])))
