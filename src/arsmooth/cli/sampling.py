"""The command that draws images: sample.
Each command's parser, then its handler: a thin layer over library calls."""

from __future__ import annotations

from ..errors import ArsmoothError
from .options import (
    IMAGE_METHODS,
    chosen_device,
    common_options,
    default_batch,
    device_option,
    positive_int,
    set_threads,
    use_pretrained,
)


def add_sample(sub) -> None:
    sm = sub.add_parser("sample", help="sample images from trained checkpoints",
                        description="Sample images; writes samples_METHOD.npz and a PNG grid. The .npz holds 'uint8' "
                        "(N, C, H, W) images, what the metrics score, and 'raw': the float32 values the method "
                        "produced in the model's [-1, 1] pixel units, unclamped (a two-step or baseline sample holds "
                        "8-bit bin centres; smoothed x~ and single-step outputs are continuous and can lie outside "
                        "[-1, 1], e.g. -2.5 to 1.9 for x~ at sigma 0.5).")
    sm.add_argument("--method", choices=IMAGE_METHODS, default="two-step",
                    help="baseline: the baseline's p(x) (--baseline); smoothed: x~ ~ p(x~) (--stage1); single-step: "
                    "x~ denoised by x~ + sigma^2 grad log p(x~) (--stage1; -detached: the official code's variant); "
                    "two-step: x ~ p(x | x~) (--stage1 and --stage2). Default two-step")
    sm.add_argument("--baseline", help="baseline checkpoint (method baseline)")
    sm.add_argument("--stage1", help="stage-1 checkpoint p(x~) (every method but baseline)")
    sm.add_argument("--stage2", help="stage-2 checkpoint p(x | x~) (method two-step)")
    sm.add_argument("--pretrained", metavar="NAME", help="use the models that ship with arsmooth (e.g. mnist; "
                    "'arsmooth pretrained' lists them) instead of --baseline / --stage1 / --stage2")
    sm.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    sm.add_argument("--batch-size", type=positive_int, default=None,
                    help="images sampled at once (default 64 on the CPU, 512 on a GPU; the images depend on it)")
    sm.add_argument("--out", required=True, help="output folder")
    sm.add_argument("--obvious", action="store_true",
                    help="use the obvious sampler (a full network pass per pixel; same images, for checking)")
    device_option(sm)
    common_options(sm)
    sm.set_defaults(func=run_sample)


def run_sample(a) -> int:
    from pathlib import Path

    import numpy as np

    from ..data.image_sets import to_uint8
    from ..evaluation import tasks
    from ..evaluation.figures import save_grid
    from ..runtime import distributed
    from ..runtime.fileio import atomic_write, prepare_out_dir

    set_threads(a.threads)
    device = chosen_device(a)
    use_pretrained(a)
    stem = f"samples_{a.method.replace('-', '_')}"
    out = prepare_out_dir(a.out, [f"{stem}.npz", f"{stem}.png"], a.force)
    base = pair = kernel = None
    if a.method == "baseline":
        if not a.baseline:
            raise ArsmoothError("--method baseline needs --baseline CKPT")
        base, _ = tasks.load_model(a.baseline, "baseline", device)
    elif a.method == "two-step":
        if not (a.stage1 and a.stage2):
            raise ArsmoothError("--method two-step needs --stage1 CKPT and --stage2 CKPT")
        pair, kernel = tasks.load_pair(a.stage1, a.stage2, device)
    else:  # smoothed and single-step use stage 1 alone
        if not a.stage1:
            raise ArsmoothError(f"--method {a.method} needs --stage1 CKPT")
        if a.stage2:
            raise ArsmoothError(f"--method {a.method} uses stage 1 only; drop --stage2 (it would be ignored)")
        pair, kernel = tasks.load_prior(a.stage1, device)
    # under torchrun the batches are dealt across the processes (gloo gathers the finished batches on the host)
    ctx = distributed.setup("cpu")
    try:
        x = tasks.sample_seeded(a.method, a.n, a.seed, baseline=base, pair=pair, kernel=kernel,
                            batch_size=default_batch(a, 64, 512, device), progress=not a.no_progress, fast=not a.obvious,
                            ctx=ctx)
    finally:
        distributed.shutdown(ctx)
    if x is None:  # not rank 0: rank 0 writes
        return 0
    arrays = {"uint8": to_uint8(x).numpy(), "raw": x.numpy()}
    atomic_write(Path(out) / f"{stem}.npz", lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")
    save_grid(x, Path(out) / f"{stem}.png")
    print(f"wrote {a.n} samples to {out}/{stem}.npz and {stem}.png")
    return 0
