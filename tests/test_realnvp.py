"""RealNVP is invertible, its log-det is the true one, it is normalised, and it samples its density."""

import io

import numpy as np
import pytest
import torch

from arsmooth.models.realnvp import RealNVP
from conftest import perturb


def _model(dim=2, context_dim=0, scale=0.3, seed=0, **kw):
    kw = {"n_layers": 4, "hidden": 16, **kw}
    return perturb(RealNVP(dim=dim, context_dim=context_dim, **kw).double(), scale, seed)


def _grid(lo=-12.0, hi=12.0, n=481):
    v = torch.linspace(lo, hi, n, dtype=torch.float64)
    g1, g2 = torch.meshgrid(v, v, indexing="ij")
    return v, torch.stack([g1.flatten(), g2.flatten()], 1)  # (n*n, 2)


def test_starts_as_identity():
    flow = RealNVP(dim=3, n_layers=3, hidden=8)
    x = torch.randn(5, 3)
    z, logdet = flow(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(5))
    base = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    assert torch.allclose(flow.log_prob(x), base)


@pytest.mark.parametrize("dim,context_dim,embed", [(2, 0, 0), (5, 0, 0), (2, 2, 0), (3, 4, 0), (3, 4, 5)])
def test_inverse_undoes_forward(dim, context_dim, embed):
    flow = _model(dim, context_dim, scale=0.5, context_embed=embed)
    x = 2 * torch.randn(64, dim, dtype=torch.float64)
    c = torch.randn(64, context_dim, dtype=torch.float64) if context_dim else None
    z, _ = flow(x, c)
    assert (z - x).abs().max() > 0.1, "the perturbed flow should not be near the identity"
    assert torch.allclose(flow.inverse(z, c), x, atol=1e-10)
    assert torch.allclose(flow(flow.inverse(x, c), c)[0], x, atol=1e-10)


@pytest.mark.parametrize("dim,context_dim,embed", [(2, 0, 0), (5, 0, 0), (3, 3, 0), (3, 3, 4)])
def test_logdet_matches_autograd_jacobian(dim, context_dim, embed):
    flow = _model(dim, context_dim, scale=0.5, context_embed=embed)
    x = torch.randn(6, dim, dtype=torch.float64)
    c = torch.randn(6, context_dim, dtype=torch.float64) if context_dim else None
    _, logdet = flow(x, c)
    for i in range(6):
        ci = None if c is None else c[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None], ci)[0][0], x[i])  # (D, D)
        assert logdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-10)


def test_context_changes_the_density():
    flow = _model(2, 2)
    x = torch.randn(8, 2, dtype=torch.float64)
    c = torch.randn(8, 2, dtype=torch.float64)
    assert (flow.log_prob(x, c) - flow.log_prob(x, c + 1)).abs().min() > 1e-3


def test_samples_follow_the_density():
    flow = _model(2)
    v, pts = _grid()
    with torch.no_grad():
        p = flow.log_prob(pts).exp().reshape(len(v), len(v))  # (x1, x2)
        x = flow.sample(20_000, generator=torch.Generator().manual_seed(1))
    # per-coordinate KS distance between the samples and the numerically integrated marginal
    for axis in (0, 1):
        marginal = torch.trapezoid(p, v, dim=1 - axis)  # (n,)
        cdf = torch.cat([torch.zeros(1, dtype=v.dtype), torch.cumulative_trapezoid(marginal, v)])
        cdf = cdf / cdf[-1]
        model_cdf = torch.from_numpy(np.interp(x[:, axis].numpy(), v.numpy(), cdf.numpy()))
        emp = torch.arange(1, len(x) + 1, dtype=torch.float64) / len(x)
        ks = (emp - model_cdf.sort().values).abs().max().item()
        assert ks < 0.015, f"KS distance {ks:.4f} on coordinate {axis}"  # 5% critical value ~ 0.0096
    # E_samples[log p] against the grid integral of p log p (minus the entropy)
    neg_entropy = torch.trapezoid(torch.trapezoid(torch.xlogy(p, p), v), v).item()
    with torch.no_grad():
        lp = flow.log_prob(x)
    assert lp.mean().item() == pytest.approx(neg_entropy, abs=0.03)  # ~4 standard errors


