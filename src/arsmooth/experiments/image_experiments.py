"""``reproduce mnist`` / ``reproduce fashion``: baseline and both stages, samples, bounds, inpainting, denoising.

Full runs use the ``mnist-cpu-*`` presets (a smaller PixelCNN++ than the paper's, sized for 2 CPU
cores; the paper's sizes are the ``mnist-*`` presets). Training runs live in ``OUT/runs/KIND`` and are
resumed, not restarted, when the folder already holds one, so a long reproduction survives a crash.
``--quick`` uses scikit-learn's 8x8 digits and a handful of steps.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.image_sets import load_configured, to_uint8
from ..errors import ArsmoothError
from ..evaluation import tasks
from ..evaluation.figures import save_grid, side_by_side
from ..runtime import distributed
from ..runtime.config import DataSettings, Settings, load_config
from ..runtime.fileio import atomic_write
from ..training.trainer import evaluate_bpd, train
from . import experiment
from .common import Run, num_or_na

# the stage-2 design reproduce mnist / fashion trains unless --stage2 says otherwise: spatial won on both
# datasets at equal parameters and CPU time (results/images/stage2_designs/)
DEFAULT_STAGE2 = "spatial"


# the presets each dataset's full run trains: CPU sizes for the 28x28 sets, the paper's for CIFAR-10 / CelebA (GPUs)
FIGURES = ("samples_fig6.png", "samples_baseline.png", "samples_smoothed.png", "samples_single_step.png",
           "samples_two_step.png", "inpainting.png", "denoising.png", "neighbours_pixels.png", "neighbours_features.png",
           "probes.png")
DESIGN_FIGURES = ("denoising_designs.png", "two_step_stacked.png", "two_step_spatial.png")
_OPTIONS = ("stage2", "data_root", "classifier")  # the reproduce options of the PixelCNN++ image experiments
PRESET_PREFIX = {"mnist": "mnist-cpu", "fashion": "fashion-cpu", "cifar10": "cifar10", "celeba": "celeba"}
RGB_DATASETS = ("cifar10", "celeba")


SAMPLE_BATCH = 128  # images sampled at once (one thread, MNIST baseline: 20 images/s at 64, 27 at 192)


@dataclass(frozen=True)
class ImageBudget:
    """What an image experiment samples and scores (its training budgets are the presets')."""

    n_samples: int  # samples per column (FID / KID / IS)
    sample_batch: int  # images sampled at once
    n_eval: int  # test images of the exact bits/dim and the -ELBO
    n_iw: int  # test images of the IW bound
    k_iw: int  # its K
    n_task: int  # test images for denoising and inpainting
    n_probe: tuple  # training / test images of the linear probes (None: the full set)


IMAGE_QUICK = ImageBudget(8, 2, n_eval=32, n_iw=16, k_iw=2, n_task=4, n_probe=(200, 100))
IMAGE_FULL = ImageBudget(5000, SAMPLE_BATCH, n_eval=10000, n_iw=2000, k_iw=16, n_task=500, n_probe=(None, None))


def _budget(quick: bool, dataset: str = "mnist") -> ImageBudget:
    """CIFAR-10 and CelebA draw the 50,000 samples per column of the paper's Table 2."""
    if quick:
        return IMAGE_QUICK
    return dataclasses.replace(IMAGE_FULL, n_samples=50_000) if dataset in RGB_DATASETS else IMAGE_FULL


def _save_samples(cols: dict, path: Path, seed: int) -> None:
    """All samples of every column as uint8 (what the metrics and reports use)."""
    arrays = {f"{k}.uint8": to_uint8(v).numpy() for k, v in cols.items()}
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, seed=np.array(seed), **arrays), suffix=".npz")


def _load_samples(path: Path, n: int, seed: int) -> dict | None:
    """The samples of an earlier run of the same seed and size (sampling is the slow part), else None."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        names = [k[: -len(".uint8")] for k in z.files if k.endswith(".uint8")]
        if int(z["seed"]) != seed or sorted(names) != sorted(tasks.FIG6_COLUMNS) or \
                any(z[f"{k}.uint8"].shape[0] != n for k in names):
            return None
        return {k: torch.from_numpy(z[f"{k}.uint8"]).float() / 127.5 - 1 for k in tasks.FIG6_COLUMNS}


def train_or_resume(cfg: Settings, run_dir: Path, progress: bool) -> dict:
    """Train ``cfg`` in ``run_dir``, resume it if it holds a checkpoint, or keep a finished run's record."""
    if (run_dir / "summary.json").is_file():  # finished earlier: keep its record as it was
        return json.loads((run_dir / "summary.json").read_text())
    resume = (run_dir / "last.pt").exists()
    summary = train(None if resume else cfg, run_dir, resume=resume, progress=progress)
    if summary.get("stopped") in ("SIGINT", "SIGTERM"):  # the run has its checkpoint; stop, do not evaluate it
        raise KeyboardInterrupt
    return summary


