"""The paper's theory checked numerically (Meng et al., ICLR 2021, Section 3).

Theorem 1: convolving a 1-d density with a stationary kernel q(x~ | x) = k(x~ - x) does not increase its
Lipschitz constant. Proposition 1: for noise of small variance eta,
E_q[log p(x~)] = log p(x) + (eta / 2) sum_i d^2 log p / dx_i^2 + o(eta).

Both are checked with the library's kernels (their densities, scales and half-widths) and its mixture of
logistics, in float64; each test also runs a control that must fail the same check (a non-stationary
kernel; a wrong coefficient) so that the check is known to be able to fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arsmooth.maths import likelihoods as L
from arsmooth.maths.kernels import Gaussian, Laplace, Uniform, make_kernel

H = 0.002  # grid step
GRID = torch.arange(-10.0, 10.0 + H / 2, H, dtype=torch.float64)


def _mixture(mus, log_ss, logits):
    t = [torch.tensor(v, dtype=torch.float64) for v in (logits, mus, log_ss)]
    return lambda x: L.mixture_log_prob(x, *(v.expand(len(x), len(v)) for v in t)).exp()


def _smooth(p: torch.Tensor, kernel) -> torch.Tensor:
    """p~(x_i) = sum_j p(x_j) q(x_i | x_j) h, with q the library kernel's density of x~ - x."""
    offsets = torch.arange(-len(GRID) // 2, len(GRID) // 2 + 1, dtype=torch.float64) * H
    k = kernel.log_prob_noise(offsets).exp() * H
    n = len(p) + len(k) - 1  # a full linear convolution by FFT, then the part over the grid
    full = torch.fft.irfft(torch.fft.rfft(p, n) * torch.fft.rfft(k, n), n)
    return full[len(k) // 2 : len(k) // 2 + len(p)]


def _lipschitz(f: torch.Tensor) -> float:
    """The largest slope between neighbouring grid points."""
    return float((f[1:] - f[:-1]).abs().max() / H)


def _tolerance(kernel) -> float:
    """How far a Riemann sum of the kernel density can be from 1 on this grid (the discontinuous uniform's
    edges are the worst: one grid step of density 1 / (2 w) on each side)."""
    w = kernel.half_width if isinstance(kernel, Uniform) else kernel.std
    return 2 * H / w + 1e-9


mixtures = st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-3, 3), min_size=n, max_size=n),
    st.lists(st.floats(math.log(0.02), math.log(1.0)), min_size=n, max_size=n),  # scale 0.02: nearly a step
    st.lists(st.floats(-2, 2), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None)
@given(mix=mixtures, name=st.sampled_from(["gaussian", "laplace", "uniform"]), std=st.floats(0.02, 1.5))
def test_theorem1_smoothing_never_increases_the_lipschitz_constant(mix, name, std):
    p = _mixture(*mix)(GRID)
    kernel = make_kernel(name, std)
    mass = float(kernel.log_prob_noise(GRID).exp().sum() * H)
    assert abs(mass - 1) < _tolerance(kernel), f"the {name} kernel's density does not integrate to one ({mass})"
    lp, lq = _lipschitz(p), _lipschitz(_smooth(p, kernel))
    assert lq <= lp * (1 + _tolerance(kernel)), (lp, lq)


def test_theorem1_holds_for_an_asymmetric_stationary_kernel_and_fails_for_a_shrinking_one():
    """Symmetry is not what the theorem needs: a skewed stationary kernel still never sharpens the density.
    Stationarity is: q(x~ | x) = N(x~; a x, s^2) with a < 1 (a variance-preserving diffusion step) does."""
    p = _mixture([-1.0, 0.5], [math.log(0.05), math.log(0.3)], [0.0, 0.5])(GRID)

    class Skewed(Gaussian):  # exponential noise: x~ = x + e, e ~ Exp(1 / std), stationary but one-sided
        def log_prob_noise(self, eps):
            return torch.where(eps >= 0, -eps / self.std - math.log(self.std), torch.tensor(-math.inf, dtype=eps.dtype))

    for std in (0.02, 0.1, 0.5):
        skewed = _smooth(p, Skewed(std))
        assert _lipschitz(skewed) <= _lipschitz(p) * (1 + 2 * H / std)
    a, s, step = 0.6, 0.02, 3  # p~(x~) = sum_x p(x) N(x~; a x, s^2) h, on every third grid point
    g, pc = GRID[::step], p[::step]
    q = torch.exp(-0.5 * ((g.view(-1, 1) - a * g.view(1, -1)) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    shrunk = (q * pc.view(1, -1)).sum(1) * step * H
    assert abs(float(shrunk.sum() * step * H) - 1) < 1e-3  # still a density
    assert _lipschitz(shrunk) / step > 1.5 * _lipschitz(p)  # sharper: slopes grow by up to 1 / a^2


def _expected_log_p(log_p, x: torch.Tensor, kernel) -> torch.Tensor:
    """E_q[log p(x + eps)] by Gauss quadrature: Hermite nodes for Gaussian noise, Laguerre nodes on each
    side for Laplace noise (both exact for polynomials of high degree, so the error is far below eta^2)."""
    if isinstance(kernel, Laplace):
        t, w = np.polynomial.laguerre.laggauss(80)
        t, w = torch.from_numpy(t), torch.from_numpy(w) / 2
        eps, w = torch.cat([t, -t]) * kernel.scale, torch.cat([w, w])
    else:
        t, w = np.polynomial.hermite_e.hermegauss(80)
        eps, w = torch.from_numpy(t) * kernel.std, torch.from_numpy(w) / math.sqrt(2 * math.pi)
    return (log_p(x.view(-1, 1) + eps.view(1, -1)) * w).sum(1)


def _order(etas, gaps) -> float:
    """Least-squares slope of log gap against log eta: the order at which the gap vanishes."""
    return float(np.polyfit(np.log(etas), np.log(gaps), 1)[0])


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_proposition1_gap_vanishes_faster_than_eta(name):
    density = _mixture([-1.0, 0.3, 1.2], [math.log(0.4), math.log(0.25), math.log(0.5)], [0.2, 0.0, -0.3])

    def log_p(x):
        return density(x.reshape(-1)).log().view(x.shape)

    x = torch.tensor([-1.3, -0.4, 0.2, 0.9, 1.7], dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(log_p(x).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    x = x.detach()
    etas = np.geomspace(1e-2, 1e-4, 7)  # noise variances
    gaps, wrong = [], []
    for eta in etas:
        lhs = _expected_log_p(log_p, x, make_kernel(name, math.sqrt(eta)))
        gaps.append(float((lhs - log_p(x) - eta / 2 * d2).abs().max()))
        wrong.append(float((lhs - log_p(x) - eta * d2).abs().max()))  # a wrong coefficient: only O(eta)
    order = _order(etas, gaps)
    assert order > 1.8, f"the Proposition 1 gap vanishes at order {order:.2f} in eta; expected about 2"
    assert _order(etas, wrong) < 1.2  # the same check catches a wrong expansion
