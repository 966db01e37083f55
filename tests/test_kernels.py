"""Smoothing kernels: their standard deviation, entropy and density agree with their samples."""

import math

import pytest
import torch

from arsmooth.errors import ArsmoothError
from arsmooth.maths.kernels import Gaussian, Laplace, Uniform, make_kernel, sigma_heuristic


@pytest.mark.parametrize("cls", [Gaussian, Laplace, Uniform])
def test_std_and_entropy_match_monte_carlo(cls):
    k = cls(0.7)
    x = torch.zeros(200_000, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    xt = k.sample(x, generator=g)
    assert xt.std().item() == pytest.approx(0.7, rel=0.01)
    mc_entropy = -k.log_prob(xt, x).mean().item()
    assert mc_entropy == pytest.approx(k.entropy(3), abs=0.02)


def test_gaussian_entropy_closed_form():
    assert Gaussian(0.5).entropy(784) == pytest.approx(392 * math.log(2 * math.pi * math.e * 0.25))


@pytest.mark.parametrize("cls", [Gaussian, Laplace])
def test_density_integrates_to_one(cls):
    k = cls(0.4)
    e = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    assert torch.trapezoid(k.log_prob_noise(e).exp(), e).item() == pytest.approx(1.0, abs=1e-6)


def test_uniform_density_outside_support_is_zero():
    k = Uniform(1.0)
    assert k.log_prob(torch.tensor([[2.0]]), torch.zeros(1, 1)).item() == -math.inf
    assert k.log_prob(torch.tensor([[1.5]]), torch.zeros(1, 1)).item() == pytest.approx(-math.log(2 * math.sqrt(3)))


@pytest.mark.parametrize("bad", [0.0, -0.3, float("nan"), float("inf")])
def test_non_positive_sigma_is_refused(bad):
    with pytest.raises(ArsmoothError, match="sigma"):
        Gaussian(bad)


def test_unknown_kernel_is_refused():
    with pytest.raises(ArsmoothError, match="unknown kernel"):
        make_kernel("cauchy", 1.0)


def test_sigma_heuristic():
    # three points on a line in D = 4, pairwise distances 4, 4, 8: the median is 4
    x = torch.zeros(3, 4)
    x[1, 0], x[2, 0] = 4.0, 8.0
    assert sigma_heuristic(x) == pytest.approx(4 / (2 * 2))
    big = torch.randn(10_000, 2)
    assert sigma_heuristic(big, max_points=500) == pytest.approx(math.sqrt(math.pi) / (2 * math.sqrt(2)), rel=0.1)