def _sample_columns(out: Path, base, pair, kernel, n: int, batch: int, seed: int, progress: bool,
                    ctx: distributed.Context) -> dict | None:
    """The Fig. 6 columns of ``out/samples.npz``, drawn (and saved) unless an earlier run of this seed did.

    Batch by batch, each from its own seed, dealt across the processes under torchrun (``ctx``); an
    interrupted run continues from ``samples.partial*.npz``. Rank 0 gets the columns, the others None.
    """
    cols = _load_samples(out / "samples.npz", n, seed)
    if cols is not None:
        return cols if ctx.main else None
    u8 = tasks.fig6_columns(base, pair, kernel, n, seed + 100, batch_size=batch, partial=out / "samples.partial.npz",
                        progress=progress, ctx=ctx)
    if u8 is not None:
        cols = {k: v.float() / 127.5 - 1 for k, v in u8.items()}
        _save_samples(cols, out / "samples.npz", seed)
    distributed.barrier(ctx)  # samples.npz is written: every rank may drop its partial file
    tasks.partial_path(out / "samples.partial.npz", ctx).unlink(missing_ok=True)
    return cols


def _stage2_preset(prefix: str, design: str) -> str:
    return f"{prefix}-stage2" + ("-spatial" if design == "spatial" else "")


def _run(run: Run, out: Path, sigma: float | None, progress: bool, dataset: str,
         stage2: str = DEFAULT_STAGE2, data_root: str | None = None, inception_weights: str | None = None,
         network: str = "pixelcnnpp") -> None:
    """Train (or resume) the three models, draw the Fig. 6 columns, score bounds, samples and tasks."""
    budget = _budget(run.quick, dataset)
    presets, cfgs = _configs(run, dataset, sigma, stage2, data_root, network)
    test = load_configured(cfgs["baseline"].data, "test")[0]
    if dataset in RGB_DATASETS and distributed.is_main_process():  # the GPU sets: what it will cost, before it starts
        print("\n".join(_estimate(cfgs, tuple(test.shape[1:]), run.device, budget)), file=sys.stderr, flush=True)
    trained = _train_and_sample(run, out, cfgs, budget, progress)
    if trained is None:  # not rank 0 of a torchrun group: its share of the samples is with rank 0, which scores them
        return
    summaries, base, pair, kernel, cols = trained
    g = torch.Generator().manual_seed(run.seed + 200)  # the rest does not depend on whether samples were reused
    for method, x in cols.items():
        save_grid(x[:100], out / f"samples_{method.replace('-', '_')}.png")
    side_by_side(cols, out / "samples_fig6.png", n=min(budget.n_samples, 10))
    bpd = _bounds(test, budget, base, pair, kernel, g)
    metrics, probes, clf_info = _evaluate_samples(out, cols, test, cfgs, base, pair, kernel, run.seed, run.quick,
                                                  progress, run.classifier)
    inception = None
    if inception_weights is not None:  # the standard Inception FID / KID / IS, beside ours
        from ..evaluation import metrics as sample_quality

        test_u8 = to_uint8(test[: budget.n_samples])
        inception = {k.replace("-", "_"): sample_quality.inception_metrics(to_uint8(x), test_u8, inception_weights)
                     for k, x in cols.items()}
    den, ablation = _tasks(out, test[: budget.n_task], base, pair, kernel, g, progress)
    run.settings = {"presets": presets, "stage2": stage2, **dataclasses.asdict(budget), "data": cfgs["baseline"].data.dataset,
                    "feature_extractor": clf_info}
    run.result = {
        "config": {k: v.to_dict() for k, v in cfgs.items()},
        "train_seconds": {k: s["train_seconds"] for k, s in summaries.items()},
        "params": {k: s["params"] for k, s in summaries.items()},
        "training": {k: _training_record(s, cfgs[k]) for k, s in summaries.items()},
        "bpd": {k: bpd[k] for k in ("baseline", "two_step_elbo", "two_step_iw", "n_images", "iw_k", "iw_images",
                                    "two_step_elbo_on_iw_images")},
        "denoise_psnr": {"noisy": den["psnr"]["noisy"], "single_step": den["psnr"]["single_step"],
                         "two_step": den["psnr"]["two_step"]},
        "figures": {"fig6": "samples_fig6.png", "baseline": "samples_baseline.png", "smoothed": "samples_smoothed.png",
                    "single_step": "samples_single_step.png", "two_step": "samples_two_step.png",
                    "inpainting": "inpainting.png", "denoising": "denoising.png",
                    "neighbours_pixels": "neighbours_pixels.png", "neighbours_features": "neighbours_features.png",
                    "probes": "probes.png"},
        "metrics": metrics,
        **({"inception_metrics": inception} if dataset in RGB_DATASETS else {}),  # None: not asked for
        "probe_accuracy": probes,
        "ablation_c6": ablation,
    }
    run.figures += [f for f in FIGURES if (out / f).is_file()]  # no probes.png without labels
    run.summary += _summary(run, summaries, bpd, budget, kernel.std, clf_info, dataset)


