"""The paper's 2-d studies: Table 1 (MADE on rings and olympics) and section 5 (RealNVP with smoothing)."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch

from ..data.synthetic import checkerboard_smoothed_log_prob, olympics_log_prob, train_test
from ..evaluation.figures import pyplot, save_figure
from ..maths import smoothing
from ..maths.kernels import Gaussian
from ..models import count_params
from ..models.made import MADE, StackedMADE
from ..models.realnvp import CenteredConditional, RealNVP
from ..training.loop import evaluate, fit
from . import experiment
from .common import Budget, Budgets, Run, fmt

TABLE1_DATASETS = ("rings", "olympics")
REALNVP_DATASETS = ("checkerboard", "olympics")
PAPER_TABLE1 = {
    "rings": {"made_3": 3.26, "made_6": 2.81, "smoothed_3": 2.71},
    "olympics": {"made_3": 1.27, "made_6": 0.80, "smoothed_3": 0.80},
}
PAPER_REALNVP = {"checkerboard": {"realnvp": 3.72, "smoothed_realnvp": 3.64},
                 "olympics": {"realnvp": 1.80, "smoothed_realnvp": 1.32}}


def decay_to(steps: int, final: float = 0.02) -> float:
    """Per-step learning-rate factor that ends the run at ``final`` times the start."""
    return math.exp(math.log(final) / max(steps, 1))


def train_model(model, loss, data, steps, seed, desc, progress, lr=1e-3):
    """The synthetic experiments' training: batches of 256, Adam, the learning rate decayed to 2% over ``steps``."""
    fit(model, loss, data, steps=steps, batch_size=256, lr=lr, lr_decay=decay_to(steps), seed=seed, desc=desc,
        progress=progress)
    return model


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def _mean_sd(values: list[float]) -> str:
    return "{:.3f} +- {:.3f}".format(*mean_sd(values))


def scatter(ax, pts: torch.Tensor, title: str, lim: float) -> None:
    p = pts.detach().float().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=0.3, alpha=0.4, rasterized=True)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def smoothed_bounds(model, kernel, test, seed, k_iw: int | None) -> tuple[float, float | None]:
    """-ELBO (10 noise draws per point) and -IW_K on the test set, nats per example (``k_iw=None``: no IW bound).

    The ELBO's draws come first from the seeded generator, so they do not depend on ``k_iw``.
    """
    g = torch.Generator().manual_seed(seed)
    neg_elbo = evaluate(lambda b: -smoothing.elbo(model, kernel, b, n_draws=10, generator=g), test, 2048)
    if k_iw is None:
        return neg_elbo, None
    neg_iw = evaluate(lambda b: -smoothing.iw_bound(model, kernel, b, k_iw, generator=g), test, 1024)
    return neg_elbo, neg_iw


TABLE1 = Budgets(quick=Budget(2000, 500, 60, hidden=(32, 32), k_iw=5, n_samples=1000),
                 full=Budget(20_000, 10_000, 20_000, hidden=(256, 256), k_iw=100, n_samples=5000))


@experiment("table1", "rings and olympics: MADE 3/6 vs smoothed MADE 3 (Table 1)",
            ("table1_rings.png", "table1_olympics.png"))
