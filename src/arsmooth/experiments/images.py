"""``reproduce mnist`` / ``reproduce fashion``: baseline and both stages, samples, bounds, inpainting, denoising.

Full runs use the ``mnist-cpu-*`` presets (a smaller PixelCNN++ than the paper's, sized for 2 CPU
cores; the paper's sizes are the ``mnist-*`` presets). Training runs live in ``OUT/runs/KIND`` and are
resumed, not restarted, when the folder already holds one, so a long reproduction survives a crash.
``--quick`` uses scikit-learn's 8x8 digits and a handful of steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .. import imaging as I
from ..config import load_config
from ..data.images import load_dataset, to_uint8
from ..fileio import atomic_write
from ..train import train
from ..viz import save_grid, side_by_side
from .common import Run

from . import _IMAGE_FIGURES as FIGURES


def _budget(quick: bool) -> dict:
    """Samples per column, test images for bits/dim, K of the IW bound, test images for the tasks."""
    if quick:
        return {"n_samples": 8, "n_eval": 32, "k_iw": 2, "n_task": 4}
    return {"n_samples": 1000, "n_eval": 1000, "k_iw": 4, "n_task": 100}


def _save_samples(cols: dict, path: Path, seed: int) -> None:
    """All samples of every column: uint8 (for metrics and reports) and raw floats (to resume from)."""
    arrays = {f"{k}.uint8": to_uint8(v).numpy() for k, v in cols.items()}
    arrays.update({f"{k}.raw": v.numpy() for k, v in cols.items()})
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, seed=np.array(seed), **arrays), suffix=".npz")


def _load_samples(path: Path, n: int, seed: int) -> dict | None:
    """The samples of an earlier run of the same seed and size (sampling is the slow part), else None."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        names = [k[: -len(".raw")] for k in z.files if k.endswith(".raw")]
        if int(z["seed"]) != seed or not names or any(z[f"{k}.raw"].shape[0] != n for k in names):
            return None
        return {k: torch.from_numpy(z[f"{k}.raw"]) for k in names}