def _seed_and_sigma(run: Run, sigma: float | None) -> dict:
    """The settings every image experiment gives its presets: the run's seed, and ``--sigma`` when given."""
    return {"train.seed": run.seed, **({"smoothing.sigma": sigma} if sigma is not None else {})}


NAMES = {"mnist": ("mnist", "pixelcnnpp"), "fashion": ("fashion", "pixelcnnpp"), "cifar10": ("cifar10", "pixelcnnpp"),
         "celeba": ("celeba", "pixelcnnpp"), "transformer-mnist": ("mnist", "transformer"),
         "transformer-fashion": ("fashion", "transformer")}  # reproduce name: dataset, network


def image_plan(name: str, quick: bool, seed: int, sigma: float | None, device: str = "cpu",
               stage2: str = DEFAULT_STAGE2, data_root: str | None = None, **_) -> list[str]:
    """``reproduce NAME --dry-run``: the models, their budgets and what is sampled and scored; for the GPU
    sets (cifar10, celeba) the cost estimate on ``device``, measured briefly."""
    from ..models import count_params
    from ..models.build import build_model

    dataset, network = NAMES[name]
    run = Run(name=name, quick=quick, seed=seed, device=device)
    presets, cfgs = _configs(run, dataset, sigma, stage2, data_root, network)
    budget = _budget(quick, dataset)
    shape = _SHAPES["digits" if quick and dataset not in RGB_DATASETS else dataset]
    lines = []
    for kind, cfg in cfgs.items():
        t = cfg.train
        lines.append(f"  {kind}: preset {presets[kind]}, {cfg.model.describe()}, "
                     f"{count_params(build_model(cfg, shape)):,} parameters; {t.max_steps:,} steps of {t.batch_size} "
                     f"({t.max_steps * t.batch_size:,} images){f', at most {t.max_minutes} min' if t.max_minutes else ''}; "
                     f"trains on device {cfg.device}")
    lines.append(f"  then on {device}: {budget.n_samples:,} samples per Fig. 6 column (batch {budget.sample_batch}), "
                 f"exact bits/dim on {budget.n_eval:,} test images, IW (K={budget.k_iw}) on {budget.n_iw:,}, "
                 f"inpainting and denoising on {budget.n_task}")
    if dataset in RGB_DATASETS:
        lines += _estimate(cfgs, shape, device, budget)
    return lines


_SHAPES = {"mnist": (1, 28, 28), "fashion": (1, 28, 28), "cifar10": (3, 32, 32), "celeba": (3, 32, 32),
           "digits": (1, 8, 8)}


def _estimate(cfgs: dict, shape: tuple, device: str, budget: ImageBudget) -> list[str]:
    from ..evaluation.bench import cost_lines, measure_costs

    dev = str(distributed.resolve_device(device))
    return cost_lines(measure_costs(cfgs, shape, dev, n_samples=budget.n_samples, train_batch=8 if dev == "cpu" else None,
                                    train_steps=1 if dev == "cpu" else 3, sample_batch=8 if dev == "cpu" else 256))


# the transformer family's presets (stage 2 always sees x~ through its encoder); --quick: tiny ones on digits
TRANSFORMER_PREFIX = {"mnist": "mnist-cpu-transformer", "fashion": "fashion-cpu-transformer"}
TRANSFORMER_QUICK = {"model.network": "transformer", "model.tf_width": 16, "model.tf_layers": 1, "model.tf_heads": 2,
                     "model.tf_encoder_blocks": 1, "model.dropout": 0.0}


def _configs(run: Run, dataset: str, sigma: float | None, stage2: str, data_root: str | None,
             network: str = "pixelcnnpp") -> tuple[dict, dict]:
    """The presets of the three models and their configs, with the run's seed, sigma and data folder."""
    prefix = "digits" if run.quick else (TRANSFORMER_PREFIX if network == "transformer" else PRESET_PREFIX)[dataset]
    values = _seed_and_sigma(run, sigma)
    if network == "transformer":
        stage2 = "spatial"
        if run.quick:
            values.update(TRANSFORMER_QUICK)
    if data_root is not None:
        values["data.data_root"] = str(data_root)
    if run.quick and dataset in RGB_DATASETS:  # the tiny digits networks on a few of the dataset's own images
        values.update({"data.dataset": dataset, "data.limit": 64})
    presets = {"baseline": f"{prefix}-baseline", "stage1": f"{prefix}-stage1",
               "stage2": f"{prefix}-stage2" if network == "transformer" and not run.quick else _stage2_preset(prefix, stage2)}
    return presets, {k: load_config(p, values=values) for k, p in presets.items()}


