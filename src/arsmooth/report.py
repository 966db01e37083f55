"""``arsmooth report``: one markdown report over image reproductions, laid out like the paper's Table 2.

Reads what ``arsmooth reproduce mnist|fashion`` wrote (``NAME.json`` and ``NAME.run.json``) and puts
the baseline, p(x~), single-step and two-step side by side: sample-quality metrics (named after our
LeNet feature extractor), bits/dim, sample grids, nearest neighbours, linear probes, with the budgets
and sample counts behind every number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ArsmoothError

ROWS = {"real": "real (test vs training images)", "baseline": "baseline PixelCNN++", "smoothed": "p(x~) samples x~",
        "single_step": "single-step denoised", "two_step": "two-step (ours)"}
NAMES = ("mnist", "fashion")


def _load(run_dir: Path) -> tuple[str, dict, dict]:
    for name in NAMES:
        res, rec = run_dir / f"{name}.json", run_dir / f"{name}.run.json"
        if res.is_file() and rec.is_file():
            try:
                return name, json.loads(res.read_text()), json.loads(rec.read_text())
            except json.JSONDecodeError as e:
                raise ArsmoothError(f"{res} is not valid JSON ({e.msg})") from None
    raise ArsmoothError(f"{run_dir} holds no image reproduction (mnist.json or fashion.json with its .run.json); "
                        "run: arsmooth reproduce mnist --out DIR")


def _section(run_dir: Path, out_dir: Path, name: str, res: dict, rec: dict) -> list[str]:
    rel = Path(os.path.relpath(run_dir, out_dir))
    st = rec["settings"]
    m, bpd = res.get("metrics"), res["bpd"]
    lines = [f"## {name}: `{run_dir}`", "",
             f"Command: `{rec['command']}` (seed {rec['seed']}, {rec['wall_time_s']} s of evaluation wall time). "
             f"Presets {', '.join(st['presets'].values())}; training seconds "
             + ", ".join(f"{k} {v}" for k, v in res["train_seconds"].items())
             + "; parameters " + ", ".join(f"{k} {v}" for k, v in res["params"].items()) + ".", ""]
    bpd_cell = {"baseline": f"{bpd['baseline']:.3f} (exact)",
                "two_step": f"≤ {bpd['two_step_elbo']:.3f} (-ELBO), ≤ {bpd['two_step_iw']:.3f} (IW)"}
    if m:
        fx = st.get("feature_extractor", {})
        lines += [f"{m['n_samples']} samples per row, scored against as many test images ({st['n_eval']} test images "
                  f"for bits/dim). Feature extractor: our LeNet, {100 * fx.get('test_accuracy', float('nan')):.2f}% "
                  f"test accuracy, weights sha256 `{fx.get('weights_sha256', '?')[:16]}`. Not Inception: compare "
                  "rows, not papers.", "",
                  "| samples | FID (LeNet features) | KID (LeNet features) | Inception-style score (LeNet logits) | bits/dim |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {m[k]['fid']:.2f} | {m[k]['kid']:.3f} ± {m[k]['kid_std']:.3f} | {m[k]['is']:.2f} | "
                  f"{bpd_cell.get(k, '')} |" for k, label in ROWS.items() if k in m]
    else:
        lines += ["(no sample metrics in this run; rerun `arsmooth reproduce` to add them)", "",
                  "| model | bits/dim |", "|---|---|", *[f"| {ROWS[k]} | {v} |" for k, v in bpd_cell.items()]]
    psnr = res["denoise_psnr"]
    lines += ["", f"Denoising PSNR (dB): noisy {psnr['noisy']:.2f}, single-step {psnr['single_step']:.2f}, "
              f"two-step {psnr['two_step']:.2f} (a two-step output is a sample of p(x | x~), not a mean: "
              "it is sharp but need not be close in PSNR)."]
    if res.get("ablation_c6"):
        lines += ["", "App. C.6, single-step denoising with the clean-data baseline: " + "; ".join(
            f"sigma {s}: {v['noisy']:.2f} dB noisy -> {v['single_step']:.2f} dB" for s, v in res["ablation_c6"].items())
            + "."]
    if res.get("probe_accuracy"):
        lines += ["", "Linear probes (test accuracy per ul block): " + "; ".join(
            f"{k} " + ", ".join(f"{a:.2f}" for a in v) for k, v in res["probe_accuracy"].items()) + "."]
    lines += [""] + [f"![{k}]({(rel / f).as_posix()})" for k, f in res["figures"].items() if (run_dir / f).is_file()]
    return lines + [""]


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write the markdown report for ``run_dirs`` to ``out``; returns its path."""
    from .fileio import atomic_write_text

    out = Path(out)
    loaded = [(Path(d), *_load(Path(d))) for d in run_dirs]
    lines = ["# arsmooth: image results", "",
             "Columns as in the paper's Table 2 (Meng et al. 2021): baseline PixelCNN++, samples of the smoothed "
             "model p(x~), single-step denoising of those samples (eq. 7) and two-step samples x ~ p(x | x~). "
             "Lower FID / KID and bits/dim are better, higher Inception-style score is better.", ""]
    for d, name, res, rec in loaded:
        lines += _section(d, out.parent, name, res, rec)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines))
    return out
