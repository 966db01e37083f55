"""``arsmooth report``: one markdown report over image reproductions, laid out like the paper's Table 2.

Reads what ``arsmooth reproduce mnist|fashion|cifar10|celeba`` wrote (``NAME.json`` and ``NAME.run.json``) and puts
the baseline, p(x~), single-step and two-step side by side: sample-quality metrics (named after our
LeNet feature extractor), bits/dim, sample grids, nearest neighbours, linear probes, with the budgets
and sample counts behind every number. Folders of ``arsmooth train`` (a user's own runs) get a table
and their learning curves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ArsmoothError
from ..maths.objectives import objective_of
from ..runtime.config import Settings
from .common import num_or_na

ROWS = {"real": "real (test vs training images)", "baseline": "baseline PixelCNN++", "smoothed": "p(x~) samples x~",
        "single_step": "single-step denoised", "two_step": "two-step (ours)"}
NAMES = ("mnist", "fashion", "cifar10", "celeba", "transformer-mnist", "transformer-fashion")

# Meng et al. 2021, Table 2 (unconditional CIFAR-10): Inception score, FID, KID, bits/dim ("≤": a bound)
PAPER_TABLE2 = {"PixelCNN": (4.60, 65.93, None, "3.14"), "baseline": (5.30, 54.25, 0.046, "2.92"),
                "single_step": (7.50, 57.53, 0.052, None), "two_step": (7.84, 29.83, 0.022, "≤ 3.53")}
TABLE2_ROWS = {"baseline": "PixelCNN++", "smoothed": "p(x~) samples", "single_step": "single-step",
               "two_step": "two-step"}
DESIGN_NAMES = ("stage2-mnist", "stage2-fashion")  # reproduce's comparisons of the two stage-2 designs


def _is_train_run(run_dir: Path) -> bool:
    return (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()


def _train_run(run_dir: Path) -> dict:
    """What an ``arsmooth train`` folder says about itself: config, summary and the test-bpd curve."""
    import yaml

    try:
        cfg = Settings.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), f"{run_dir}/config.yaml")
    except yaml.YAMLError as e:
        raise ArsmoothError(f"{run_dir}/config.yaml is not valid YAML: {str(e).splitlines()[0]}") from None
    curve, bs = [], cfg.train.batch_size
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if "test_bpd" in rec and rec["test_bpd"] is not None:
            curve.append((rec.get("images", rec["step"] * bs), rec.get("seconds"), rec["test_bpd"]))
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else None
    return {"dir": run_dir, "config": cfg, "curve": curve, "summary": summary}


def _train_sections(runs: list[dict], out: Path) -> list[str]:
    """A table of training runs and their learning curves (test bits/dim against images seen and time)."""
    from ..evaluation.figures import pyplot, save_figure

    lines = ["## Training runs", "",
             "Test bits/dim at each checkpoint (8-bit for baseline and stage 2; stage 1 scores noisy images x~, a "
             "density that is not comparable with the others).", "",
             "| run | kind | data | network | batch | steps | images seen | "
             "seconds | last test bits/dim | finished |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        c, m = r["config"], r["config"].model
        images, secs, bpd = r["curve"][-1] if r["curve"] else (0, None, None)
        steps = images // c.train.batch_size
        design = f", {m.stage2_conditioning}" if objective_of(c.kind).takes_context else ""
        lines.append(f"| `{r['dir']}` | {c.kind}{design} | {c.data.dataset} | {m.describe()} | "
                     f"{c.train.batch_size} | {steps} | {images:,} | "
                     f"{'' if secs is None else f'{secs:.0f}'} | {'' if bpd is None else f'{bpd:.4f}'} | "
                     f"{'yes' if r['summary'] else 'no (resumable)'} |")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        if not r["curve"]:
            continue
        images, secs, bpd = zip(*r["curve"])
        label = f"{r['dir'].name} ({r['config'].kind})"
        axes[0].plot(images, bpd, marker=".", label=label)
        if all(t is not None for t in secs):
            axes[1].plot([t / 3600 for t in secs], bpd, marker=".", label=label)
    axes[0].set_xlabel("training images seen")
    axes[1].set_xlabel("training hours (wall time of the run)")
    for ax in axes:
        ax.set_ylabel("test bits/dim")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    png = out.with_name(out.stem + "_curves.png")
    save_figure(fig, png)
    return lines + ["", f"![learning curves]({png.name})", ""]


def _designs_section(run_dir: Path, out_dir: Path, name: str, res: dict, rec: dict) -> list[str]:
    from .image_experiments import designs_table

    rel = Path(os.path.relpath(run_dir, out_dir))
    st = rec["settings"]
    return [f"## {name}: `{run_dir}`", "", f"Command: `{rec['command']}` (seed {rec['seed']}).", "",
            *designs_table(res, st, st["data"], st["sigma"]), "",
            *[f"![{f}]({(rel / f).as_posix()})" for f in ("denoising_designs.png", "two_step_stacked.png",
                                                           "two_step_spatial.png") if (run_dir / f).is_file()], ""]


def _load(run_dir: Path) -> tuple[str, dict, dict]:
    for name in NAMES + DESIGN_NAMES:
        res, rec = run_dir / f"{name}.json", run_dir / f"{name}.run.json"
        if res.is_file() and rec.is_file():
            try:
                return name, json.loads(res.read_text()), json.loads(rec.read_text())
            except json.JSONDecodeError as e:
                raise ArsmoothError(f"{res} is not valid JSON ({e.msg})") from None
    raise ArsmoothError(f"{run_dir} holds neither an image reproduction (NAME.json and NAME.run.json, NAME one of "
                        f"{', '.join(NAMES + DESIGN_NAMES)}) nor a training run (config.yaml and metrics.jsonl of "
                        "arsmooth train)")


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
                  f"for bits/dim). Feature extractor: our LeNet{_task(fx)}, {100 * fx.get('test_accuracy', float('nan')):.2f}% "
                  f"test accuracy, weights sha256 `{fx.get('weights_sha256', '?')[:16]}`. Not Inception: compare "
                  "rows, not papers.", "",
                  "| samples | FID (LeNet features) | KID (LeNet features) | Inception-style score (LeNet logits) | bits/dim |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {m[k]['fid']:.2f} | {m[k]['kid']:.3f} ± {m[k]['kid_std']:.3f} | {num_or_na(m[k]['is'])} | "
                  f"{bpd_cell.get(k, '')} |" for k, label in ROWS.items() if k in m]
        if name == "cifar10":
            lines += ["", *_table2(res)]
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


def _task(fx: dict) -> str:
    return " trained on four rotations (the data have no labels; no Inception-style score)" \
        if fx.get("task") == "rotation" else ""


def _table2(res: dict) -> list[str]:
    """The paper's Table 2 with our rows interleaved: Inception metrics where the run computed them."""
    inc, bpd = res.get("inception_metrics"), res["bpd"]
    ours_bpd = {"baseline": f"{bpd['baseline']:.2f}", "two_step": f"≤ {bpd['two_step_elbo']:.2f}"}
    lines = ["Table 2 layout (paper: Meng et al. 2021, 50,000 samples, Inception v3). Our rows show the standard "
             "Inception metrics when the run had `--inception-weights`, else n/a."
             + ("" if inc else " The LeNet-feature table above is ours only; it cannot be compared with the paper."),
             "", "| model | Inception score | FID | KID | bits/dim |", "|---|---|---|---|---|"]
    paper = PAPER_TABLE2["PixelCNN"]
    lines.append(f"| PixelCNN (paper) | {paper[0]:.2f} | {paper[1]:.2f} | - | {paper[3]} |")
    for k, label in TABLE2_ROWS.items():
        if k in PAPER_TABLE2:
            i, f, kd, b = PAPER_TABLE2[k]
            lines.append(f"| {label} (paper) | {i:.2f} | {f:.2f} | {num_or_na(kd, '.3f')} | {b or '-'} |")
        q = (inc or {}).get(k) or {}
        lines.append(f"| {label} (ours) | {num_or_na(q.get('is'))} | {num_or_na(q.get('fid'))} | "
                     f"{num_or_na(q.get('kid'), '.3f')} | "
                     f"{ours_bpd.get(k, '-')} |")
    return lines


