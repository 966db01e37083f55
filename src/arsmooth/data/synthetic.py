"""Synthetic 1-d and 2-d datasets of the paper's sections 3.1, 4.1, 4.2, 5 and App. B.

The paper does not publish its generators: these definitions are ours.
Train and test sets come from separate seeded generators, so they never share a point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ArsmoothError


@dataclass(frozen=True)
class GaussianMixture1d:
    """Equal-weight 1-d mixture of Gaussians with a shared std: an exact density to compare with."""

    means: tuple[float, ...]
    std: float

    def log_prob(self, x: Tensor) -> Tensor:
        m = torch.tensor(self.means, dtype=x.dtype, device=x.device)
        z = (x.unsqueeze(-1) - m) / self.std
        comp = -0.5 * z**2 - math.log(self.std) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(comp, -1) - math.log(len(self.means))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        m = torch.tensor(self.means)[k]
        return (m + self.std * torch.randn(n, generator=generator)).unsqueeze(1)  # (N, 1)

    def smoothed(self, sigma: float) -> "GaussianMixture1d":
        """Convolution with N(0, sigma^2): the exact density of x~ (App. B.1)."""
        return GaussianMixture1d(self.means, math.sqrt(self.std**2 + sigma**2))

    def posterior_mean(self, x_tilde: Tensor, sigma: float) -> Tensor:
        """Closed-form E[x | x~] under Gaussian smoothing with std ``sigma``."""
        m = torch.tensor(self.means, dtype=x_tilde.dtype)
        v, s2 = self.std**2, sigma**2
        smooth = self.smoothed(sigma)
        zt = (x_tilde.unsqueeze(-1) - m) / smooth.std
        w = torch.softmax(-0.5 * zt**2, -1)  # responsibilities of each mode
        mean_k = (s2 * m + v * x_tilde.unsqueeze(-1)) / (v + s2)
        return (w * mean_k).sum(-1)


TEN_MODES = GaussianMixture1d(tuple(-4.5 + i for i in range(10)), 0.1)
SIX_MODES = GaussianMixture1d(tuple(-5.0 + 2 * i for i in range(6)), 0.1)
TWO_GAUSSIANS = GaussianMixture1d((-0.3, 0.3), 0.1)

MIXTURES_1D = {"ten_modes": TEN_MODES, "six_modes": SIX_MODES, "two_gaussians": TWO_GAUSSIANS}


def rings(n: int, generator: torch.Generator) -> Tensor:
    """Four concentric circles (radii 3, 2.25, 1.5, 0.75), equal counts, noise std 0.08."""
    radii = torch.tensor([3.0, 2.25, 1.5, 0.75])
    r = radii[torch.arange(n) % 4]
    theta = 2 * math.pi * torch.rand(n, generator=generator)
    x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    x = x + 0.08 * torch.randn(n, 2, generator=generator)
    return x[torch.randperm(n, generator=generator)]


OLYMPIC_CENTRES = ((-1.75, 0.75), (0.0, 0.75), (1.75, 0.75), (-1.05, -0.75), (1.05, -0.75))


def olympics(n: int, generator: torch.Generator) -> Tensor:
    """Five intersecting unit circles (the Olympic rings), uniform angles, noise std 0.1 (ours)."""
    c = torch.tensor(OLYMPIC_CENTRES)[torch.randint(5, (n,), generator=generator)]
    theta = 2 * math.pi * torch.rand(n, generator=generator)
    x = c + torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    return x + 0.1 * torch.randn(n, 2, generator=generator)


def _circles_log_prob(x: Tensor, centres, radii, std: float) -> Tensor:
    """``log p(x)`` of an equal-weight mixture of circles (uniform angle) plus isotropic N(0, std^2) noise.

    A circle of radius ``R`` has, at distance ``r`` from its centre, the density
    ``exp(-(r^2 + R^2) / (2 s^2)) I0(r R / s^2) / (2 pi s^2)`` (I0: modified Bessel function; computed
    with the scaled ``i0e`` for stability).
    """
    var = std**2
    c, big_r = torch.tensor(centres, dtype=x.dtype), torch.tensor(radii, dtype=x.dtype)
    r = (x[:, None, :] - c[None]).norm(dim=-1)
    log_ring = -math.log(2 * math.pi * var) - (r - big_r) ** 2 / (2 * var) + torch.log(torch.special.i0e(r * big_r / var))
    return torch.logsumexp(log_ring, 1) - math.log(len(radii))


def _check_sigma(sigma: float) -> None:
    if not sigma >= 0:
        raise ArsmoothError(f"sigma must be >= 0, got {sigma}")


def rings_log_prob(x: Tensor, sigma: float = 0.0) -> Tensor:
    """Exact ``log p(x)`` of the rings data, convolved with N(0, sigma^2 I) when ``sigma > 0``, ``(N,)``.

    Smoothing adds variances (``0.08^2 + sigma^2``). The test set's mean ``-log p`` is the NLL floor.
    """
    _check_sigma(sigma)
    return _circles_log_prob(x, [(0.0, 0.0)] * 4, (3.0, 2.25, 1.5, 0.75), math.sqrt(0.08**2 + sigma**2))


def olympics_log_prob(x: Tensor, sigma: float = 0.0) -> Tensor:
    """Exact ``log p(x)`` of the olympics data, convolved with N(0, sigma^2 I) when ``sigma > 0``, ``(N,)``.

    Five unit circles with noise std 0.1; smoothing adds variances (``0.1^2 + sigma^2``). The test
    set's mean ``-log p`` is the NLL floor for every model.
    """
    _check_sigma(sigma)
    return _circles_log_prob(x, OLYMPIC_CENTRES, (1.0,) * len(OLYMPIC_CENTRES), math.sqrt(0.1**2 + sigma**2))


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on eight 2x2 squares of [-4, 4]^2; exact NLL floor log 32 = 3.466 nats."""
    x1 = 4 * torch.rand(n, generator=generator) - 2
    x2 = (
        torch.rand(n, generator=generator)
        - 2 * torch.randint(2, (n,), generator=generator).float()
        + torch.floor(x1).remainder(2)
    )
    return 2 * torch.stack([x1, x2], 1)