def _run(run: Run, out: Path, sigma: float | None, progress: bool, dataset: str) -> None:
    quick = run.quick
    budget = _budget(quick)
    prefix = "digits" if quick else f"{dataset}-cpu"
    overrides = [f"train.seed={run.seed}"] + ([f"smoothing.sigma={sigma}"] if sigma is not None else [])
    cfgs = {k: load_config(f"{prefix}-{k}", overrides) for k in ("baseline", "stage1", "stage2")}
    data_name = cfgs["baseline"]["data"]["dataset"]
    test = load_dataset(data_name, "test", cfgs["baseline"]["data"]["data_root"])[0]
    summaries = {}
    for kind, cfg in cfgs.items():
        run_dir = out / "runs" / kind
        if (run_dir / "summary.json").is_file():  # finished earlier: keep its record as it was
            summaries[kind] = json.loads((run_dir / "summary.json").read_text())
            continue
        resume = (run_dir / "last.pt").exists()
        summaries[kind] = train(None if resume else cfg, run_dir, resume=resume, progress=progress)
    base, _ = I.load_model(out / "runs" / "baseline" / "last.pt", "baseline")
    pair, kernel = I.load_pair(out / "runs" / "stage1" / "last.pt", out / "runs" / "stage2" / "last.pt")
    g = torch.Generator().manual_seed(run.seed + 100)
    n = budget["n_samples"]
    cols = _load_samples(out / "samples.npz", n, run.seed)
    if cols is None:
        cols = {"baseline": I.sample_images("baseline", n, baseline=base, generator=g, progress=progress)}
        cols.update(I.two_step_columns(pair, kernel, n, generator=g, progress=progress))  # one x~, three outputs
        _save_samples(cols, out / "samples.npz", run.seed)
    g = torch.Generator().manual_seed(run.seed + 200)  # the rest does not depend on whether samples were reused
    for method, x in cols.items():
        save_grid(x[:100], out / f"samples_{method.replace('-', '_')}.png")
    side_by_side(cols, out / "samples_fig6.png", n=min(n, 10))
    x = test[: budget["n_eval"]]
    bpd = I.likelihood(x, baseline=base, pair=pair, kernel=kernel, n_draws=1, k_iw=budget["k_iw"], generator=g)
    metrics, probes, clf_info = _evaluate_samples(out, cols, test, cfgs, pair, kernel, run.seed, quick, progress)
    xt = test[: budget["n_task"]]
    inp = I.inpaint(pair, kernel, xt, g, progress)
    show = min(8, budget["n_task"])
    side_by_side({"original": xt, "observed": inp["observed"], "x~": inp["x_tilde"], "completed": inp["completed"]},
                 out / "inpainting.png", n=show)
    den = I.denoise(pair, kernel, xt, g, progress)
    ablation = I.clean_model_single_step(base, xt, generator=g)
    side_by_side(den["images"], out / "denoising.png", n=show)
    run.settings = {"presets": {k: f"{prefix}-{k}" for k in cfgs}, **budget, "data": data_name,
                    "feature_extractor": clf_info}
    run.result = {
        "config": {k: v for k, v in cfgs.items()},
        "train_seconds": {k: s["train_seconds"] for k, s in summaries.items()},
        "params": {k: s["params"] for k, s in summaries.items()},
        "bpd": {"baseline": bpd["baseline"], "two_step_elbo": bpd["two_step_elbo"], "two_step_iw": bpd["two_step_iw"]},
        "denoise_psnr": {"noisy": den["psnr"]["noisy"], "single_step": den["psnr"]["single_step"],
                         "two_step": den["psnr"]["two_step"]},
        "figures": {"fig6": "samples_fig6.png", "baseline": "samples_baseline.png", "smoothed": "samples_smoothed.png",
                    "single_step": "samples_single_step.png", "two_step": "samples_two_step.png",
                    "inpainting": "inpainting.png", "denoising": "denoising.png",
                    "neighbours_pixels": "neighbours_pixels.png", "neighbours_features": "neighbours_features.png",
                    "probes": "probes.png"},
        "metrics": metrics,
        "probe_accuracy": probes,
        "ablation_c6": ablation,
    }
    run.figures += list(FIGURES)
    r = run.result
    m = metrics
    bpd_cells = {"baseline": f"{r['bpd']['baseline']:.3f}",
                 "two_step": f"≤ {r['bpd']['two_step_elbo']:.3f} (IW ≤ {r['bpd']['two_step_iw']:.3f})"}
    metric_rows = [f"| {name} | {m[k]['fid']:.2f} | {m[k]['kid']:.2f} ± {m[k]['kid_std']:.2f} | "
                   f"{m[k]['is']:.2f} | {bpd_cells.get(k, '')} |" for k, name in _COLUMNS.items()]
    run.summary += [
        f"Data: {data_name}; presets {', '.join(run.settings['presets'].values())}; sigma {kernel.std}.",
        f"Test bits/dim on {bpd['n_images']} test images (8-bit; lower is better): baseline (exact) "
        f"{r['bpd']['baseline']:.3f}; two-step -ELBO ({bpd['elbo_noise_draws']} noise draw) {r['bpd']['two_step_elbo']:.3f}; "
        f"two-step IW bound (K={bpd['iw_k']}) {r['bpd']['two_step_iw']:.3f}.",
        "",
        "| model | parameters | training steps | training seconds | stopped by |",
        "|---|---|---|---|---|",
        *[f"| {k} | {s['params']} | {s['steps']} | {s['train_seconds']} | {s['stopped']} |" for k, s in summaries.items()],
        "",
        f"Denoising PSNR (dB, {budget['n_task']} test images): noisy {r['denoise_psnr']['noisy']:.2f}, "
        f"single-step {r['denoise_psnr']['single_step']:.2f}, two-step {r['denoise_psnr']['two_step']:.2f}.",
        f"Figure columns of samples_fig6.png: baseline, smoothed x~, single-step, two-step; {n} samples of each "
        "in samples.npz (uint8), the first 100 in samples_METHOD.png.",
        "",
        f"Sample quality ({m['n_samples']} samples per row against as many test images; the feature extractor is "
        f"our LeNet ({100 * clf_info['test_accuracy']:.2f}% test accuracy, sha256 {clf_info['weights_sha256'][:12]}), "
        "not Inception: these numbers compare rows of this table only). KID: mean ± std over 50 subsets "
        "of half the samples.",
        "",
        "| samples | FID (LeNet features) | KID (LeNet features) | Inception-style score (LeNet logits) | test bits/dim |",
        "|---|---|---|---|---|",
        *metric_rows,
        "",
        f"App. C.6 ablation, single-step denoising with the baseline (trained on clean data) read as a continuous "
        f"density, PSNR dB on {budget['n_task']} test images: "
        + "; ".join(f"sigma {k}: noisy {v['noisy']:.2f}, denoised {v['single_step']:.2f}" for k, v in ablation.items())
        + ".",
        "",
        "Linear-probe test accuracy per ul block (down pass, then up pass): "
        + "; ".join(f"{k}: " + ", ".join(f"{a:.2f}" for a in v) for k, v in probes.items()) + ".",
    ]


