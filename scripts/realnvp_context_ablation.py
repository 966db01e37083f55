"""Ablation of the posterior's context in the smoothed RealNVP, at equal sigma, on validation data.

    python scripts/realnvp_context_ablation.py checkerboard --steps 10000 --sigmas 0.02,0.05 >> OUT.jsonl
    python scripts/realnvp_context_ablation.py olympics --layers 4 --hidden 16 --variants x_and_tweedie

With ``--layers`` / ``--hidden`` the same comparison runs at other sizes (the plain RealNVP's width is
matched to the pair's parameter count, as in the full run).

For one dataset: the plain RealNVP, and the smoothed pair with p(x | x~) given x~ only (the paper's
form) and given x~ and the Tweedie feature sigma * grad log p(x~) (``ScoreConditionedPair``), all
with the seed and optimiser of ``arsmooth reproduce realnvp`` (and its sizes by default), trained on
the first four fifths of its training set and scored on the last fifth (the test set is not touched). Prints one
JSON line: NLL / -ELBO in nats per example, parameter counts, seconds per model.
"""

import argparse
import json
import time

import torch

from arsmooth import smoothing as S
from arsmooth.data.synthetic import train_test
from arsmooth.experiments import two_d as T
from arsmooth.fit import evaluate
from arsmooth.kernels import Gaussian
from arsmooth.models.realnvp import CenteredConditional, RealNVP

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset", choices=T.REALNVP_DATASETS)
ap.add_argument("--steps", type=int, default=10_000)
ap.add_argument("--sigmas", default="0.02,0.05")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--layers", type=int, default=8, help="coupling layers per flow (full run: 8)")
ap.add_argument("--hidden", type=int, default=64, help="hidden width of each smoothed flow (full run: 64)")
ap.add_argument("--variants", default="x_only,x_and_tweedie", help="which posterior contexts to train")
a = ap.parse_args()
torch.set_num_threads(a.threads)
layers, hidden = a.layers, a.hidden
train, _ = train_test(a.dataset, 20_000, 10_000, a.seed)
fit_part, val = train[:-4000], train[-4000:]


def x_only_pair(hidden, n_layers, sigma):
    return S.SmoothedPair(RealNVP(dim=2, n_layers=n_layers, hidden=hidden),
                          CenteredConditional(RealNVP(dim=2, n_layers=n_layers, hidden=hidden, context_dim=2), sigma))


variants = {"x_only": x_only_pair, "x_and_tweedie": T._realnvp_pair}
out = {"dataset": a.dataset, "layers": layers, "hidden": hidden, "steps": a.steps, "seed": a.seed, "threads": a.threads,
       "n_fit": len(fit_part), "n_val": len(val)}
t = time.time()
torch.manual_seed(a.seed)
base = RealNVP(dim=2, n_layers=layers, hidden=T._matching_hidden(T.n_params(T._realnvp_pair(hidden, layers, 0.3)), layers))
T._train(base, lambda b: -base.log_prob(b).mean(), fit_part, a.steps, a.seed, "RealNVP", False)
out["realnvp"] = {"nll": evaluate(lambda b: -base.log_prob(b), val), "params": T.n_params(base), "s": time.time() - t}
for sigma in map(float, a.sigmas.split(",")):
    for name in a.variants.split(","):
        t = time.time()
        pair = T._fit_pair(sigma, hidden, layers, fit_part, a.steps, a.seed, name, False, build=variants[name])
        neg_elbo, neg_iw = T._bounds(pair, Gaussian(sigma), val, a.seed + 2, 20)
        out[f"{name}_sigma_{sigma}"] = {"neg_elbo": neg_elbo, "neg_iw_20": neg_iw, "params": T.n_params(pair),
                                         "s": time.time() - t}
print(json.dumps(out), flush=True)
