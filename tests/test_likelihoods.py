"""The mixtures of logistics normalise, their samplers follow their densities, and they are stable."""

import math

import pytest
import torch

from arsmooth.maths import likelihoods as L


def _params(k, shape=(), scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logit = torch.randn(*shape, k, generator=g, dtype=torch.float64)
    mu = 0.5 * torch.randn(*shape, k, generator=g, dtype=torch.float64)
    log_s = scale * torch.randn(*shape, k, generator=g, dtype=torch.float64) - 2.0
    return logit, mu, log_s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuous_mixture_integrates_to_one(seed):
    logit, mu, log_s = _params(4, seed=seed)
    x = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    p = L.mixture_log_prob(x, *(t.expand(len(x), 4) for t in (logit, mu, log_s))).exp()
    assert torch.trapezoid(p, x).item() == pytest.approx(1.0, abs=1e-6)


def test_cdf_is_the_integral_of_the_density():
    logit, mu, log_s = _params(3, seed=4)
    x = torch.linspace(-30, 1.3, 200_001, dtype=torch.float64)
    p = L.mixture_log_prob(x, *(t.expand(len(x), 3) for t in (logit, mu, log_s))).exp()
    cdf = L.mixture_cdf(torch.tensor([1.3], dtype=torch.float64), logit[None], mu[None], log_s[None])
    assert torch.trapezoid(p, x).item() == pytest.approx(cdf.item(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_discretized_mixture_sums_to_one_over_256_bins(seed):
    logit, mu, log_s = _params(5, scale=2.0, seed=seed)  # includes tiny scales (clamped at -7)
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)
    lp = L.discretized_mixture_log_prob(x, *(t.expand(256, 5) for t in (logit, mu, log_s)))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_probability_of_a_bin_is_a_cdf_difference():
    logit, mu, log_s = _params(3, seed=5)
    step = 2 / 255
    x = torch.tensor([-1 + 100 * step], dtype=torch.float64)
    lo, hi = x - step / 2, x + step / 2
    expected = L.mixture_cdf(hi, logit[None], mu[None], log_s[None]) - L.mixture_cdf(lo, logit[None], mu[None], log_s[None])
    got = L.discretized_mixture_log_prob(x, logit[None], mu[None], log_s[None]).exp()
    assert got.item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.slow
def test_rgb_joint_sums_to_one_over_all_colours():
    nr = 2
    params = torch.randn(1, 10 * nr, 1, 1, dtype=torch.float64)
    v = torch.linspace(-1, 1, 256, dtype=torch.float64)
    g, b = torch.meshgrid(v, v, indexing="ij")
    total = 0.0
    for r in v:
        x = torch.stack([torch.full_like(g, r.item()), g, b], 0).reshape(3, -1).T.reshape(-1, 3, 1, 1)
        total += L.image_log_prob(x, params.expand(x.shape[0], -1, -1, -1), nr, True).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_rgb_continuous_joint_integrates_to_one():
    nr = 2
    params = torch.randn(1, 10 * nr, 1, 1, dtype=torch.float64)
    params[:, nr + 3 * nr : nr + 6 * nr] = -0.5  # moderate scales keep the grid small
    v = torch.linspace(-12, 12, 161, dtype=torch.float64)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    x = torch.stack([r, g, b], 0).reshape(3, -1).T.reshape(-1, 3, 1, 1)
    p = L.image_log_prob(x, params.expand(x.shape[0], -1, -1, -1), nr, False).exp().reshape(161, 161, 161)
    integral = torch.trapezoid(torch.trapezoid(torch.trapezoid(p, v), v), v)
    assert integral.item() == pytest.approx(1.0, abs=1e-3)


def test_continuous_sampling_matches_the_cdf():
    """Kolmogorov-Smirnov distance between 40k exact samples and the closed-form CDF."""
    logit, mu, log_s = (t.float() for t in _params(3, seed=6))
    n = 40_000
    g = torch.Generator().manual_seed(0)
    s = L.mixture_sample(*(t.expand(n, 3) for t in (logit, mu, log_s)), generator=g).sort().values
    cdf = L.mixture_cdf(s, *(t.expand(n, 3) for t in (logit, mu, log_s)))
    emp = torch.arange(1, n + 1) / n
    assert (cdf - emp).abs().max().item() < 1.36 * 2 / math.sqrt(n)  # ~ 2x the 5% critical value
    # a wrong sampler (scale doubled) fails the same check
    bad = L.mixture_sample(logit.expand(n, 3), mu.expand(n, 3), (log_s + math.log(2)).expand(n, 3), generator=g)
    cdf_bad = L.mixture_cdf(bad.sort().values, *(t.expand(n, 3) for t in (logit, mu, log_s)))
    assert (cdf_bad - emp).abs().max().item() > 0.02


@pytest.mark.parametrize("channels", [1, 3])
def test_discretized_image_sampling_matches_probabilities(channels):
    """Empirical frequencies of each channel of one pixel against its exact marginal."""
    nr, n = 3, 60_000
    torch.manual_seed(1)
    params = torch.randn(1, L.image_param_channels(channels, nr), 1, 1)
    params[:, nr + channels * nr : nr + 2 * channels * nr] = -2.5  # visible bins, not all mass at the edges
    g = torch.Generator().manual_seed(2)
    s = L.image_sample(params.expand(n, -1, -1, -1), channels, nr, True, generator=g)  # (n, C, 1, 1)
    assert torch.allclose(s, L.quantize(s))
    # marginal of the red (first) channel: a plain discretized mixture
    logit_pi, mu, log_s, _ = L.split_image_params(params, channels, nr)
    v = torch.linspace(-1, 1, 256)
    p = L.discretized_mixture_log_prob(v, logit_pi[0, 0, 0].expand(256, nr), mu[0, 0, 0, 0].expand(256, nr),
                                       log_s[0, 0, 0, 0].expand(256, nr)).exp()
    idx = torch.round((s[:, 0, 0, 0] + 1) * 127.5).long()
    freq = torch.bincount(idx, minlength=256).float() / n
    assert 0.5 * (freq - p).abs().sum().item() < 0.03
    if channels == 3:
        # joint check: mean log-probability of the samples equals minus the entropy (Monte Carlo)
        lp = L.image_log_prob(s, params.expand(n, -1, -1, -1), nr, True)
        other = L.image_log_prob(s.flip(1), params.expand(n, -1, -1, -1), nr, True)
        assert lp.mean() > other.mean()


def test_extreme_parameters_are_finite():
    x = torch.tensor([-1.0, 1.0, 0.0, 50.0, -50.0])
    for scale in (-20.0, 0.0, 10.0):
        logit = torch.zeros(5, 2)
        mu = torch.tensor([[30.0, -30.0]]).expand(5, 2)
        log_s = torch.full((5, 2), scale)
        assert torch.isfinite(L.mixture_log_prob(x, logit, mu, log_s)).all()
        xd = L.quantize(x)
        assert torch.isfinite(L.discretized_mixture_log_prob(xd, logit, mu, log_s)).all()


def test_bad_parameter_channel_count_is_reported():
    with pytest.raises(ValueError, match="parameter channels"):
        L.split_image_params(torch.zeros(1, 7, 2, 2), 1, 3)