def _train_and_sample(run: Run, out: Path, cfgs: dict, budget: ImageBudget, progress: bool):
    """Train or resume the three runs in ``out/runs``, load them and draw the Fig. 6 columns. Under torchrun
    one process group serves the three trainings and the sampling and is left here; ranks other than the
    first get None."""
    ctx = distributed.setup("cuda" if torch.cuda.is_available() and cfgs["baseline"].device != "cpu" else "cpu")
    try:
        summaries = {kind: train_or_resume(cfg, out / "runs" / kind, progress) for kind, cfg in cfgs.items()}
        dev = distributed.resolve_device(run.device)
        base, _ = tasks.load_model(out / "runs" / "baseline" / "last.pt", "baseline", dev)
        pair, kernel = tasks.load_pair(out / "runs" / "stage1" / "last.pt", out / "runs" / "stage2" / "last.pt", dev)
        cols = _sample_columns(out, base, pair, kernel, budget.n_samples, budget.sample_batch, run.seed,
                               progress, ctx)
    except BaseException:
        distributed.shutdown(ctx, clean=False)
        raise
    distributed.shutdown(ctx)
    return (summaries, base, pair, kernel, cols) if ctx.main else None


def _bounds(test, budget: ImageBudget, base, pair, kernel, g: torch.Generator) -> dict:
    """Bits/dim: the baseline's exact value and the two-step -ELBO on ``n_eval`` test images, the IW bound on
    the first ``n_iw`` (with the -ELBO on those, to compare like with like)."""
    bpd = tasks.likelihood(test[: budget.n_eval], baseline=base, pair=pair, kernel=kernel, n_draws=1, generator=g)
    iw = tasks.likelihood(test[: budget.n_iw], pair=pair, kernel=kernel, n_draws=1, k_iw=budget.k_iw, generator=g)
    bpd.update(two_step_iw=iw["two_step_iw"], iw_k=iw["iw_k"], iw_images=iw["n_images"],
               two_step_elbo_on_iw_images=iw["two_step_elbo"])
    return bpd


def _tasks(out: Path, xt, base, pair, kernel, g: torch.Generator, progress: bool) -> tuple[dict, dict]:
    """Inpainting and denoising of the test images ``xt`` (with their figures), and the App. C.6 ablation."""
    inp = tasks.inpaint(pair, kernel, xt, g, progress)
    show = min(8, len(xt))
    side_by_side({"original": xt, "observed": inp["observed"], "x~": inp["x_tilde"], "completed": inp["completed"]},
                 out / "inpainting.png", n=show)
    den = tasks.denoise(pair, kernel, xt, g, progress)
    ablation = tasks.clean_model_single_step(base, xt, generator=g)
    side_by_side(den["images"], out / "denoising.png", n=show)
    return den, ablation


def _summary(run: Run, summaries: dict, bpd: dict, budget: ImageBudget, sigma: float, clf_info: dict,
             dataset: str) -> list[str]:
    """The markdown body of ``NAME.md``."""
    r, quick = run.result, run.quick
    m, probes, ablation = r["metrics"], r["probe_accuracy"], r["ablation_c6"]
    bpd_cells = {"baseline": f"{r['bpd']['baseline']:.3f}",
                 "two_step": f"≤ {r['bpd']['two_step_elbo']:.3f} (IW ≤ {r['bpd']['two_step_iw']:.3f})"}
    metric_rows = [f"| {name} | {m[k]['fid']:.2f} | {m[k]['kid']:.2f} ± {m[k]['kid_std']:.2f} | "
                   f"{num_or_na(m[k]['is'])} | {bpd_cells.get(k, '')} |" for k, name in _COLUMNS.items()]
    return [
        f"Data: {run.settings['data']}; presets {', '.join(run.settings['presets'].values())}; sigma {sigma}.",
        f"Test bits/dim on {bpd['n_images']} test images (8-bit; lower is better): baseline (exact) "
        f"{r['bpd']['baseline']:.3f}; two-step -ELBO ({bpd['elbo_noise_draws']} noise draw) {r['bpd']['two_step_elbo']:.3f}; "
        f"two-step IW bound (K={bpd['iw_k']}, the first {bpd['iw_images']} test images; -ELBO on those "
        f"{bpd['two_step_elbo_on_iw_images']:.3f}) {r['bpd']['two_step_iw']:.3f}.",
        "",
        "| model | parameters | training steps | images seen | training hours (wall) | stopped by |",
        "|---|---|---|---|---|---|",
        *[f"| {k} | {s['params']} | {s['steps']} | {r['training'][k]['images_seen']:,} | {r['training'][k]['wall_hours']} | "
          f"{s['stopped']} |" for k, s in summaries.items()],
        "",
        f"Denoising PSNR (dB, {budget.n_task} test images): noisy {r['denoise_psnr']['noisy']:.2f}, "
        f"single-step {r['denoise_psnr']['single_step']:.2f}, two-step {r['denoise_psnr']['two_step']:.2f}.",
        f"Figure columns of samples_fig6.png: baseline, smoothed x~, single-step, two-step; {budget.n_samples} "
        "samples of each in samples.npz (uint8), the first 100 in samples_METHOD.png.",
        "",
        f"Sample quality ({m['n_samples']} samples per row against as many test images; the feature extractor is "
        f"{_extractor(clf_info)}, not Inception: these numbers compare rows of this table only). KID: mean ± std "
        "over 50 subsets of half the samples.",
        "",
        "| samples | FID (LeNet features) | KID (LeNet features) | Inception-style score (LeNet logits) | test bits/dim |",
        "|---|---|---|---|---|",
        *metric_rows,
        "",
        f"App. C.6 ablation, single-step denoising with the baseline (trained on clean data) read as a continuous "
        f"density, PSNR dB on {budget.n_task} test images: "
        + "; ".join(f"sigma {k}: noisy {v['noisy']:.2f}, denoised {v['single_step']:.2f}" for k, v in ablation.items())
        + ".",
        "",
        (f"Linear-probe test accuracy per block ({_PROBED}; {_probe_sizes(quick)}): "
         + "; ".join(f"{k}: " + ", ".join(f"{a:.2f}" for a in v) for k, v in probes.items()) + ".") if probes
        else "No linear probes: the dataset has no labels.",
        "",
        *_inception_lines(r.get("inception_metrics"), dataset),
    ]