def folders_only(paths: list[str | Path], out: str | Path) -> tuple[list[Path], list[Path]]:
    """The folders among ``paths`` (a shell glob such as ``runs/mine/*`` also matches files, the report itself
    among them) and the paths skipped; a path that does not exist is refused."""
    keep, skipped = [], []
    for p in map(Path, paths):
        if not p.exists():
            raise ArsmoothError(f"{p} does not exist; pass reproduce or train output folders")
        (keep if p.is_dir() else skipped).append(p)
    if not keep:
        raise ArsmoothError(f"none of the {len(skipped)} paths given is a folder; pass reproduce or train output folders")
    return keep, skipped


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write the markdown report for the folders ``run_dirs`` to ``out``; returns its path."""
    from ..runtime.fileio import atomic_write_text

    out = Path(out)
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise ArsmoothError(f"{d} is not a folder; pass reproduce or train output folders")
    def reproduced(d: Path) -> bool:
        return any((d / f"{n}.json").is_file() for n in NAMES + DESIGN_NAMES)

    trains = [_train_run(d) for d in dirs if _is_train_run(d) and not reproduced(d)]
    loaded = [(d, *_load(d)) for d in dirs if not _is_train_run(d) or reproduced(d)]
    lines = ["# arsmooth: image results", ""]
    if loaded:
        lines += ["Columns as in the paper's Table 2 (Meng et al. 2021): the baseline network, samples of the smoothed "
                  "model p(x~), single-step denoising of those samples (eq. 7) and two-step samples x ~ p(x | x~). "
                  "Lower FID / KID and bits/dim are better, higher Inception-style score is better.", ""]
    for d, name, res, rec in loaded:
        lines += (_designs_section if name in DESIGN_NAMES else _section)(d, out.parent, name, res, rec)
    out.parent.mkdir(parents=True, exist_ok=True)
    if trains:
        lines += _train_sections(trains, out)
    atomic_write_text(out, "\n".join(lines))
    return out
