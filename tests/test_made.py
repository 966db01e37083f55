"""MADE is autoregressive, normalised, and its sampler follows its density."""

import pytest
import torch

from arsmooth.models.made import MADE, StackedMADE
from arsmooth.models.mixture import MixtureOfLogistics1d
from conftest import perturb


@pytest.mark.parametrize("dim,hidden", [(1, (8,)), (3, (16, 16)), (5, (7, 9, 11))])
def test_jacobian_is_strictly_lower_triangular(dim, hidden):
    made = MADE(dim=dim, hidden=hidden, n_mix=2).double()
    x = torch.randn(dim, dtype=torch.float64)

    def all_params(v):
        return torch.cat(made.params(v[None]), -1)[0]  # (D, 3K)

    jac = torch.autograd.functional.jacobian(all_params, x)  # (D, 3K, D)
    for i in range(dim):
        assert torch.all(jac[i, :, i:] == 0), f"output {i} depends on inputs >= {i}"
        if i > 0:
            assert jac[i, :, :i].abs().sum() > 0, f"output {i} ignores its inputs"


def test_sampling_matches_density():
    """Histogram of 50k samples against the density integrated on the same cells."""
    made = perturb(MADE(dim=2, hidden=(32, 32), n_mix=3), seed=3).double()
    n = 50_000
    s = made.sample(n, generator=torch.Generator().manual_seed(0)).double()
    edges = torch.linspace(-3, 3, 13, dtype=torch.float64)
    fine = torch.linspace(-3, 3, 601, dtype=torch.float64)
    g1, g2 = torch.meshgrid(fine, fine, indexing="ij")
    p = made.log_prob(torch.stack([g1.flatten(), g2.flatten()], 1)).exp().reshape(601, 601)
    tv = 0.0
    for a in range(12):
        for b in range(12):
            sl1, sl2 = slice(50 * a, 50 * a + 51), slice(50 * b, 50 * b + 51)
            mass = torch.trapezoid(torch.trapezoid(p[sl1, sl2], fine[sl2]), fine[sl1]).item()
            inside = ((s[:, 0] >= edges[a]) & (s[:, 0] < edges[a + 1]) & (s[:, 1] >= edges[b]) & (s[:, 1] < edges[b + 1]))
            tv += abs(inside.double().mean().item() - mass)
    assert 0.5 * tv < 0.02


def test_stacked_made_noisy_part_ignores_clean_half():
    sm = perturb(StackedMADE(dim=2, hidden=(16, 16), n_mix=2))
    xt, x1, x2 = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    a, _ = sm.log_prob_pair(x1, xt)
    b, _ = sm.log_prob_pair(x2, xt)
    assert torch.equal(a, b)
    assert torch.allclose(a, sm.log_prob_noisy(xt))
    assert torch.allclose(sm.log_prob_pair(x1, xt)[1], sm.log_prob_clean(x1, xt))
    # the clean half does depend on x~
    assert not torch.allclose(sm.log_prob_clean(x1, xt), sm.log_prob_clean(x1, xt + 1))


def test_stacked_sampling_respects_the_condition():
    sm = perturb(StackedMADE(dim=2, hidden=(16, 16), n_mix=2))
    xt = sm.sample_noisy(5, generator=torch.Generator().manual_seed(0))
    assert xt.shape == (5, 2)
    x = sm.sample_clean(xt, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 2) and torch.isfinite(x).all()


def test_a_two_component_mixture_fits_two_modes():
    mol = MixtureOfLogistics1d(n_mix=2)
    x = torch.cat([torch.randn(500) * 0.2 - 2, torch.randn(500) * 0.2 + 2])
    opt = torch.optim.Adam(mol.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (-mol.log_prob(x).mean()).backward()
        opt.step()
    assert sorted(mol.mu.tolist()) == pytest.approx([-2, 2], abs=0.1)
