"""Ablation of the posterior's context in the smoothed RealNVP, at equal sigma, on validation data.

    python results/synthetic/scripts/realnvp_context_ablation.py checkerboard --steps 10000 --sigmas 0.02,0.05 >> OUT.jsonl
    python results/synthetic/scripts/realnvp_context_ablation.py olympics --layers 4 --hidden 16 --variants x_and_tweedie

With ``--layers`` / ``--hidden`` the same comparison runs at other sizes (the plain RealNVP's width is
matched to the pair's parameter count, as in the full run). ``--splits 64/8x64,89/4x32`` compares ways of
sharing the budget between the stages (prior width / posterior layers x width), and ``--train-seed`` changes
the initialisation and batches while the data stay those of ``--seed``:

    python results/synthetic/scripts/realnvp_context_ablation.py olympics --sigmas 0.05 --variants x_and_tweedie \
        --splits 64/8x64,89/4x32 --train-seed 1

For one dataset: the plain RealNVP, and the smoothed pair with p(x | x~) given x~ only (the paper's
form) and given x~ and the Tweedie feature sigma * grad log p(x~) (``ScoreConditionedPair``), all
with the seed and optimiser of ``arsmooth reproduce realnvp`` (and its sizes by default), trained on
the first four fifths of its training set and scored on the last fifth (the test set is not touched). Prints one
JSON line: NLL / -ELBO in nats per example, parameter counts, seconds per model.
"""

import argparse
import json
import time
from functools import partial

import torch

from arsmooth.data.synthetic import train_test
from arsmooth.experiments import two_d as T
from arsmooth.maths import smoothing as S
from arsmooth.maths.kernels import Gaussian
from arsmooth.models import count_params
from arsmooth.models.realnvp import CenteredConditional, RealNVP
from arsmooth.training.loop import evaluate

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset", choices=T.REALNVP_DATASETS)
ap.add_argument("--steps", type=int, default=10_000)
ap.add_argument("--sigmas", default="0.02,0.05")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--layers", type=int, default=8, help="coupling layers per flow (full run: 8)")
ap.add_argument("--hidden", type=int, default=64, help="hidden width of each smoothed flow (full run: 64)")
ap.add_argument("--variants", default="x_only,x_and_tweedie", help="which posterior contexts to train")
ap.add_argument("--splits", default=None,
                help="PRIOR_WIDTH/LAYERSxWIDTH of p(x | x~), comma-separated (default: both flows --layers x --hidden); "
                     "the plain RealNVP matches the first")
ap.add_argument("--train-seed", type=int, default=None, help="seed of initialisation and batches (default: --seed)")
a = ap.parse_args()
ts = a.seed if a.train_seed is None else a.train_seed
torch.set_num_threads(a.threads)
layers, hidden = a.layers, a.hidden
train, _ = train_test(a.dataset, 20_000, 10_000, a.seed)
fit_part, val = train[:-4000], train[-4000:]


def x_only_pair(hidden, n_layers, sigma, posterior=None):
    post_layers, post_hidden = posterior or (n_layers, hidden)
    return S.SmoothedPair(RealNVP(dim=2, n_layers=n_layers, hidden=hidden),
                          CenteredConditional(RealNVP(dim=2, n_layers=post_layers, hidden=post_hidden, context_dim=2),
                                              sigma))


def parse_split(text):
    prior, post = text.split("/")
    return int(prior), tuple(map(int, post.split("x")))


variants = {"x_only": x_only_pair, "x_and_tweedie": T.realnvp_pair}
splits = [(None, hidden, None)] if a.splits is None else [(t, *parse_split(t)) for t in a.splits.split(",")]
out = {"dataset": a.dataset, "layers": layers, "hidden": hidden, "steps": a.steps, "seed": a.seed, "threads": a.threads,
       "n_fit": len(fit_part), "n_val": len(val)}
if a.train_seed is not None:
    out["train_seed"] = ts
t = time.time()
torch.manual_seed(ts)
first_pair = T.realnvp_pair(splits[0][1], layers, 0.3, splits[0][2])
base = RealNVP(dim=2, n_layers=layers, hidden=T.matching_hidden(count_params(first_pair), layers))
T.train_model(base, lambda b: -base.log_prob(b).mean(), fit_part, a.steps, ts, "RealNVP", False)
out["realnvp"] = {"nll": evaluate(lambda b: -base.log_prob(b), val), "params": count_params(base), "s": time.time() - t}
for sigma in map(float, a.sigmas.split(",")):
    for name in a.variants.split(","):
        for label, prior_hidden, posterior in splits:
            t = time.time()
            pair = T.fit_pair(sigma, prior_hidden, layers, fit_part, a.steps, ts, name, False,
                               build=partial(variants[name], posterior=posterior))
            neg_elbo, neg_iw = T.smoothed_bounds(pair, Gaussian(sigma), val, a.seed + 2, 20)
            key = f"{name}_sigma_{sigma}" + (f"_split_{label}" if label else "")
            out[key] = {"neg_elbo": neg_elbo, "neg_iw_20": neg_iw, "params": count_params(pair), "s": time.time() - t}
print(json.dumps(out), flush=True)
