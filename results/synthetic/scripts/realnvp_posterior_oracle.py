"""Where the smoothed RealNVP loses: each term of its bound beside the exact value, and p(x | x~) given an oracle.

    python results/synthetic/scripts/realnvp_posterior_oracle.py checkerboard --sigma 0.05 --train-seed 1 >> OUT.jsonl

Both 2-d sets of the RealNVP study have closed-form densities, smoothed or not (``data.synthetic``), so
-ELBO = E[-log p(x~)] + E[-log p(x | x~)] - H(q) can be split into what p(x~) loses and what p(x | x~)
loses. On the first four fifths of the training set of ``--seed`` (the test set is not touched) this
trains, with the optimiser and sizes of ``arsmooth reproduce realnvp``:

- the plain RealNVP (width matched to the pair, as in the full run);
- p(x~): the smoothed pair's RealNVP prior on x + sigma * eps;
- p(x | x~), the same conditional flow, three times, with context (a) x~ only (the paper's form), (b) x~ and
  the learned prior's Tweedie feature sigma * grad log p(x~) (what the full run uses), and (c) x~ and the
  *exact* feature from the closed-form smoothed density (an oracle: not available for real data).

(b) trains after the prior, against its final feature; as the feature carries no gradient, this is the
same objective as the full run's joint training. Scored on the last fifth with one fixed noise draw per
point, every term (exact ones included) on the same draws; prints one JSON line (nats per example): the
terms, their exact values, and the -ELBO of the learned prior with each posterior.

``--post-size`` and ``--embed`` change p(x | x~)'s size or give it a shared context encoder; ``--variants
end_to_end`` also trains a fresh pair jointly with the bound's gradient flowing through the feature into p(x~)
(the full run detaches the feature).
"""

import argparse
import json
import time

import torch

from arsmooth.data.synthetic import train_test
from arsmooth.experiments import two_d as T
from arsmooth.maths import smoothing as S
from arsmooth.maths.kernels import Gaussian
from arsmooth.maths.smoothing import score
from arsmooth.models import count_params
from arsmooth.models.realnvp import CenteredConditional, RealNVP
from arsmooth.training.loop import evaluate

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset", choices=sorted(T.EXACT_LOG_PROB))
ap.add_argument("--sigma", type=float, required=True)
ap.add_argument("--steps", type=int, default=10_000, help="Adam steps per model")
ap.add_argument("--seed", type=int, default=0, help="seed of the data")
ap.add_argument("--train-seed", type=int, default=None, help="seed of initialisation, batches and noise (default: --seed)")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--prior-hidden", type=int, default=T.PRIOR_SIZE[1],
                help=f"width of p(x~)'s {T.PRIOR_SIZE[0]} coupling layers (full run: %(default)s)")
ap.add_argument("--post-size", type=int, nargs=2, default=list(T.POSTERIOR_SIZE), metavar=("LAYERS", "HIDDEN"),
                help="p(x | x~)'s coupling layers and width (full run: %(default)s)")
ap.add_argument("--embed", type=int, default=0,
                help="p(x | x~) reads its context through a shared encoder with this many outputs (0: raw context)")
ap.add_argument("--variants", nargs="+", default=["x_only", "learned_feature", "exact_feature"],
                choices=["x_only", "learned_feature", "exact_feature", "end_to_end"],
                help="which contexts of p(x | x~) to train; end_to_end: a fresh prior and p(x | x~) with the learned "
                     "feature trained jointly, the bound's gradient also flowing through the feature into the prior")
ap.add_argument("--skip-plain", action="store_true", help="do not train the plain RealNVP")
a = ap.parse_args()
ts = a.seed if a.train_seed is None else a.train_seed
torch.set_num_threads(a.threads)
train, _ = train_test(a.dataset, 20_000, 10_000, a.seed)
fit_part, val = train[:-4000], train[-4000:]
sigma, kernel, exact_log_prob = a.sigma, Gaussian(a.sigma), T.EXACT_LOG_PROB[a.dataset]
layers, prior_hidden, (post_layers, post_hidden) = T.PRIOR_SIZE[0], a.prior_hidden, a.post_size


def posterior(context_dim):
    flow = RealNVP(dim=2, n_layers=post_layers, hidden=post_hidden, context_dim=context_dim, context_embed=a.embed)
    return CenteredConditional(flow, sigma)


def exact_feature(x_tilde):
    """sigma * grad log p(x~) of the exact smoothed density, clamped as ``ScoreConditionedPair`` clamps its own."""
    return (sigma * score(lambda z: exact_log_prob(z, sigma), x_tilde.double())).float().clamp(-10, 10)