def table1(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """Table 1 and Figs. 5, 12, 13: MADE with 3 and 6 logistics vs the smoothed two-step MADE (3)."""
    sigma = 0.3 if sigma is None else sigma
    b = TABLE1.of(run)
    n_train, n_test, steps, hidden, k_iw, n_show = b.n_train, b.n_test, b.steps, b.hidden, b.k_iw, b.n_samples
    kernel = Gaussian(sigma)
    run.settings = {"sigma": sigma, "steps": steps, "hidden": list(hidden), "batch_size": 256, "lr": 1e-3,
                    "lr_final_factor": 0.02, "iw_k": k_iw, "n_train": n_train, "n_test": n_test}
    plt = pyplot()
    params = {}
    for ds in TABLE1_DATASETS:
        train, test = train_test(ds, n_train, n_test, run.seed)
        res, samples = {}, {"data": test[:n_show]}
        gen = torch.Generator().manual_seed(run.seed + 5)
        for k in (3, 6):
            torch.manual_seed(run.seed)
            m = MADE(dim=2, hidden=hidden, n_mix=k)
            train_model(m, lambda b: -m.log_prob(b).mean(), train, steps, run.seed, f"{ds} MADE-{k}", progress)
            res[f"made_{k}"] = evaluate(lambda b: -m.log_prob(b), test)
            samples[f"MADE, {k} logistics"] = m.sample(n_show, gen)
            params[f"made_{k}"] = count_params(m)
        torch.manual_seed(run.seed)
        sm = StackedMADE(dim=2, hidden=hidden, n_mix=3)
        g = torch.Generator().manual_seed(run.seed + 1)
        train_model(sm, lambda b: smoothing.smoothed_nll_loss(sm, kernel, b, g), train, steps, run.seed, f"{ds} smoothed-3",
                    progress)
        res["smoothed_3"], res["smoothed_3_iw"] = smoothed_bounds(sm, kernel, test, run.seed + 2, k_iw)
        params["smoothed_3"] = count_params(sm)
        for method, title in (("smoothed", "smoothed x~ ~ p(x~)"), ("two-step", "two-step (ours)"),
                              ("single-step", "single-step")):
            samples[title] = smoothing.sample(sm, kernel, n_show, method, torch.Generator().manual_seed(run.seed + 9))
        run.result[ds] = res
        fig, axes = plt.subplots(1, len(samples), figsize=(2.4 * len(samples), 2.6))
        lim = 3.6 if ds == "rings" else 3.2
        for ax, (title, pts) in zip(axes, samples.items()):
            scatter(ax, pts, title, lim)
        save_figure(fig, out / f"table1_{ds}.png")
        run.figures.append(f"table1_{ds}.png")
    run.settings["params"] = params
    rows = []
    for ds in TABLE1_DATASETS:
        r, p = run.result[ds], PAPER_TABLE1[ds]
        rows.append(f"| {ds} | {fmt(r['made_3'])} ({p['made_3']}) | {fmt(r['made_6'])} ({p['made_6']}) | "
                    f"{fmt(r['smoothed_3'])} ({p['smoothed_3']}) | {fmt(r['smoothed_3_iw'])} |")
    run.summary += [
        "Test NLL in nats per example (lower is better); paper values in brackets (their data, not ours).",
        f"Smoothed: q = N(x, {sigma}^2 I), one MADE over [x~, x]; `smoothed_3` is -ELBO, `smoothed_3_iw`",
        f"is the K={k_iw} importance-weighted bound (both upper-bound the NLL). Parameters: {params}.",
        "",
        "| dataset | MADE 3 mix | MADE 6 mix | ours 3 mix (-ELBO) | ours, -IW bound |",
        "|---|---|---|---|---|",
        *rows,
    ]


def realnvp_pair(hidden: int, n_layers: int, sigma: float,
                  posterior: tuple[int, int] | None = None) -> smoothing.ScoreConditionedPair:
    """p(x~) a RealNVP; p(x | x~) a conditional RealNVP over (x - x~) / sigma (an exact change of variables)
    whose networks see x~ and the prior's Tweedie feature sigma * grad log p(x~).

    ``posterior`` is (layers, hidden) of p(x | x~); by default the prior's.
    """
    post_layers, post_hidden = posterior or (n_layers, hidden)
    prior = RealNVP(dim=2, n_layers=n_layers, hidden=hidden)
    reverse = CenteredConditional(RealNVP(dim=2, n_layers=post_layers, hidden=post_hidden, context_dim=4), sigma)
    return smoothing.ScoreConditionedPair(prior, reverse, sigma)


def matching_hidden(target: int, n_layers: int) -> int:
    """Hidden width of a single RealNVP whose parameter count is closest to ``target``."""
    count = lambda h: count_params(RealNVP(dim=2, n_layers=n_layers, hidden=h))  # noqa: E731, increasing in h
    lo, hi = 1, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(count(h) - target))


SIGMA_GRID = (0.02, 0.05, 0.1, 0.2)
# p(x | x~) of the full run: (coupling layers, hidden width). At the small sigmas chosen the posterior is close
# to N(x~, sigma^2 I) and costs a few hundredths of a nat, while p(x~) loses tenths, so most of the
# parameter budget goes to p(x~) (8 layers, width 89): on validation data this beat two equal flows at every
# seed tried (results/synthetic/README.md).
PRIOR_SIZE = (8, 89)  # p(x~) of the full run: (coupling layers, hidden width)
POSTERIOR_SIZE = (4, 32)
REALNVP = Budgets(
    quick=Budget(2000, 500, 60, select_steps=30, width=16, layers=4, posterior=(2, 8), k_iw=5, n_samples=1000,
                 n_seeds=2),
    full=Budget(20_000, 10_000, 30_000, select_steps=5_000, width=PRIOR_SIZE[1], layers=PRIOR_SIZE[0],
                posterior=POSTERIOR_SIZE, k_iw=100, n_samples=5000, n_seeds=3))


