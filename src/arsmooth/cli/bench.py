"""The benchmark command: bench.
Each command's parser, then its handler: a thin layer over library calls."""

from __future__ import annotations

import sys

from .options import chosen_device, device_option, nonneg_int, positive_int, set_threads


def add_bench(sub) -> None:
    be = sub.add_parser("bench", help="benchmark the fast sampler and the fused training step against references",
                        description="Time our fast path and its reference side by side in one process and print "
                        "one JSON line per preset: both throughputs (images/s), their ratio, batch, config, threads, "
                        "device. Networks have random weights; speed does not depend on them. train also reports the "
                        "GFLOP of a step, the GFLOP/s of both paths beside a matrix product timed in the same run, "
                        "the CPUs available and the threads each path used; compare implementations at equal "
                        "model.dropout_mode (--set model.dropout_mode=channel).")
    be.add_argument("what", choices=("sample", "train"),
                    help="sample: fast vs obvious sampler; train: fused vs straightforward training step")
    be.add_argument("--preset", action="append",
                    help="preset(s) to time (repeatable; default: the mnist-cpu ones, and for train also mnist-stage1, "
                    "the paper's 5/40/10)")
    be.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset setting")
    be.add_argument("--batch-size", type=positive_int, default=None,
                    help="images per batch (default: 64 for sample, the preset's batch size for train)")
    be.add_argument("--steps", type=positive_int, default=5, help="train: timed steps of each network (default 5)")
    be.add_argument("--ref-pixels", type=nonneg_int, default=28,
                    help="pixels the obvious sampler is timed on, scaled to the image (0: all; default 28)")
    device_option(be, "the benchmarks")
    be.add_argument("--out", help="also write the JSON lines to this file")
    be.add_argument("--seed", type=nonneg_int, default=0)
    be.add_argument("--force", action="store_true", help="overwrite --out")
    be.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    be.set_defaults(func=run_bench)


def run_bench(a) -> int:
    import json

    from ..evaluation import bench as benchmarks
    from ..runtime.fileio import atomic_write_text, prepare_out_file

    set_threads(a.threads)
    if a.out:
        prepare_out_file(a.out, a.force)
    device = str(chosen_device(a))
    lines = []
    for preset in a.preset or benchmarks.DEFAULT_PRESETS[a.what]:
        if a.what == "sample":
            r = benchmarks.bench_sample(preset, a.batch_size or 64, a.ref_pixels, device, a.seed, a.set)
        else:
            r = benchmarks.bench_train(preset, a.batch_size, a.steps, device, a.seed, a.set)
        lines.append(json.dumps(r))
        print(lines[-1], flush=True)
        print(_cost_line(r), file=sys.stderr, flush=True)
    if a.out:
        atomic_write_text(a.out, "\n".join(lines) + "\n")
    return 0


def _cost_line(r: dict) -> str:
    """A benchmark row's cost estimate as a sentence (the JSON line holds it too, with its formula)."""
    e = r["estimate"]
    hours = lambda h: "n/a" if h is None else (f"{h:,.1f} hours" if h >= 1 else f"{60 * h:.1f} minutes")  # noqa: E731
    if r["bench"] == "sample":
        return (f"{r['preset']} on {r['device']}: sampling {r['fast_images_per_s']:.2f} images/s at batch {r['batch']} "
                f"-> {hours(e['hours_for_50000_samples'])} for 50,000 samples (a Fig. 6 column of this model)")
    return (f"{r['preset']} on {r['device']}: training {r['fast_images_per_s']:.1f} images/s at batch {r['batch']} -> "
            f"{hours(e['train_hours_for_step_budget'])} for its step budget of {e['step_budget_images']:,} images, "
            f"{hours(e['train_hours_per_epoch'])} per epoch (hours for = images / images per second)")