def test_conditional_sample_shape_and_errors():
    flow = _model(2, 2)
    c = torch.randn(7, 2, dtype=torch.float64)
    assert flow.sample(context=c).shape == (7, 2)
    assert _model(3).sample(4).shape == (4, 3)
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(torch.randn(7, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="context"):
        flow.sample(7)
    with pytest.raises(ValueError, match="n=3"):
        flow.sample(3, context=c)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        flow.log_prob(torch.randn(7, 3, dtype=torch.float64), c)
    with pytest.raises(ValueError, match="context must have shape"):
        flow.log_prob(torch.randn(7, 2, dtype=torch.float64), c[:5])
    with pytest.raises(ValueError, match="unconditional"):
        _model(2).log_prob(torch.randn(7, 2, dtype=torch.float64), c)
    with pytest.raises(ValueError, match="dim >= 2"):
        RealNVP(dim=1)
    with pytest.raises(ValueError, match="context_embed needs a context"):
        RealNVP(dim=2, context_embed=4)


def test_train_eval_and_state_dict_round_trip():
    flow = _model(2, 2)
    x = torch.randn(16, 2, dtype=torch.float64)
    c = torch.randn(16, 2, dtype=torch.float64)
    lp_train = flow.train().log_prob(x, c)
    assert torch.equal(flow.eval().log_prob(x, c), lp_train)
    buf = io.BytesIO()
    torch.save(flow.state_dict(), buf)
    buf.seek(0)
    fresh = RealNVP(dim=2, context_dim=2, n_layers=4, hidden=16).double()
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.log_prob(x, c), lp_train)


def test_short_fit_reaches_gaussian_entropy():
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]])
    target = torch.distributions.MultivariateNormal(torch.tensor([1.0, -0.5]), cov)
    entropy = target.entropy().item()
    train, test = target.sample((4096,)), target.sample((10_000,))
    flow = RealNVP(dim=2, n_layers=4, hidden=32)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = train[torch.randint(len(train), (256,), generator=g)]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = -flow.log_prob(test).mean().item()
    start = -torch.distributions.Normal(0.0, 1.0).log_prob(test).sum(1).mean().item()
    assert start > entropy + 0.5, "the untrained flow should be far from the target"
    assert nll == pytest.approx(entropy, abs=0.1)