def fit_plain(hidden, n_layers, train, steps, seed, desc, progress) -> RealNVP:
    """The baseline RealNVP of ``realnvp``, trained on the data by maximum likelihood."""
    torch.manual_seed(seed)
    base = RealNVP(dim=2, n_layers=n_layers, hidden=hidden)
    return train_model(base, lambda b: -base.log_prob(b).mean(), train, steps, seed, desc, progress)


def fit_pair(sigma, hidden, n_layers, train, steps, seed, desc, progress, build=realnvp_pair) -> smoothing.SmoothedPair:
    """A smoothed pair (``build``: by default :func:`realnvp_pair`) trained on the smoothed NLL at noise ``sigma``."""
    torch.manual_seed(seed)
    pair = build(hidden, n_layers, sigma)
    kernel, g = Gaussian(sigma), torch.Generator().manual_seed(seed + 1)
    return train_model(pair, lambda b: smoothing.smoothed_nll_loss(pair, kernel, b, g), train, steps, seed, desc, progress)


EXACT_LOG_PROB = {"checkerboard": checkerboard_smoothed_log_prob, "olympics": olympics_log_prob}


@torch.no_grad()
def exact_terms(dataset: str, sigma: float, x: torch.Tensor, x_tilde: torch.Tensor) -> dict:
    """The terms of -ELBO for the exact p(x~) and p(x | x~) of a 2-d set with a closed form, on given pairs.

    ``prior_nll_exact`` = E[-log p(x~)] (smoothed density); ``posterior_nll_exact`` = E[-log p(x | x~)] by
    Bayes, -log p(x) - log q(x~ | x) + log p(x~); ``neg_log_q`` = E[-log q(x~ | x)], which is also the posterior
    term of N(x~, sigma^2 I) (the posterior that ignores the data). All are averages over the same pairs, so a
    model scored on those pairs compares with them without the sampling error of q.
    """
    exact, kernel = EXACT_LOG_PROB[dataset], Gaussian(sigma)
    neg_log_q = -kernel.log_prob(x_tilde, x).mean().item()
    # the checkerboard is uniform on area 32, and every point of it lies in the support
    data_nll = math.log(32) if dataset == "checkerboard" else -exact(x.double(), 0.0).mean().item()
    prior = -exact(x_tilde.double(), sigma).mean().item()
    return {"data_nll_exact": data_nll, "prior_nll_exact": prior, "posterior_nll_exact": data_nll + neg_log_q - prior,
            "neg_log_q": neg_log_q}


@torch.no_grad()
def split_bound(pair: smoothing.SmoothedPair, dataset: str, sigma: float, test: torch.Tensor, seed: int) -> dict:
    """-ELBO = E[-log p(x~)] + E[-log p(x | x~)] + E[log q(x~ | x)], each term beside its exact value
    (:func:`exact_terms`), on one noise draw per test point; ``entropy_q`` is the analytic H(q) for reference.

    With the exact p(x~) and posterior the bound is tight, so the gaps show which stage loses.
    """
    kernel = Gaussian(sigma)
    xt = kernel.sample(test, torch.Generator().manual_seed(seed))
    ex = exact_terms(dataset, sigma, test, xt)
    prior_model = evaluate(lambda b: -pair.prior.log_prob(b), xt)
    post_model = -pair.log_prob_clean(test, xt).mean().item()
    return {"prior_nll": prior_model, "posterior_nll": post_model, "neg_elbo": prior_model + post_model - ex["neg_log_q"],
            "entropy_q": kernel.entropy(2), **ex}


@experiment("realnvp", "checkerboard and olympics: RealNVP with and without smoothing (sec. 5)",
            ("realnvp_checkerboard.png", "realnvp_olympics.png"))
