"""Closed-form (smoothed) densities of the 2-d checkerboard, rings and olympics: the floors and splits of the
RealNVP study."""

import math

import pytest
import torch

from arsmooth.data.synthetic import checkerboard_smoothed_log_prob, make_dataset, olympics_log_prob, rings_log_prob
from arsmooth.errors import ArsmoothError


def _integral(log_prob, half_width: float, n: int) -> float:
    """Riemann sum of exp(log_prob) over [-half_width, half_width]^2 on an n x n grid."""
    g = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    return (log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().sum() * (g[1] - g[0]) ** 2).item()


def _convolved_from_samples(x: torch.Tensor, probes: torch.Tensor, sigma: float) -> torch.Tensor:
    """p(x~) = E_x N(x~; x, sigma^2 I) at ``probes``, estimated from samples ``x`` of the data."""
    d2 = ((probes[:, None, :] - x[None]) ** 2).sum(-1)
    return (torch.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2)).mean(1)


def test_smoothed_checkerboard_integrates_to_one():
    assert abs(_integral(lambda p: checkerboard_smoothed_log_prob(p, 0.3), 7, 561) - 1) < 1e-4


def test_smoothed_checkerboard_matches_the_data_convolved_with_the_kernel():
    sigma, x = 0.4, make_dataset("checkerboard", 200_000, 3).double()
    probes = torch.tensor([[0.5, 0.5], [-3.0, 1.0], [2.0, 0.1], [4.1, -3.9], [1.0, -1.0]], dtype=torch.float64)
    exact = checkerboard_smoothed_log_prob(probes, sigma).exp()
    torch.testing.assert_close(exact, _convolved_from_samples(x, probes, sigma), rtol=0.03, atol=1e-4)
    # deep inside a square, a tiny sigma leaves the uniform density 1/32
    assert abs(checkerboard_smoothed_log_prob(torch.tensor([[-3.0, 1.0]]), 0.01).item() - math.log(1 / 32)) < 1e-5


@pytest.mark.parametrize("name, log_prob, probes", [
    ("olympics", olympics_log_prob, [[0.0, 1.75], [1.75, 0.75], [0.55, 0.0], [-2.8, 0.75], [0.0, -1.5]]),
    ("rings", rings_log_prob, [[0.0, 3.0], [1.6, 0.0], [0.0, 0.0], [-0.5, -0.5], [2.0, 2.0]]),
])
def test_circle_densities_integrate_to_one_and_match_the_data(name, log_prob, probes):
    for sigma in (0.0, 0.2):
        assert abs(_integral(lambda p: log_prob(p, sigma), 4, 641) - 1) < 1e-4
    sigma, x = 0.15, make_dataset(name, 200_000, 3).double()
    probes = torch.tensor(probes, dtype=torch.float64)
    torch.testing.assert_close(log_prob(probes, sigma).exp(), _convolved_from_samples(x, probes, sigma), rtol=0.03, atol=1e-4)
    with pytest.raises(ArsmoothError, match="sigma"):
        log_prob(probes, -0.1)