def context_fn(name, pair):
    if name == "x_only":
        return lambda xt: xt
    if name == "learned_feature":
        return pair.context
    return lambda xt: torch.cat([xt, exact_feature(xt)], 1)


out = {"dataset": a.dataset, "sigma": sigma, "steps": a.steps, "seed": a.seed, "train_seed": ts, "threads": a.threads}
if (a.prior_hidden, tuple(a.post_size), a.embed) != (T.PRIOR_SIZE[1], T.POSTERIOR_SIZE, 0):  # rows before these options lack them
    out.update(prior_hidden=a.prior_hidden, posterior_size=a.post_size, embed=a.embed)
torch.manual_seed(ts)
pair = S.ScoreConditionedPair(RealNVP(dim=2, n_layers=layers, hidden=prior_hidden), posterior(4), sigma)
if not a.skip_plain:
    t = time.time()
    base = RealNVP(dim=2, n_layers=layers, hidden=T.matching_hidden(count_params(pair), layers))
    T.train_model(base, lambda b: -base.log_prob(b).mean(), fit_part, a.steps, ts, "RealNVP", False)
    out["realnvp"] = {"nll": evaluate(lambda b: -base.log_prob(b), val), "params": count_params(base), "s": time.time() - t}

t = time.time()
g = torch.Generator().manual_seed(ts + 1)
T.train_model(pair.prior, lambda b: -pair.prior.log_prob(kernel.sample(b, g)).mean(), fit_part, a.steps, ts, "prior", False)
pair.prior.requires_grad_(False)
xt = val + sigma * torch.randn(val.shape, generator=torch.Generator().manual_seed(ts + 2))
# every exact term on these very draws, so the models' terms (scored on them too) are paired with them
ex = T.exact_terms(a.dataset, sigma, val, xt)
neg_log_q = ex["neg_log_q"]
out["exact"] = {"data_nll": ex["data_nll_exact"], "prior_nll": ex["prior_nll_exact"],
                "posterior_nll": ex["posterior_nll_exact"], "entropy_q": kernel.entropy(2), "gaussian_posterior_nll": neg_log_q}
prior_nll = evaluate(lambda b: -pair.prior.log_prob(b), xt)
out["prior"] = {"nll": prior_nll, "params": count_params(pair.prior), "s": time.time() - t}


def end_to_end_loss(prior, post, x, g):
    """-[log p(x~) + log p(x | x~, sigma * grad log p(x~))] with the feature's dependence on the prior kept."""
    xt = kernel.sample(x, g).requires_grad_(True)
    lp = prior.log_prob(xt)
    (grad,) = torch.autograd.grad(lp.sum(), xt, create_graph=True)
    return -(lp + post.log_prob(x, torch.cat([xt.detach(), (sigma * grad).clamp(-10, 10)], 1))).mean()


for name in a.variants:
    if name == "end_to_end":
        t = time.time()
        torch.manual_seed(ts)
        e2e = S.ScoreConditionedPair(RealNVP(dim=2, n_layers=layers, hidden=prior_hidden), posterior(4), sigma)
        g = torch.Generator().manual_seed(ts + 1)
        T.train_model(e2e, lambda b: end_to_end_loss(e2e.prior, e2e.reverse, b, g), fit_part, a.steps, ts, name, False)
        e2e_prior = evaluate(lambda b: -e2e.prior.log_prob(b), xt)
        e2e_post = -e2e.log_prob_clean(val, xt).mean().item()
        out["end_to_end"] = {"prior_nll": e2e_prior, "nll": e2e_post, "neg_elbo": e2e_prior + e2e_post - neg_log_q,
                             "params": count_params(e2e), "s": time.time() - t}
        continue
    t = time.time()
    torch.manual_seed(ts)
    post, ctx = posterior(2 if name == "x_only" else 4), context_fn(name, pair)
    g = torch.Generator().manual_seed(ts + 1)
    T.train_model(post, lambda b: -post.log_prob(b, ctx(kernel.sample(b, g))).mean(), fit_part, a.steps, ts, name, False)
    with torch.no_grad():
        post_nll = -post.log_prob(val, ctx(xt)).mean().item()
    # -ELBO = E[-log p(x~) - log p(x | x~) + log q(x~ | x)] on the same draws (paired: lower variance than using H(q))
    out[f"posterior_{name}"] = {"nll": post_nll, "neg_elbo": prior_nll + post_nll - neg_log_q,
                                "params": count_params(post), "s": time.time() - t}
print(json.dumps(out), flush=True)
