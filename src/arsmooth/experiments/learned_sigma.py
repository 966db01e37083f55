"""``reproduce learned-sigma``: a fixed noise level against one trained jointly by the ELBO (paper sec. 3.3).

The paper notes that sigma can be learned with the ELBO and that this "often assigns a very large
variance", with better likelihoods but worse samples than the heuristic sigma, and leaves the
comparison open. Here, on the 2-d rings and olympics (the Table 1 sets, where the exact data density
is known): the smoothed MADE of Table 1 with sigma fixed at Table 1's value against the same model
with log sigma a parameter, initialised at that value and trained with both stages on the full ELBO
(entropy term included), at equal steps. Reported: sigma's trajectory, test -ELBO and -IW bounds,
and sample quality as the NLL of two-step samples under the exact data density.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.synthetic import olympics_log_prob, rings_log_prob, train_test
from ..evaluation.figures import pyplot, save_figure
from ..maths import smoothing
from ..maths.kernels import Gaussian
from ..models.made import StackedMADE
from ..training.loop import evaluate, fit
from . import experiment
from .common import Budget, Budgets, Run, fmt
from .two_d import TABLE1_DATASETS, decay_to, scatter, smoothed_bounds

TRUE_LOG_PROB = {"rings": rings_log_prob, "olympics": olympics_log_prob}
SIGMA0 = 0.3  # Table 1's noise level: the fixed arm, and where the first learned one starts
HIGH_START = 3.0  # the second learned arm starts at HIGH_START * SIGMA0: does sigma end where it began?
RECORD_EVERY = 100  # steps between two points of sigma's trajectory


LEARNED_SIGMA = Budgets(quick=Budget(2000, 500, 60, hidden=(32, 32), k_iw=5, n_samples=1000),
                        full=Budget(20_000, 10_000, 20_000, hidden=(256, 256), k_iw=100, n_samples=5000))


def _train(ds: str, train: torch.Tensor, cfg: Budget, seed: int, sigma0: float, learn: bool, progress: bool):
    """The smoothed MADE (3 logistics) and the sigma it ends with; sigma's trajectory when learned."""
    torch.manual_seed(seed)
    model = StackedMADE(dim=2, hidden=tuple(cfg.hidden), n_mix=3)
    g = torch.Generator().manual_seed(seed + 1)
    trajectory = []
    if learn:
        sigma = smoothing.LearnedSigma(sigma0)
        both = torch.nn.ModuleDict({"model": model, "sigma": sigma})

        def loss(b):
            if len(trajectory) * RECORD_EVERY <= loss.calls:
                trajectory.append([loss.calls, sigma.value])
            loss.calls += 1
            return smoothing.learned_sigma_loss(model, sigma, b, g)

        loss.calls = 0
        fit(both, loss, train, steps=cfg.steps, batch_size=256, lr=1e-3, lr_decay=decay_to(cfg.steps), seed=seed,
            desc=f"{ds} learned sigma", progress=progress)
        trajectory.append([cfg.steps, sigma.value])
        return model, sigma.value, trajectory
    kernel = Gaussian(sigma0)
    fit(model, lambda b: smoothing.smoothed_nll_loss(model, kernel, b, g), train, steps=cfg.steps, batch_size=256, lr=1e-3,
        lr_decay=decay_to(cfg.steps), seed=seed, desc=f"{ds} sigma {sigma0}", progress=progress)
    return model, sigma0, trajectory


def _arms(sigma0: float) -> list[tuple[str, float, bool]]:
    """(name, initial sigma, learned?) of each model trained per dataset."""
    return [("fixed", sigma0, False), ("learned", sigma0, True), ("learned_high_start", HIGH_START * sigma0, True)]


@experiment("learned-sigma", "rings and olympics: sigma fixed vs learned by the ELBO (sec. 3.3)",
            ("learned_sigma_rings.png", "learned_sigma_olympics.png", "learned_sigma_trajectory.png"))