def _training_record(summary: dict, cfg: Settings) -> dict:
    """Steps, training images seen and hours of one model (CPU-hours where it trained on CPU and its run
    recorded its threads; runs written before they did record hours only)."""
    batch = summary.get("batch_size", cfg.train.batch_size)  # the global batch, over all processes
    hours = summary["train_seconds"] / 3600
    threads = summary.get("threads")
    cpu = hours * summary.get("processes", 1) * threads if threads and summary.get("device") == "cpu" else None
    return {"steps": summary["steps"], "batch_size": batch, "images_seen": summary["steps"] * batch,
            "wall_hours": round(hours, 3), "processes": summary.get("processes", 1), "threads": threads,
            "cpu_hours": None if cpu is None else round(cpu, 3)}


def _extractor(info: dict) -> str:
    what = ("our LeNet trained to tell four rotations apart (self-supervised: the data have no labels; no "
            "Inception-style score)") if info.get("task") == "rotation" else "our LeNet"
    return f"{what} ({100 * info['test_accuracy']:.2f}% test accuracy, sha256 {info['weights_sha256'][:12]})"


def _inception_lines(inception: dict | None, dataset: str) -> list[str]:
    if dataset not in RGB_DATASETS:
        return []
    if inception is None:
        from ..evaluation.metrics import INCEPTION_FILE

        return [f"No Inception metrics: pass --inception-weights {INCEPTION_FILE} (torch-fidelity's FID Inception "
                "weights, with pip install 'arsmooth[inception]') to add the standard FID / KID / IS."]
    rows = [f"| {_COLUMNS[k]} | {v['fid']:.2f} | {v['kid']:.4f} ± {v['kid_std']:.4f} | {v['is']:.2f} |"
            for k, v in inception.items()]
    return ["Standard Inception metrics (torch-fidelity's Inception v3; comparable with papers at 50,000 samples):",
            "", "| samples | FID | KID | IS |", "|---|---|---|---|", *rows]


_COLUMNS = {"real": "real (test vs training images)", "baseline": "baseline", "smoothed": "smoothed x~ ~ p(x~)",
            "single_step": "single-step denoised", "two_step": "two-step (ours)"}


_PROBED = "PixelCNN++: ul blocks, down pass then up pass; transformer: blocks in order"


def _probe_sizes(quick: bool) -> str:
    tr, te = _budget(quick).n_probe
    return f"fit on {tr or 'all'} training images, scored on {te or 'all'} test images"


PROBE_GRIDS = (1, 4)  # probe features: the position average, and the average over each cell of a 4x4 grid


def _evaluate_samples(out: Path, cols: dict, test, cfgs: dict, base, pair, kernel, seed: int, quick: bool,
                      progress: bool, classifier: str | None) -> tuple[dict, dict, dict]:
    """FID / KID / IS of every column with our LeNet, the real-vs-real floor, neighbours, probes."""
    from ..evaluation import metrics as sample_quality
    from ..evaluation.probes import probe_accuracies

    data_cfg = cfgs["baseline"].data
    clf, info = metric_classifier(out, data_cfg, progress, classifier)
    clf = clf.to(next(base.parameters()).device)  # the metrics run where the models are
    train_x, train_y = load_configured(data_cfg, "train")
    test_y = load_configured(data_cfg, "test")[1]
    n = len(next(iter(cols.values())))
    test_u8, train_u8 = to_uint8(test), to_uint8(train_x)
    keep = ("fid", "kid", "kid_std", "is")
    score = info.get("task") != "rotation"  # logits over four rotations: an Inception-style score would mean nothing
    metrics = {k.replace("-", "_"): {q: v for q, v in sample_quality.sample_metrics(to_uint8(x), test_u8[:n], clf, seed,
                                                                        score=score).items()
                                     if q in keep} for k, x in cols.items()}
    real = sample_quality.real_baseline(test_u8, train_u8, n, clf, info["weights_sha256"], out, seed, score=score)
    metrics = {**metrics, "real": {q: real[q] for q in keep}, "n_samples": n}
    for space, embed in (("pixels", None), ("features", clf.features)):
        rows = []
        for name in ("baseline", "two-step"):
            s = to_uint8(cols[name][:4])
            idx = sample_quality.nearest(s, train_u8, k=5, embed=embed)
            for i in range(len(s)):
                rows += [s[i : i + 1], train_u8[idx[i]]]
        save_grid(torch.cat(rows).float() / 127.5 - 1, out / f"neighbours_{space}.png", nrow=6)
    n_probe = _budget(quick).n_probe
    n_probe = (n_probe[0] or len(train_x), n_probe[1] or len(test))
    probes = {}
    for stage, model in (("baseline", base), ("stage1", pair.prior), ("stage2", pair.reverse)) if test_y is not None else ():
        acc = probe_accuracies(model, (train_x[: n_probe[0]], train_y[: n_probe[0]]),
                               (test[: n_probe[1]], test_y[: n_probe[1]]), kernel, seed, grids=PROBE_GRIDS)
        probes.update({stage if g == 1 else f"{stage}, {g}x{g} cells": a for g, a in acc.items()})
    if probes:
        plot_probes(probes, out / "probes.png")
    keep_info = ("test_accuracy", "weights_sha256", "epochs", "dataset", "task")
    return metrics, probes, {k: info.get(k, "classes" if k == "task" else None) for k in keep_info}


