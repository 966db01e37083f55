"""Bounds of the two-step model against an exact likelihood, and the single-step denoiser."""


import pytest
import torch

from arsmooth.data.synthetic import TWO_GAUSSIANS
from arsmooth.errors import ArsmoothError
from arsmooth.maths import smoothing as S
from arsmooth.maths.kernels import Gaussian, Laplace
from arsmooth.models.made import StackedMADE


def _model(seed=0):
    torch.manual_seed(seed)
    sm = StackedMADE(dim=1, hidden=(16, 16), n_mix=2).double()
    with torch.no_grad():
        for p in sm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return sm


@torch.no_grad()
def _exact_log_marginal(sm, x):
    """log p(x) = log of the integral over x~ of p(x~) p(x | x~), by quadrature (1-d)."""
    grid = torch.linspace(-25, 25, 10_001, dtype=torch.float64)
    out = []
    for xi in x[:, 0]:
        xs = torch.full_like(grid, xi.item())[:, None]
        lp = sm.log_prob_noisy(grid[:, None]) + sm.log_prob_clean(xs, grid[:, None])
        out.append(torch.log(torch.trapezoid(lp.exp(), grid)))
    return torch.stack(out)


@pytest.mark.slow
def test_joint_integrates_and_bounds_are_below_exact_likelihood():
    sm = _model()
    x = torch.tensor([[-0.5], [0.2], [1.0]], dtype=torch.float64)
    exact = _exact_log_marginal(sm, x)
    # the marginal itself is normalised
    xs = torch.linspace(-25, 25, 501, dtype=torch.float64)[:, None]
    assert torch.trapezoid(_exact_log_marginal(sm, xs).exp(), xs[:, 0]).item() == pytest.approx(1.0, abs=1e-3)
    kernel = Gaussian(0.5)
    g = torch.Generator().manual_seed(0)
    reps = x.repeat_interleave(4000, 0)
    elbo = S.elbo(sm, kernel, reps, generator=g).view(3, -1).mean(1)
    iw = {k: S.iw_bound(sm, kernel, x.repeat_interleave(400, 0), k, generator=g).view(3, -1).mean(1) for k in (1, 10, 100)}
    assert torch.all(elbo < exact)
    assert torch.all(iw[1] < iw[10]) and torch.all(iw[10] < iw[100]) and torch.all(iw[100] <= exact + 1e-3)
    assert (iw[1] - elbo).abs().max() < 0.1  # K = 1 estimates the ELBO
    assert torch.all(exact - iw[100] < 0.5 * (exact - elbo))  # K = 100 closes most of the gap


def test_elbo_is_tight_when_both_stages_are_exact():
    """With the exact smoothed density and the exact posterior, ELBO = log p(x) per draw."""
    sigma = 0.3
    data, smooth = TWO_GAUSSIANS, TWO_GAUSSIANS.smoothed(sigma)

    class Exact:
        def log_prob_noisy(self, xt, detach_params=False):
            return smooth.log_prob(xt[:, 0])

        def log_prob_clean(self, x, xt):
            # Bayes: p(x | x~) = p(x) q(x~ | x) / p(x~)
            return data.log_prob(x[:, 0]) + Gaussian(sigma).log_prob(xt, x) - smooth.log_prob(xt[:, 0])

    x = torch.linspace(-1, 1, 7, dtype=torch.float64)[:, None]
    g = torch.Generator().manual_seed(0)
    lb = S.iw_bound(Exact(), Gaussian(sigma), x, 1, generator=g)
    assert torch.allclose(lb, data.log_prob(x[:, 0]), atol=1e-9)


def test_single_step_matches_posterior_mean_with_exact_density():
    sigma = 0.3
    smooth = TWO_GAUSSIANS.smoothed(sigma)

    class Exact:
        def log_prob_noisy(self, xt, detach_params=False):
            return smooth.log_prob(xt[:, 0])

    xt = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)[:, None]
    den = S.single_step_denoise(Exact(), xt, sigma)
    assert (den[:, 0] - TWO_GAUSSIANS.posterior_mean(xt[:, 0], sigma)).abs().max() < 1e-10
    # and a wrong sigma does not
    den_bad = S.single_step_denoise(Exact(), xt, 0.5)
    assert (den_bad[:, 0] - TWO_GAUSSIANS.posterior_mean(xt[:, 0], sigma)).abs().max() > 1e-2


def test_detached_score_differs_from_full_gradient_but_agrees_on_first_coordinate():
    torch.manual_seed(0)
    sm = StackedMADE(dim=2, hidden=(16, 16), n_mix=2).double()
    with torch.no_grad():
        for p in sm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    xt = torch.randn(5, 2, dtype=torch.float64)
    full = S.single_step_denoise(sm, xt, 0.3)
    det = S.single_step_denoise(sm, xt, 0.3, detach_params=True)
    # x~_2 only enters its own conditional, so its partial derivative is the same in both
    assert torch.allclose(full[:, 1], det[:, 1])
    assert not torch.allclose(full[:, 0], det[:, 0])


def test_sampling_methods_and_errors():
    sm = _model()
    g = torch.Generator().manual_seed(0)
    for method in S.SAMPLING_METHODS:
        out = S.sample(sm, Gaussian(0.5), 6, method, generator=g)
        assert out.shape == (6, 1) and torch.isfinite(out).all()
    with pytest.raises(ArsmoothError, match="unknown sampling method"):
        S.sample(sm, Gaussian(0.5), 2, "three-step")
    with pytest.raises(ArsmoothError, match="Gaussian"):
        S.sample(sm, Laplace(0.5), 2, "single-step")
    with pytest.raises(ArsmoothError, match="K"):
        S.iw_bound(sm, Gaussian(0.5), torch.zeros(2, 1, dtype=torch.float64), 0)


def test_learned_sigma_loss_is_the_negative_elbo_and_its_sigma_gradient_is_right():
    torch.manual_seed(0)
    model = StackedMADE(dim=2, hidden=(16, 16), n_mix=2).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    sigma = S.LearnedSigma(0.3).double()
    loss = S.learned_sigma_loss(model, sigma, x, torch.Generator().manual_seed(5))
    # equal to -ELBO of the fixed kernel at the same value, on the same noise draw
    neg_elbo = -S.elbo(model, Gaussian(0.3), x, 1, torch.Generator().manual_seed(5)).mean()
    assert torch.allclose(loss, neg_elbo, atol=1e-10)
    # d loss / d log sigma matches a central difference with the same noise (reparameterised x~)
    (grad,) = torch.autograd.grad(loss, sigma.log_sigma)
    h, f = 1e-3, []  # the loss is float32-accurate in places: a larger step, second-order error ~1e-4
    for d in (h, -h):
        with torch.no_grad():
            s = S.LearnedSigma(0.3 * torch.tensor(d).exp().item()).double()
        f.append(float(S.learned_sigma_loss(model, s, x, torch.Generator().manual_seed(5))))
    assert abs(float(grad) - (f[0] - f[1]) / (2 * h)) < 1e-3 * max(1.0, abs(float(grad)))
    assert abs(sigma.value - 0.3) < 1e-12 and sigma.kernel().std == sigma.value
    # H(q) enters: for sigma alone, with the model held fixed, the entropy pushes sigma up by D per unit of log sigma
    (g_entropy,) = torch.autograd.grad(-sigma.entropy(2), sigma.log_sigma)
    assert float(g_entropy) == -2.0
    with pytest.raises(ArsmoothError):
        S.LearnedSigma(0.0)