def learned_sigma(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    sigma0 = SIGMA0 if sigma is None else sigma
    cfg = LEARNED_SIGMA.of(run)
    run.settings = {"n_train": cfg.n_train, "n_test": cfg.n_test, "steps": cfg.steps, "hidden": list(cfg.hidden),
                    "iw_k": cfg.k_iw, "n_samples": cfg.n_samples, "sigma_fixed_and_initial": sigma0, "batch_size": 256,
                    "lr": 1e-3, "lr_final_factor": 0.02,
                    "model": "StackedMADE, 3 logistics (Table 1's smoothed model)",
                    "learned": "log sigma, Adam with the model, full ELBO with the entropy term"}
    plt = pyplot()
    fig_t, ax_t = plt.subplots(figsize=(5, 3))
    rows = []
    for ds in TABLE1_DATASETS:
        train, test = train_test(ds, cfg.n_train, cfg.n_test, run.seed)
        samples = {"data": test[: cfg.n_samples]}
        res = {}
        for arm, start, learn in _arms(sigma0):
            model, s, traj = _train(ds, train, cfg, run.seed, start, learn, progress)
            kernel = Gaussian(s)
            neg_elbo, neg_iw = smoothed_bounds(model, kernel, test, run.seed + 2, cfg.k_iw)
            gen = torch.Generator().manual_seed(run.seed + 9)
            two = smoothing.sample(model, kernel, cfg.n_samples, "two-step", gen)
            with torch.no_grad():
                sample_nll = evaluate(lambda b: -TRUE_LOG_PROB[ds](b.double()), two)
            res[arm] = {"sigma": s, "neg_elbo": neg_elbo, "neg_iw": neg_iw, "sample_nll_true_density": sample_nll,
                        "trajectory": traj}
            samples[f"two-step, sigma {s:.3g} ({arm})"] = two
            if traj:
                ax_t.plot(*zip(*traj), label=f"{ds}, from {start:.3g}")
        res["data_sample_nll_true_density"] = evaluate(lambda b: -TRUE_LOG_PROB[ds](b.double()), test)
        run.result[ds] = res
        fig, axes = plt.subplots(1, len(samples), figsize=(2.6 * len(samples), 2.8))
        for ax, (title, pts) in zip(axes, samples.items()):
            scatter(ax, pts, title, 3.6 if ds == "rings" else 3.2)
        save_figure(fig, out / f"learned_sigma_{ds}.png")
        run.figures.append(f"learned_sigma_{ds}.png")
        for arm, _, _ in _arms(sigma0):
            r = res[arm]
            rows.append(f"| {ds} | {arm} | {r['sigma']:.4g} | {fmt(r['neg_elbo'])} | {fmt(r['neg_iw'])} | "
                        f"{fmt(r['sample_nll_true_density'])} | {fmt(res['data_sample_nll_true_density'])} |")
    ax_t.legend(fontsize=8)
    _save_trajectory(run, fig_t, ax_t, sigma0, out / "learned_sigma_trajectory.png", "learned sigma")
    run.summary += [
        f"Smoothed MADE (3 logistics, hidden {list(cfg.hidden)}), {cfg.steps} steps each, sigma fixed at {sigma0} "
        f"against sigma learned by the ELBO from {sigma0} and from {HIGH_START * sigma0:.3g}. "
        "Test bounds in nats per example (lower is better; "
        f"-IW with K={cfg.k_iw}). Sample quality: mean -log p_data of {cfg.n_samples} two-step samples under the "
        "exact data density (lower: samples where the data are), beside the same for test data.",
        "",
        "| dataset | sigma | final sigma | -ELBO | -IW | sample NLL (exact density) | test data's |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "![sigma trajectory](learned_sigma_trajectory.png)",
    ]


def _save_trajectory(run: Run, fig, ax, sigma0: float, path: Path, title: str) -> None:
    """Finish and save a plot of sigma against training steps (the start value dashed)."""
    ax.axhline(sigma0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="training step", ylabel="sigma", yscale="log", title=title)
    save_figure(fig, path)
    run.figures.append(path.name)


@dataclass(frozen=True)
class MnistBudget:
    preset: str  # the training settings of both arms
    steps: int  # training steps of each arm
    n_samples: int  # two-step samples scored per column
    n_eval: int  # test images of the bounds
    iw_k: int  # K of the importance-weighted bound


MNIST_QUICK = MnistBudget("digits-smoothed", steps=10, n_samples=16, n_eval=32, iw_k=2)
MNIST_FULL = MnistBudget("mnist-cpu-smoothed", steps=3000, n_samples=1000, n_eval=1000, iw_k=8)


def _mnist_arm(run: Run, out: Path, arm: str, c, cfg: MnistBudget, test: torch.Tensor, clf, sigma0: float,
               progress: bool) -> tuple[dict, str]:
    """Train (or find) one arm of learned-sigma-mnist and score it: its result and its table row."""
    from ..data.image_sets import to_uint8
    from ..evaluation import metrics as sample_metrics
    from ..evaluation import tasks
    from ..evaluation.figures import side_by_side
    from ..runtime.run_folder import read_metrics
    from .image_experiments import train_or_resume

    summary = train_or_resume(c, out / "runs" / arm, progress)
    ckpt = out / "runs" / arm / "last.pt"
    pair, kernel = tasks.load_pair(ckpt, ckpt)
    g = torch.Generator().manual_seed(run.seed + 2)
    bpd = tasks.likelihood(test[: cfg.n_eval], pair=pair, kernel=kernel, k_iw=cfg.iw_k, generator=g)
    cols = tasks.two_step_columns(pair, kernel, cfg.n_samples, generator=torch.Generator().manual_seed(run.seed + 9))
    n = cfg.n_samples
    m = {k: {q: v for q, v in sample_metrics.sample_metrics(to_uint8(x), to_uint8(test)[:n], clf, run.seed).items()
             if q in ("fid", "kid", "kid_std", "is")} for k, x in cols.items()}
    side_by_side({k: v[:10] for k, v in cols.items()}, out / f"learned_sigma_mnist_{arm}.png", n=10)
    run.figures.append(f"learned_sigma_mnist_{arm}.png")
    path = [(0, sigma0)] + [(r["step"], r["sigma"]) for r in read_metrics(out / "runs" / arm) if "sigma" in r]
    result = {"sigma": kernel.std, "neg_elbo_bpd": bpd["two_step_elbo"], "neg_iw_bpd": bpd["two_step_iw"],
              "metrics": m, "steps": summary["steps"], "train_seconds": summary["train_seconds"], "sigma_path": path}
    row = (f"| {arm} | {kernel.std:.4g} | {bpd['two_step_elbo']:.4f} | {bpd['two_step_iw']:.4f} | "
           + " | ".join(f"{m[k]['fid']:.1f} / {m[k]['kid']:.1f} / {m[k]['is']:.2f}"
                        for k in ("smoothed", "single-step", "two-step"))
           + f" | {summary['train_seconds']} |")
    return result, row


@experiment("learned-sigma-mnist", "MNIST, both stages trained together: sigma fixed vs learned (sec. 3.3)",
            ("learned_sigma_mnist_fixed.png", "learned_sigma_mnist_learned.png", "learned_sigma_mnist_trajectory.png"),
            options=("classifier",))
def learned_sigma_mnist(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """MNIST at CPU scale: both stages trained together on the ELBO (``kind: smoothed``), sigma fixed at the
    paper's 0.5 against sigma learned from 0.5, at equal steps; bounds, sigma's path, sample metrics (LeNet)."""
    from ..data.image_sets import load_configured
    from ..runtime.config import load_config
    from .image_experiments import metric_classifier

    cfg = MNIST_QUICK if run.quick else MNIST_FULL
    sigma0 = 0.5 if sigma is None else sigma
    base = {"train.seed": run.seed, "smoothing.sigma": sigma0, "train.max_steps": cfg.steps, "train.max_minutes": None}
    cfgs = {arm: load_config(cfg.preset, values={**base, "smoothing.learn_sigma": arm == "learned"})
            for arm in ("fixed", "learned")}
    data = cfgs["fixed"].data
    test = load_configured(data, "test")[0]
    clf, info = metric_classifier(out, data, progress, run.classifier)
    run.settings = {**dataclasses.asdict(cfg), "sigma_fixed_and_initial": sigma0, "feature_extractor": {k: info[k] for k in
                    ("test_accuracy", "weights_sha256", "dataset")}}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    rows = []
    for arm, c in cfgs.items():
        run.result[arm], row = _mnist_arm(run, out, arm, c, cfg, test, clf, sigma0, progress)
        rows.append(row)
        if arm == "learned":
            ax.plot(*zip(*run.result[arm]["sigma_path"]))
    _save_trajectory(run, fig, ax, sigma0, out / "learned_sigma_mnist_trajectory.png", "sigma learned by the ELBO (MNIST)")
    run.summary += [
        f"Both stages trained together on the ELBO (`{cfg.preset}`, {cfg.steps} steps each, seed {run.seed}); "
        f"sigma fixed at {sigma0} against learned from {sigma0}. Bounds in 8-bit bits/dim on {cfg.n_eval} test "
        f"images (-IW with K={cfg.iw_k}); FID / KID / Inception-style score with our LeNet "
        f"({100 * info['test_accuracy']:.2f}% test accuracy) on {cfg.n_samples} samples per column.",
        "",
        "| sigma | final sigma | -ELBO | -IW | x~: FID / KID / IS | single-step: FID / KID / IS | two-step: FID / KID / IS "
        "| train s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "![sigma trajectory](learned_sigma_mnist_trajectory.png)",
    ]