def metric_classifier(out: Path, data_cfg: DataSettings, progress: bool, given: str | None = None):
    """The LeNet ``given`` (``reproduce --classifier``; it must be the experiment's dataset's), else the one of
    ``OUT/classifier.pt``, fit (and saved there) when missing."""
    from ..evaluation import classifier as lenet

    if given is not None:
        clf, info = lenet.load(given)
        if info.get("dataset") != data_cfg.dataset:
            raise ArsmoothError(f"--classifier {given} was fit on {info.get('dataset')}, this experiment's data is "
                                f"{data_cfg.dataset}")
        return clf, info
    path = out / "classifier.pt"
    if not path.is_file():
        clf, info = lenet.fit_dataset(data_cfg.dataset, data_cfg.data_root, seed=0, progress=progress)
        lenet.save(clf, info, path)
    return lenet.load(path)


def plot_probes(probes: dict, path: Path) -> None:
    """Linear-probe test accuracy against block, one line per model and pooling (the ``probe_accuracy`` of an image
    experiment's JSON), as a PNG at ``path``."""
    from ..evaluation.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    for stage, acc in probes.items():
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=stage)
    ax.xaxis.get_major_locator().set_params(integer=True)  # blocks are counted: no tick between two
    ax.set_xlabel(f"block ({_PROBED})")
    ax.set_ylabel("linear-probe test accuracy")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")  # beside the lines, not on them
    save_figure(fig, path)


@experiment("mnist", "MNIST: PixelCNN++ baseline vs two-step smoothed model (Fig. 6, tasks)", FIGURES, _OPTIONS,
            image_plan)
def mnist(run: Run, out: Path, sigma: float | None, progress: bool, stage2: str = DEFAULT_STAGE2,
          data_root: str | None = None) -> None:
    """The paper's MNIST experiment (Fig. 6, inpainting, denoising) at a CPU budget."""
    _run(run, out, sigma, progress, "mnist", stage2, data_root)


@experiment("fashion", "Fashion-MNIST: as mnist", FIGURES, _OPTIONS, image_plan)
def fashion(run: Run, out: Path, sigma: float | None, progress: bool, stage2: str = DEFAULT_STAGE2,
            data_root: str | None = None) -> None:
    """As ``mnist``, on Fashion-MNIST."""
    _run(run, out, sigma, progress, "fashion", stage2, data_root)


@experiment("cifar10", "CIFAR-10: the paper's Table 2 models and columns (GPUs; --quick: tiny models)", FIGURES,
            (*_OPTIONS, "inception_weights"), image_plan)
def cifar10(run: Run, out: Path, sigma: float | None, progress: bool, stage2: str = DEFAULT_STAGE2,
            data_root: str | None = None, inception_weights: str | None = None) -> None:
    """The paper's Table 2 models on CIFAR-10 (the ``cifar10-*`` presets: GPUs), 50,000 samples per column,
    bounds, tasks, and sample metrics with our LeNet fit on CIFAR-10 (not Inception; named so), plus the
    standard Inception metrics when ``inception_weights`` is given."""
    _run(run, out, sigma, progress, "cifar10", stage2, data_root, inception_weights)


@experiment("celeba", "CelebA 32x32: as cifar10 (FID / KID on rotation-trained LeNet features, no probes)",
            FIGURES, (*_OPTIONS, "inception_weights"), image_plan)
def celeba(run: Run, out: Path, sigma: float | None, progress: bool, stage2: str = DEFAULT_STAGE2,
           data_root: str | None = None, inception_weights: str | None = None) -> None:
    """As ``cifar10``, on CelebA 32x32 (``DATA_ROOT/celeba/img_align_celeba``); FID / KID on the features of
    a LeNet trained on rotations (CelebA has no class labels here), no linear probes."""
    _run(run, out, sigma, progress, "celeba", stage2, data_root, inception_weights)