def realnvp(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """Section 5: RealNVP vs RealNVP with smoothing (p(x~) and p(x | x~) both RealNVPs), equal parameters.

    Without ``--sigma`` the noise level is chosen per dataset on a validation split of the training
    data (the last fifth) from ``SIGMA_GRID``, with shorter runs; the test set is not looked at.
    Both models are then trained from ``n_seeds`` seeds (``--seed``, ``--seed`` + 1, ...; the data stay
    those of ``--seed``) and the results are the means: one seed's initialisation moves a 2-d flow by
    several hundredths of a nat, as much as the effect being measured.
    """
    b = REALNVP.of(run)
    build = partial(realnvp_pair, posterior=b.posterior)
    seeds = [run.seed + i for i in range(b.n_seeds)]
    grid = (SIGMA_GRID[1], SIGMA_GRID[-1]) if run.quick else SIGMA_GRID
    base_hidden = matching_hidden(count_params(build(b.width, b.layers, 0.3)), b.layers)
    select_steps, k_iw = b.select_steps, b.k_iw
    run.settings = {"sigma": sigma if sigma is not None else f"chosen on validation from {list(grid)}",
                    "steps": b.steps, "selection_steps": select_steps, "layers": b.layers, "hidden_smoothed": b.width,
                    "posterior_layers_hidden": list(b.posterior),
                    "hidden_baseline": base_hidden, "batch_size": 256, "lr": 1e-3, "lr_final_factor": 0.02,
                    "iw_k": k_iw, "n_train": b.n_train, "n_test": b.n_test, "training_seeds": seeds,
                    "posterior_context": "x~ and sigma * grad log p(x~), clamped to +-10 (ScoreConditionedPair)"}
    params, chosen, sweeps, splits, per_seed = {}, {}, {}, {}, {}
    for ds in REALNVP_DATASETS:
        found = _realnvp_dataset(run, out, ds, sigma, grid, build, base_hidden, seeds, progress)
        params, chosen[ds], per_seed[ds], splits[ds] = found["params"], found["sigma"], found["per_seed"], found["split"]
        if found["sweep"] is not None:
            sweeps[ds] = found["sweep"]
        mean = {k: mean_sd(v)[0] for k, v in per_seed[ds].items()}
        run.result[ds] = {"realnvp": mean["realnvp"], "smoothed_realnvp": mean["smoothed_realnvp"]}
        run.settings.setdefault("iw_bound", {})[ds] = mean["smoothed_realnvp_iw"]
    run.settings.update(params=params, chosen_sigma=chosen, validation_neg_elbo=sweeps, per_seed=per_seed,
                        split=splits)
    run.summary += _realnvp_summary(seeds, per_seed, chosen, params, k_iw, sweeps, grid, select_steps, splits)


def _realnvp_summary(seeds, per_seed: dict, chosen: dict, params: dict, k_iw: int, sweeps: dict, grid, select_steps: int,
                     splits: dict) -> list[str]:
    """The markdown of ``realnvp``: means over seeds beside the paper's, each seed, the choice of sigma, the split."""
    rows, seed_rows = [], []
    for ds in REALNVP_DATASETS:
        p, v = PAPER_REALNVP[ds], per_seed[ds]
        rows.append(f"| {ds} | {_mean_sd(v['realnvp'])} ({p['realnvp']}) | {chosen[ds]} | "
                    f"{_mean_sd(v['smoothed_realnvp'])} ({p['smoothed_realnvp']}) | {_mean_sd(v['smoothed_realnvp_iw'])} |")
        seed_rows += [f"| {ds} | {seed} | {fmt(a)} | {fmt(b)} | {fmt(b - a)} |"
                      for seed, a, b in zip(seeds, v["realnvp"], v["smoothed_realnvp"])]
    out = [
        "Test NLL in nats per example, mean +- standard deviation over training seeds "
        f"{seeds}; paper values in brackets (their data). Smoothed: q = N(x, sigma^2 I), "
        "p(x~) a RealNVP and p(x | x~) a conditional RealNVP over (x - x~)/sigma given x~ and sigma * grad log p(x~); "
        "value is -ELBO "
        f"(-IW bound with K={k_iw} alongside). Parameters: {params}. Checkerboard floor: log 32 = 3.466.",
        "",
        "| dataset | RealNVP | sigma | RealNVP + smoothing (-ELBO) | -IW bound |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Each seed (negative difference: smoothing ahead):",
        "",
        "| dataset | seed | RealNVP | smoothed -ELBO | difference |",
        "|---|---|---|---|---|",
        *seed_rows,
    ]
    if sweeps:
        out += ["", f"Choice of sigma: -ELBO on the validation split after {select_steps} steps.", "",
                        "| dataset | " + " | ".join(f"sigma {s}" for s in grid) + " |",
                        "|---|" + "---|" * len(grid),
                        *(f"| {ds} | " + " | ".join(fmt(v) for v in sweeps[ds].values()) + " |" for ds in sweeps)]
    if splits:
        out += [
            "", "How the smoothed bound splits, each training seed (test set; model and exact terms on the same noise "
            "draw per point; exact values from the closed-form densities): -ELBO = E[-log p(x~)] + E[-log p(x | x~)] "
            "+ E[log q(x~ | x)].", "",
            "| dataset | seed | E[-log p(x~)] | exact | E[-log p(x \\| x~)] | exact | E[log q(x~ \\| x)] | -ELBO | exact NLL |",
            "|---|---|---|---|---|---|---|---|---|",
            *(f"| {ds} | {seed} | {fmt(sp['prior_nll'])} | {fmt(sp['prior_nll_exact'])} | {fmt(sp['posterior_nll'])} | "
              f"{fmt(sp['posterior_nll_exact'])} | {fmt(-sp['neg_log_q'])} | {fmt(sp['neg_elbo'])} | "
              f"{fmt(sp['data_nll_exact'])} |"
              for ds, per in splits.items() for seed, sp in zip(seeds, per)),
        ]
    return out


def _realnvp_dataset(run: Run, out: Path, ds: str, sigma: float | None, grid, build, base_hidden: int, seeds: list[int],
                     progress: bool) -> dict:
    """One dataset of ``realnvp``: sigma (given, or picked on a validation split), both models from every
    seed, their bounds and the split of the smoothed bound; the sample figure of the first seed."""
    b = REALNVP.of(run)
    train, test = train_test(ds, b.n_train, b.n_test, run.seed)
    sweep = None
    if sigma is None:
        n_val = b.n_train // 5
        fit_part, val = train[:-n_val], train[-n_val:]
        sweep = {}
        for s in grid:
            pair = fit_pair(s, b.width, b.layers, fit_part, b.select_steps, run.seed, f"{ds} select sigma {s}",
                             progress, build)
            sweep[s] = smoothed_bounds(pair, Gaussian(s), val, run.seed + 2, None)[0]
        sigma = min(sweep, key=sweep.get)
    kernel = Gaussian(sigma)
    per_seed = {"realnvp": [], "smoothed_realnvp": [], "smoothed_realnvp_iw": []}
    split, params = [], {}
    for seed in seeds:
        base = fit_plain(base_hidden, b.layers, train, b.steps, seed, f"{ds} RealNVP, seed {seed}", progress)
        pair = fit_pair(sigma, b.width, b.layers, train, b.steps, seed, f"{ds} smoothed RealNVP, seed {seed}",
                         progress, build)
        params = {"realnvp": count_params(base), "smoothed_realnvp": count_params(pair)}
        neg_elbo, neg_iw = smoothed_bounds(pair, kernel, test, seed + 2, b.k_iw)
        for key, v in zip(per_seed, (evaluate(lambda x: -base.log_prob(x), test), neg_elbo, neg_iw)):
            per_seed[key].append(v)
        split.append(split_bound(pair, ds, sigma, test, seed + 3))
        if seed == seeds[0]:
            _realnvp_figure(run, out, ds, base, pair, kernel, test, b.n_samples, seed)
    return {"sigma": sigma, "sweep": sweep, "per_seed": per_seed, "split": split, "params": params}


def _realnvp_figure(run: Run, out: Path, ds: str, base, pair, kernel, test, n_show: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 9)
    with torch.no_grad():
        samples = {"data": test[:n_show], "RealNVP": base.sample(n_show, generator=gen),
                   "smoothed x~": pair.sample_noisy(n_show, gen),
                   "two-step (ours)": smoothing.sample(pair, kernel, n_show, "two-step", gen)}
    fig, axes = pyplot().subplots(1, 4, figsize=(10, 2.6))
    for ax, (title, pts) in zip(axes, samples.items()):
        scatter(ax, pts, title, 4.5 if ds == "checkerboard" else 3.2)
    save_figure(fig, out / f"realnvp_{ds}.png")
    run.figures.append(f"realnvp_{ds}.png")