def checkerboard_squares() -> list[tuple[float, float, float, float]]:
    """The eight 2x2 squares ``(x1_lo, x1_hi, x2_lo, x2_hi)`` the checkerboard is uniform on."""
    return [(2.0 * k, 2.0 * k + 2, 2.0 * m, 2.0 * m + 2) for k in (-2, -1, 0, 1) for m in (k % 2, k % 2 - 2)]


def checkerboard_smoothed_log_prob(x_tilde: Tensor, sigma: float) -> Tensor:
    """Exact ``log p(x~)`` of the checkerboard convolved with N(0, sigma^2 I), ``(N,)`` (closed form via erf).

    Each square contributes ``(1/32) prod_d [Phi((hi_d - x~_d)/sigma) - Phi((lo_d - x~_d)/sigma)]``.
    """
    normal = torch.distributions.Normal(torch.zeros((), dtype=x_tilde.dtype), torch.ones((), dtype=x_tilde.dtype))
    total = x_tilde.new_zeros(x_tilde.shape[0])
    for a1, b1, a2, b2 in checkerboard_squares():
        p1 = normal.cdf((b1 - x_tilde[:, 0]) / sigma) - normal.cdf((a1 - x_tilde[:, 0]) / sigma)
        p2 = normal.cdf((b2 - x_tilde[:, 1]) / sigma) - normal.cdf((a2 - x_tilde[:, 1]) / sigma)
        total = total + p1 * p2
    return torch.log(total / 32)


def _mixture_sampler(mix: GaussianMixture1d):
    return lambda n, g: mix.sample(n, g)


GENERATORS = {
    "ten_modes": _mixture_sampler(TEN_MODES),
    "six_modes": _mixture_sampler(SIX_MODES),
    "two_gaussians": _mixture_sampler(TWO_GAUSSIANS),
    "rings": rings,
    "olympics": olympics,
    "checkerboard": checkerboard,
}


def make_dataset(name: str, n: int, seed: int) -> Tensor:
    """``n`` points ``(N, D)`` of dataset ``name`` from a generator seeded with ``seed``."""
    if name not in GENERATORS:
        raise ArsmoothError(f"unknown dataset {name!r}; choose one of {', '.join(GENERATORS)}")
    if n <= 0:
        raise ArsmoothError(f"number of points must be positive, got {n}")
    return GENERATORS[name](n, torch.Generator().manual_seed(seed)).float()


def train_test(name: str, n_train: int = 20_000, n_test: int = 10_000, seed: int = 0):
    """Separate train and test sets (distinct generator seeds ``2 seed`` and ``2 seed + 1``)."""
    return make_dataset(name, n_train, 2 * seed), make_dataset(name, n_test, 2 * seed + 1)