@experiment("transformer-mnist", "MNIST with a causal pixel transformer: baseline vs smoothing, as mnist", FIGURES,
            ("data_root", "classifier"), image_plan)
def transformer_mnist(run: Run, out: Path, sigma: float | None, progress: bool, data_root: str | None = None) -> None:
    """The MNIST experiment with the causal pixel transformer in place of PixelCNN++ (the
    ``mnist-cpu-transformer-*`` presets): does smoothing help a transformer, at equal parameters?"""
    _run(run, out, sigma, progress, "mnist", "spatial", data_root, network="transformer")


@experiment("transformer-fashion", "Fashion-MNIST with a causal pixel transformer: as transformer-mnist", FIGURES,
            ("data_root", "classifier"), image_plan)
def transformer_fashion(run: Run, out: Path, sigma: float | None, progress: bool, data_root: str | None = None) -> None:
    """As ``transformer_mnist``, on Fashion-MNIST."""
    _run(run, out, sigma, progress, "fashion", "spatial", data_root, network="transformer")


# -- the two stage-2 designs side by side ------------------------------------------------------------

DESIGNS = ("stacked", "spatial")


@dataclass(frozen=True)
class DesignsBudget:
    """What ``stage2-mnist`` / ``stage2-fashion`` sample and score."""

    n_samples: int  # two-step samples per design (FID / KID / IS)
    n_eval: int  # test images of the bounds
    k_iw: int  # K of the IW bound
    n_task: int  # test images for denoising
    n_sensitivity: int  # test images for the sensitivity to x~


DESIGNS_QUICK = DesignsBudget(8, n_eval=16, k_iw=2, n_task=8, n_sensitivity=2)
DESIGNS_FULL = DesignsBudget(1000, n_eval=1000, k_iw=4, n_task=500, n_sensitivity=8)


def _score_design(run: Run, out: Path, d: str, pair, kernel, xt, test, budget: DesignsBudget, summ: dict, bs: int,
                  sample_metrics, den_images: dict, progress: bool) -> dict:
    """One stage-2 design of ``_stage2_designs``: its two-step samples, bounds, denoising (its images go into
    ``den_images``) and sensitivity to x~, each from the same seeds as the other design's."""
    n = budget.n_samples
    x_eval, x_task, x_sens = test[: budget.n_eval], test[: budget.n_task], test[: budget.n_sensitivity]
    two = torch.cat([pair.reverse.sample(context=xt[i : i + 64], generator=torch.Generator().manual_seed(run.seed + 300 + i),
                                         progress=progress) for i in range(0, n, 64)])
    two = tasks.check_finite(two, f"two-step sampling ({d})")
    save_grid(two[:100], out / f"two_step_{d}.png")
    g = torch.Generator().manual_seed(run.seed + 200)
    bpd = tasks.likelihood(x_eval, pair=pair, kernel=kernel, n_draws=1, k_iw=budget.k_iw, generator=g)
    term = evaluate_bpd(pair.reverse, kernel, x_eval, seed=run.seed + 201)  # E_q[-log P(x | x~)], bits/dim
    den = tasks.denoise(pair, kernel, x_task, torch.Generator().manual_seed(run.seed + 202), progress)
    den_images.setdefault("clean", den["images"]["clean"])
    den_images.setdefault("noisy", den["images"]["noisy"])
    den_images.setdefault("single-step", den["images"]["single_step"])
    den_images[f"two-step {d}"] = den["images"]["two_step"]
    g = torch.Generator().manual_seed(run.seed + 203)
    sens = tasks.stage2_sensitivity(pair.reverse, x_sens, kernel.sample(x_sens, g),
                                      tasks.sensitivity_positions(*test.shape[-2:]))
    return {
        "params": summ["params"], "steps": summ["steps"], "train_seconds": summ["train_seconds"],
        "train_images_per_s": round(summ["steps"] * bs / summ["train_seconds"], 2),
        "stage2_term_bpd": term, "two_step_elbo": bpd["two_step_elbo"], "two_step_iw": bpd["two_step_iw"],
        "psnr": den["psnr"], "metrics": sample_metrics(two), "sensitivity": sens,
    }