_COLUMNS = {"real": "real (test vs training images)", "baseline": "baseline PixelCNN++", "smoothed": "smoothed x~ ~ p(x~)",
            "single_step": "single-step denoised", "two_step": "two-step (ours)"}


def _evaluate_samples(out: Path, cols: dict, test, cfgs: dict, pair, kernel, seed: int, quick: bool,
                      progress: bool) -> tuple[dict, dict, dict]:
    """FID / KID / IS of every column with our LeNet, the real-vs-real floor, neighbours, probes."""
    from .. import classifier as K
    from .. import metrics as MT
    from ..probes import probe_accuracies

    data_cfg = cfgs["baseline"]["data"]
    path = out / "classifier.pt"
    if path.is_file():
        clf, info = K.load(path)
    else:
        clf, info = K.fit_dataset(data_cfg["dataset"], data_cfg["data_root"], seed=0, progress=progress)
        K.save(clf, info, path)
        info = K.load(path)[1]
    train_x, train_y = load_dataset(data_cfg["dataset"], "train", data_cfg["data_root"])
    test_y = load_dataset(data_cfg["dataset"], "test", data_cfg["data_root"])[1]
    n = len(next(iter(cols.values())))
    test_u8, train_u8 = to_uint8(test), to_uint8(train_x)
    keep = ("fid", "kid", "kid_std", "is")
    metrics = {k.replace("-", "_"): {q: v for q, v in MT.sample_metrics(to_uint8(x), test_u8[:n], clf, seed).items()
                                     if q in keep} for k, x in cols.items()}
    real = MT.real_baseline(test_u8, train_u8, n, clf, info["weights_sha256"], out, seed)
    metrics = {**metrics, "real": {q: real[q] for q in keep}, "n_samples": n}
    for space, embed in (("pixels", None), ("features", clf.features)):
        rows = []
        for name in ("baseline", "two-step"):
            s = to_uint8(cols[name][:4])
            idx = MT.nearest(s, train_u8, k=5, embed=embed)
            for i in range(len(s)):
                rows += [s[i : i + 1], train_u8[idx[i]]]
        save_grid(torch.cat(rows).float() / 127.5 - 1, out / f"neighbours_{space}.png", nrow=6)
    n_probe = (200, 100) if quick else (2000, 1000)
    probes = {stage: probe_accuracies(model, (train_x[: n_probe[0]], train_y[: n_probe[0]]),
                                      (test[: n_probe[1]], test_y[: n_probe[1]]), kernel, seed)
              for stage, model in (("stage1", pair.prior), ("stage2", pair.reverse))}
    _plot_probes(probes, out / "probes.png")
    keep_info = ("test_accuracy", "weights_sha256", "epochs", "dataset")
    return metrics, probes, {k: info[k] for k in keep_info}


def _plot_probes(probes: dict, path: Path) -> None:
    from .common import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for stage, acc in probes.items():
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=stage)
    ax.set_xlabel("ul block (down pass, then up pass)")
    ax.set_ylabel("linear-probe test accuracy")
    ax.legend()
    save_figure(fig, path)


def mnist(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """The paper's MNIST experiment (Fig. 6, inpainting, denoising) at a CPU budget."""
    _run(run, out, sigma, progress, "mnist")


def fashion(run: Run, out: Path, sigma: float | None, progress: bool) -> None:
    """As ``mnist``, on Fashion-MNIST."""
    _run(run, out, sigma, progress, "fashion")
