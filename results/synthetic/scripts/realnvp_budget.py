"""Is the RealNVP verdict a matter of budget? One seed of ``arsmooth reproduce realnvp`` with more steps.

    python results/synthetic/scripts/realnvp_budget.py checkerboard --steps 90000 --train-seed 0 >> results/synthetic/realnvp_budget.jsonl

Trains the plain RealNVP and the smoothed pair exactly as the full run trains them for one training seed
(same data, sizes, optimiser and learning-rate schedule stretched over ``--steps``, same noise level as the
full run chose), and scores them the same way on the test set: -ELBO with 10 noise draws per point, and the
paired split of the bound (``two_d.split_bound``). With ``--steps 30000`` it reproduces the full run's row for
that seed. Nothing is chosen from these numbers. Prints one JSON line (nats per example).
"""

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

from arsmooth.data.synthetic import train_test
from arsmooth.experiments import two_d as T
from arsmooth.maths.kernels import Gaussian
from arsmooth.models import count_params
from arsmooth.training.loop import evaluate

# the committed full run: its data (seed, sizes) and the noise level it chose on validation
FULL_RUN = json.loads((Path(__file__).resolve().parents[1] / "realnvp.run.json").read_text())

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset", choices=T.REALNVP_DATASETS)
ap.add_argument("--steps", type=int, default=90_000, help="Adam steps per model (full run: 30000)")
ap.add_argument("--train-seed", type=int, default=0, help="training seed (the full run used 0, 1, 2)")
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
seed, sigma, st = a.train_seed, FULL_RUN["settings"]["chosen_sigma"][a.dataset], FULL_RUN["settings"]
train, test = train_test(a.dataset, st["n_train"], st["n_test"], FULL_RUN["seed"])  # the full run's data
build = partial(T.realnvp_pair, posterior=T.POSTERIOR_SIZE)
layers, hidden = T.PRIOR_SIZE
base_hidden = T.matching_hidden(count_params(build(hidden, layers, 0.3)), layers)

out = {"dataset": a.dataset, "sigma": sigma, "steps": a.steps, "train_seed": seed, "threads": a.threads}
t = time.time()
base = T.fit_plain(base_hidden, layers, train, a.steps, seed, "RealNVP", False)
out["realnvp"] = {"nll": evaluate(lambda b: -base.log_prob(b), test), "params": count_params(base), "s": time.time() - t}
t = time.time()
pair = T.fit_pair(sigma, hidden, layers, train, a.steps, seed, "smoothed", False, build)
neg_elbo = T.smoothed_bounds(pair, Gaussian(sigma), test, seed + 2, None)[0]
out["smoothed"] = {"neg_elbo": neg_elbo, "params": count_params(pair), "s": time.time() - t,
                   "split": T.split_bound(pair, a.dataset, sigma, test, seed + 3)}
print(json.dumps(out), flush=True)