def _stage2_designs(run: Run, out: Path, sigma: float | None, progress: bool, dataset: str) -> None:
    """Stacked against spatial stage 2 with one shared stage 1, at about equal parameters and CPU time.

    Both stage-2 models see the same test images, noise draws and x~ samples (one generator seed
    per measurement, reset for each design), so every difference comes from the stage-2 model.
    """
    from ..evaluation import metrics as sample_quality
    from ..maths import smoothing

    quick, budget = run.quick, DESIGNS_QUICK if run.quick else DESIGNS_FULL
    prefix = "digits" if quick else f"{dataset}-cpu"
    values = _seed_and_sigma(run, sigma)
    presets = {"stage1": f"{prefix}-stage1", **{f"stage2-{d}": _stage2_preset(prefix, d) for d in DESIGNS}}
    cfgs = {k: load_config(p, values=values) for k, p in presets.items()}
    summaries = {k: train_or_resume(cfg, out / "runs" / k, progress) for k, cfg in cfgs.items()}
    data_cfg = cfgs["stage1"].data
    test = load_configured(data_cfg, "test")[0]
    clf, info = metric_classifier(out, data_cfg, progress, run.classifier)
    pairs = {d: tasks.load_pair(out / "runs" / "stage1" / "last.pt", out / "runs" / f"stage2-{d}" / "last.pt") for d in DESIGNS}
    kernel = pairs["stacked"][1]
    prior = pairs["stacked"][0].prior
    n = budget.n_samples
    xt = tasks.sample_images("smoothed", n, pair=pairs["stacked"][0], kernel=kernel,
                         generator=torch.Generator().manual_seed(run.seed + 100), progress=progress)
    single = torch.cat([smoothing.denoise(pairs["stacked"][0], kernel, xt[i : i + 64], "single-step") for i in range(0, n, 64)])
    test_u8 = to_uint8(test[:n])
    keep = ("fid", "kid", "kid_std", "is")

    def sample_metrics(x):
        return {q: v for q, v in sample_quality.sample_metrics(to_uint8(x), test_u8, clf, run.seed).items() if q in keep}

    res: dict = {"x_tilde": sample_metrics(xt), "single_step": sample_metrics(single.detach())}
    den_images: dict = {}
    for d in DESIGNS:
        pair = smoothing.SmoothedPair(prior, pairs[d][0].reverse)
        res[d] = _score_design(run, out, d, pair, kernel, xt, test, budget, summaries[f"stage2-{d}"],
                               cfgs[f"stage2-{d}"].train.batch_size, sample_metrics, den_images, progress)
    side_by_side(den_images, out / "denoising_designs.png", n=min(8, budget.n_task))
    res["stage1"] = {k: summaries["stage1"][k] for k in ("params", "steps", "train_seconds")}
    run.settings = {"presets": presets, **dataclasses.asdict(budget), "data": data_cfg.dataset, "sigma": kernel.std,
                    "feature_extractor": {k: info[k] for k in ("test_accuracy", "weights_sha256", "dataset")}}
    run.result = res
    run.figures += ["denoising_designs.png", "two_step_stacked.png", "two_step_spatial.png"]
    run.summary += designs_table(res, dataclasses.asdict(budget), data_cfg.dataset, kernel.std)


def designs_table(res: dict, budget: dict, data: str, sigma: float) -> list[str]:
    rows = []
    for d in DESIGNS:
        r = res[d]
        m, p, s = r["metrics"], r["psnr"], r["sensitivity"]
        rows.append(f"| {d} | {r['params']:,} | {r['steps']} in {r['train_seconds']:.0f} s | {r['train_images_per_s']:.1f} | "
                    f"{r['stage2_term_bpd']:.3f} | {r['two_step_elbo']:.3f} / {r['two_step_iw']:.3f} | "
                    f"{p['two_step']:.2f} | {m['fid']:.1f} | {m['kid']:.2f} ± {m['kid_std']:.2f} | {m['is']:.2f} | "
                    f"{s['ratio_min']:.3g} to {s['ratio_max']:.3g} |")
    noisy, single = res["stacked"]["psnr"]["noisy"], res["stacked"]["psnr"]["single_step"]
    return [
        f"Data: {data}, sigma {sigma}. One stage 1 ({res['stage1']['params']:,} parameters) shared by both designs; "
        f"the same test images, noise draws and x~ samples for both.",
        "",
        f"| stage 2 | parameters | training | images/s | E[-log P(x given x~)] bits/dim ({budget['n_eval']} test) | "
        f"two-step -ELBO / IW (K={budget['k_iw']}) | two-step PSNR dB ({budget['n_task']} test) | FID | KID | IS | "
        "sensitivity ratio (neighbours / x~ here) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Denoising PSNR of the noisy input {noisy:.2f} dB, single-step {single:.2f} dB (stage 1 only). Sample metrics: "
        f"{budget['n_samples']} samples against as many test images, LeNet features and logits (not Inception); "
        f"x~ itself: FID {res['x_tilde']['fid']:.1f}, single-step: FID {res['single_step']['fid']:.1f}.",
    ]


@experiment("stage2-mnist", "MNIST: the paper's stacked stage 2 against the spatially conditioned one",
            DESIGN_FIGURES, ("classifier",))
def stage2_mnist(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """MNIST: the paper's stacked stage 2 against the spatially conditioned one."""
    _stage2_designs(run, out, sigma, progress, "mnist")


@experiment("stage2-fashion", "Fashion-MNIST: as stage2-mnist", DESIGN_FIGURES, ("classifier",))
def stage2_fashion(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """As ``stage2_mnist``, on Fashion-MNIST."""
    _stage2_designs(run, out, sigma, progress, "fashion")