def test_centered_conditional_is_a_normalised_density_and_samples_near_the_context():
    import math

    from arsmooth.models.realnvp import CenteredConditional, RealNVP

    torch.manual_seed(0)
    flow = RealNVP(dim=2, n_layers=4, hidden=16, context_dim=2).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    m = CenteredConditional(flow, 0.3)
    ctx = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    g = torch.linspace(-3, 3, 301, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    dens = m.log_prob(pts, ctx.expand(len(pts), 2)).exp().view(301, 301)
    mass = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g).item()
    assert abs(mass - 1) < 1e-3
    # change of variables: equals the flow's density of u minus D log(scale)
    x = torch.randn(5, 2, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    assert torch.allclose(m.log_prob(x, c), flow.log_prob((x - c) / 0.3, c) - 2 * math.log(0.3))
    s = m.sample(context=ctx.expand(2000, 2), generator=torch.Generator().manual_seed(0))
    assert (s.mean(0) - ctx[0]).abs().max() < 0.5


def _score_pair(sigma=0.3, seed=0):
    from arsmooth.maths.smoothing import ScoreConditionedPair
    from arsmooth.models.realnvp import CenteredConditional

    prior = _model(seed=seed)
    reverse = CenteredConditional(_model(context_dim=4, scale=0.1, seed=seed + 1), sigma)
    return ScoreConditionedPair(prior, reverse, sigma)


def test_score_conditioned_pair_feature_is_the_prior_score_without_a_graph():
    pair = _score_pair(sigma=0.3)
    xt = torch.randn(6, 2, dtype=torch.float64)
    ctx = pair.context(xt)
    assert torch.equal(ctx[:, :2], xt)
    # central finite differences of log p(x~), times sigma
    eps, fd = 1e-5, torch.empty(6, 2, dtype=torch.float64)
    with torch.no_grad():
        for j in range(2):
            e = torch.zeros(2, dtype=torch.float64)
            e[j] = eps
            fd[:, j] = (pair.prior.log_prob(xt + e) - pair.prior.log_prob(xt - e)) / (2 * eps)
    assert torch.allclose(ctx[:, 2:], (0.3 * fd).clamp(-10, 10), atol=1e-6)
    # the feature is an input: stage 2's loss sends no gradient into stage 1
    x = torch.randn(6, 2, dtype=torch.float64)
    pair.log_prob_clean(x, xt).sum().backward()
    assert all(p.grad is None for p in pair.prior.parameters())
    assert all(p.grad is not None for p in pair.reverse.parameters())


def test_score_conditioned_posterior_is_normalised_and_sampled_from():
    import math

    pair = _score_pair(sigma=0.3)
    xt = torch.tensor([[0.4, -0.7]], dtype=torch.float64)
    g = torch.linspace(-4, 4, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        dens = pair.log_prob_clean(pts, xt.expand(len(pts), 2)).exp()
    w = dens.view(401, 401)
    mass = torch.trapezoid(torch.trapezoid(w, g, dim=1), g).item()
    assert abs(mass - 1) < 1e-3
    mean = (pts * dens[:, None]).sum(0) * (g[1] - g[0]) ** 2
    # sample_clean must use the same context as log_prob_clean: its mean is the density's mean
    s = pair.sample_clean(xt.expand(20_000, 2), generator=torch.Generator().manual_seed(0))
    se = s.std(0) / math.sqrt(len(s))
    assert ((s.mean(0) - mean).abs() < 4 * se).all()


def test_score_conditioned_pair_one_pass_training_terms_equal_the_two_pass_ones():
    pair = _score_pair(sigma=0.3)
    x, xt = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    one = pair.log_prob_pair(x, xt)
    g_one = torch.autograd.grad(sum(t.sum() for t in one), list(pair.parameters()))
    two = (pair.log_prob_noisy(xt), pair.log_prob_clean(x, xt))
    g_two = torch.autograd.grad(sum(t.sum() for t in two), list(pair.parameters()))
    for a, b in zip((*one, *g_one), (*two, *g_two)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dataset", ["checkerboard", "olympics"])
def test_split_bound_terms_add_up_and_the_exact_posterior_beats_the_gaussian(dataset):
    from arsmooth.data.synthetic import train_test
    from arsmooth.experiments.two_d import split_bound

    test = train_test(dataset, 10, 20_000, 0)[1]
    pair = _score_pair(sigma=0.05).float()
    sp = split_bound(pair, dataset, 0.05, test, seed=3)
    # the model's terms add up to its -ELBO on these draws, and the exact ones to the exact NLL (Bayes' rule)
    assert sp["neg_elbo"] == pytest.approx(sp["prior_nll"] + sp["posterior_nll"] - sp["neg_log_q"], abs=1e-6)
    assert sp["prior_nll_exact"] + sp["posterior_nll_exact"] - sp["neg_log_q"] == pytest.approx(sp["data_nll_exact"])
    # the ELBO bounds the exact NLL; the paired -log q averages to H(q) (standard error ~0.007 on 20k points)
    assert sp["neg_elbo"] > sp["data_nll_exact"]
    assert sp["neg_log_q"] == pytest.approx(sp["entropy_q"], abs=0.03)
    # the true posterior is the best conditional: it beats N(x~, sigma^2 I), whose term is -log q on the same
    # pairs, by its mean KL (about 0.09 nat on the checkerboard at this sigma)
    assert sp["posterior_nll_exact"] < sp["neg_log_q"] - 0.01
