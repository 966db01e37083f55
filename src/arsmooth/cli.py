"""The ``arsmooth`` command line: a thin layer over the library.

Bad input ends in one line on stderr (``arsmooth: error: ...``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__
from .errors import ArsmoothError

# the same tuple as arsmooth.imaging.IMAGE_METHODS (a test checks), kept here so --help needs no torch
IMAGE_METHODS = ("baseline", "smoothed", "single-step", "single-step-detached", "two-step")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
    return v


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _device_option(sp, what: str = "its networks") -> None:
    sp.add_argument("--device", default="auto", metavar="DEVICE",
                    help=f"where {what} run: auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; "
                    "under torchrun each process takes its own GPU (default auto)")


def _device(a):
    """The device ``--device`` names, checked before any output folder is made (a GPU asked for where none is
    visible: one line, exit 2)."""
    from .distributed import resolve_device

    return resolve_device(getattr(a, "device", "auto"))


def _batch(a, cpu: int, gpu: int, device) -> int:
    """``--batch-size``, else a default that fills the device: ``gpu`` images on a GPU, ``cpu`` on the CPU."""
    return a.batch_size or (gpu if device.type == "cuda" else cpu)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_demo(a) -> int:
    from .demo import run_demo

    _threads(a.threads)
    device = _device(a)
    path = run_demo(a.out, steps=a.steps, sigma=a.sigma, hidden=a.hidden, seed=a.seed, force=a.force,
                    progress=not a.no_progress, images=not a.no_images, device=device)
    print(f"report written to {path}")
    return 0


def cmd_reproduce(a) -> int:
    from .experiments import reproduce

    _threads(a.threads)
    device = _device(a)
    rec = reproduce(a.name, a.out, quick=a.quick, seed=a.seed, sigma=a.sigma, force=a.force,
                    progress=not a.no_progress, stage2=a.stage2, data_root=a.data_root,
                    inception_weights=a.inception_weights, classifier=a.classifier, device=str(device),
                    dry_run=a.dry_run)
    if rec is not None:  # None: a rank of a torchrun group other than the first
        print(f"wrote {a.out}/{a.name}.md (the summary), {a.name}.json and {a.name}.run.json in {rec['wall_time_s']} s")
    return 0


def cmd_train(a) -> int:
    from pathlib import Path

    from .config import UNLIMITED_STEPS, load_config
    from .objectives import objective_of
    from .train import train

    _threads(a.threads)
    sets = list(a.set)
    if a.max_steps is not None:
        sets.append(f"train.max_steps={a.max_steps}")
    if a.max_minutes is not None:
        sets.append(f"train.max_minutes={a.max_minutes}")
        if a.max_steps is None and not a.resume:  # a time budget alone: the preset's step budget does not cut it short
            sets.append(f"train.max_steps={UNLIMITED_STEPS}")
    if a.seed is not None:
        sets.append(f"train.seed={a.seed}")
    if a.data_root is not None:
        sets.append(f"data.data_root={a.data_root}")
    if a.resume and a.preset is None:
        cfg = None
        if sets:
            from .checkpoint import load_checkpoint, settings_of

            cfg = settings_of(load_checkpoint(Path(a.out) / "last.pt")).with_overrides(sets)
    else:
        if a.preset is None:
            raise ArsmoothError("give a preset (see arsmooth presets) or --resume an existing run")
        cfg = load_config(a.preset, sets)
    s = train(cfg, a.out, resume=a.resume, overwrite=a.overwrite, progress=not a.no_progress, init_from=a.init_from)
    if "train_seconds" in s:  # rank 0 (or the only process)
        procs = f" on {s['processes']} processes" if s["processes"] > 1 else ""
        bpd = "n/a" if s["test_bpd"] is None else f"{s['test_bpd']:.4f}"
        note = "" if objective_of(s["kind"]).eight_bit else " (of noisy images x~: a density, not 8-bit bits/dim)"
        print(f"{s['kind']}: {s['steps']} steps{procs} in {s['train_seconds']} s (stopped by {s['stopped']}); "
              f"test bits/dim {bpd}{note}; run folder {a.out}")
        if s["stopped"] in ("SIGINT", "SIGTERM"):
            print(f"checkpoint written; resume with: arsmooth train --out {a.out} --resume", file=sys.stderr)
            return 130 if s["stopped"] == "SIGINT" else 143
    return 0


def cmd_presets(a) -> int:
    from .config import load_config, preset_names, settings_help

    if a.keys:
        print(settings_help())
    elif a.name is None:
        print("\n".join(preset_names()))
        print("(arsmooth presets NAME shows one preset's merged settings; arsmooth presets --keys lists every key)")
    else:
        import yaml

        print(yaml.safe_dump(load_config(a.name, a.set).to_dict(), sort_keys=False), end="")
    return 0


def cmd_sample(a) -> int:
    from pathlib import Path

    import numpy as np

    from . import distributed as D
    from . import imaging as I
    from .data.images import to_uint8
    from .fileio import atomic_write, prepare_out_dir
    from .viz import save_grid

    _threads(a.threads)
    device = _device(a)
    _use_pretrained(a)
    stem = f"samples_{a.method.replace('-', '_')}"
    out = prepare_out_dir(a.out, [f"{stem}.npz", f"{stem}.png"], a.force)
    base = pair = kernel = None
    if a.method == "baseline":
        if not a.baseline:
            raise ArsmoothError("--method baseline needs --baseline CKPT")
        base, _ = I.load_model(a.baseline, "baseline", device)
    elif a.method == "two-step":
        if not (a.stage1 and a.stage2):
            raise ArsmoothError("--method two-step needs --stage1 CKPT and --stage2 CKPT")
        pair, kernel = I.load_pair(a.stage1, a.stage2, device)
    else:  # smoothed and single-step use stage 1 alone
        if not a.stage1:
            raise ArsmoothError(f"--method {a.method} needs --stage1 CKPT")
        if a.stage2:
            raise ArsmoothError(f"--method {a.method} uses stage 1 only; drop --stage2 (it would be ignored)")
        pair, kernel = I.load_prior(a.stage1, device)
    # under torchrun the batches are dealt across the processes (gloo gathers the finished batches on the host)
    ctx = D.setup("cpu")
    try:
        x = I.sample_seeded(a.method, a.n, a.seed, baseline=base, pair=pair, kernel=kernel,
                            batch_size=_batch(a, 64, 512, device), progress=not a.no_progress, fast=not a.obvious,
                            ctx=ctx)
    finally:
        D.shutdown(ctx)
    if x is None:  # not rank 0: rank 0 writes
        return 0
    arrays = {"uint8": to_uint8(x).numpy(), "raw": x.numpy()}
    atomic_write(Path(out) / f"{stem}.npz", lambda tmp: np.savez_compressed(tmp, **arrays), suffix=".npz")
    save_grid(x, Path(out) / f"{stem}.png")
    print(f"wrote {a.n} samples to {out}/{stem}.npz and {stem}.png")
    return 0


def _use_pretrained(a) -> None:
    """``--pretrained NAME``: the shipped checkpoints (SHA-256 checked) in place of --baseline / --stage1 / --stage2."""
    if not a.pretrained:
        return
    from . import pretrained as P

    given = [f"--{k}" for k in ("baseline", "stage1", "stage2") if getattr(a, k)]
    if given:
        raise ArsmoothError(f"--pretrained replaces {', '.join(given)}; give one or the other")
    need = {"baseline": ["baseline"], "two-step": ["stage1", "stage2"]}.get(getattr(a, "method", None), ["stage1"])
    if not hasattr(a, "method"):  # evaluate: every model that ships
        need = [k for k in P.KINDS if k in P.manifest().get(a.pretrained, {})] or ["baseline"]
    for kind in need:
        setattr(a, kind, P.checkpoint(a.pretrained, kind))


def _label(src) -> str:
    return f"pretrained {src['kind']}" if isinstance(src, dict) else str(src)


def cmd_evaluate(a) -> int:
    import json

    import torch

    from . import checkpoint as C
    from . import imaging as I
    from .data.images import load_configured

    _threads(a.threads)
    device = _device(a)
    _use_pretrained(a)
    base = pair = kernel = None
    ckpts = []
    if a.baseline:
        base, ck = I.load_model(a.baseline, "baseline", device)
        ckpts.append((_label(a.baseline), ck))
    if a.stage1 or a.stage2:
        if not (a.stage1 and a.stage2):
            raise ArsmoothError("the two-step bound needs both --stage1 and --stage2")
        pair, kernel = I.load_pair(a.stage1, a.stage2, device)
        for src in (a.stage1, a.stage2):  # both stages: a pair trained on two datasets is not scored on one silently
            ckpts.append((_label(src), src if isinstance(src, dict) else C.load_checkpoint(src)))
    if base is None and pair is None:
        raise ArsmoothError("give --baseline CKPT and/or --stage1 CKPT --stage2 CKPT")
    data = I.test_data_of(ckpts, a.dataset, a.data_root, a.set)
    x = load_configured(data, "test")[0][: a.n_images]
    I.check_image_shape(x, ckpts)
    res = I.likelihood(x, baseline=base, pair=pair, kernel=kernel, n_draws=a.draws, k_iw=a.iw,
                       generator=torch.Generator().manual_seed(a.seed), progress=not a.no_progress,
                       batch_size=_batch(a, 50, 500, device))
    res = {k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()}
    res["dataset"] = data.dataset
    print(json.dumps(res, indent=2))
    return 0


def cmd_sensitivity(a) -> int:
    import json

    import torch

    from . import imaging as I
    from .checkpoint import settings_of
    from .data.images import load_configured
    from .kernels import make_kernel

    _threads(a.threads)
    model, ck = I.load_model(a.stage2, "stage2", _device(a))
    data = I.test_data_of([(a.stage2, ck)], None, a.data_root)
    x = load_configured(data, "test")[0][: a.n_images]
    kernel = make_kernel(settings_of(ck).smoothing.kernel, ck["sigma"])
    xt = kernel.sample(x, torch.Generator().manual_seed(a.seed))
    res = I.stage2_sensitivity(model, x, xt, I.sensitivity_positions(*x.shape[-2:]))
    res = {"checkpoint": a.stage2, "design": model.conditioning, "sigma": ck["sigma"], **res}
    print(json.dumps(res, indent=2))
    return 0


def cmd_sigma(a) -> int:
    import json
    import statistics

    from .config import load_config
    from .data.images import load_configured
    from .kernels import sigma_heuristic

    _threads(a.threads)
    sets = [f"data.dataset={a.dataset}", *a.set] + ([f"data.data_root={a.data_root}"] if a.data_root else [])
    data = load_config("digits-baseline", sets).data  # the data settings, checked as train checks them
    x = load_configured(data, "train")[0]
    values = [sigma_heuristic(x, a.n, seed) for seed in range(a.subsets)]
    res = {"dataset": a.dataset, "sigma": round(statistics.mean(values), 4),
           "sd_over_subsets": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
           "subset_size": min(a.n, len(x)), "subsets": a.subsets, "images": len(x), "dims": x[0].numel(),
           "units": "[-1, 1] pixel units (smoothing.sigma)"}
    print(json.dumps(res, indent=2))
    return 0


def cmd_export(a) -> int:
    from pathlib import Path

    from . import checkpoint as C

    out = Path(a.output)
    if out.exists() and not a.force:
        raise ArsmoothError(f"{out} already exists; pass --force to overwrite it")
    ckpt = C.load_checkpoint(a.checkpoint)
    C.export_safetensors(ckpt, out)
    print(f"wrote the {ckpt['kind']} weights (sigma {ckpt['sigma']}, step {ckpt['step']}) to {out}")
    return 0


def cmd_import(a) -> int:
    from .models.port import import_port

    r = import_port(a.checkpoint, a.out, a.size, a.dataset)
    print(f"imported {r['params']:,} parameters (nr_resnet {r['nr_resnet']}, nr_filters {r['nr_filters']}, "
          f"nr_logistic_mix {r['nr_logistic_mix']}, {r['channels']} channels) into {r['run']}/last.pt; "
          f"start from it with: arsmooth train PRESET --init-from {r['run']}/last.pt")
    return 0


def cmd_bench(a) -> int:
    import json
    from pathlib import Path

    from . import bench as B
    from .fileio import atomic_write_text

    _threads(a.threads)
    if a.out and Path(a.out).exists() and not a.force:
        raise ArsmoothError(f"{a.out} already exists; pass --force to overwrite it")
    device = str(_device(a))
    lines = []
    for preset in a.preset or B.DEFAULT_PRESETS[a.what]:
        if a.what == "sample":
            r = B.bench_sample(preset, a.batch_size or 64, a.ref_pixels, device, a.seed, a.set)
        else:
            r = B.bench_train(preset, a.batch_size, a.steps, device, a.seed, a.set)
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


def cmd_fit_classifier(a) -> int:
    from pathlib import Path

    from . import classifier as K

    _threads(a.threads)
    device = _device(a)
    data = None
    if a.dataset.startswith("folder:"):  # own images: the rotation task, with the folder's image settings
        from .config import DataSettings, Settings

        data = Settings(data=DataSettings(dataset="digits")).with_overrides(
            [f"data.dataset={a.dataset}", *([f"data.data_root={a.data_root}"] if a.data_root else []), *a.set]).data
    elif a.set:
        raise ArsmoothError("--set applies to --dataset folder:PATH (the image settings of your own images)")
    name = Path(a.dataset.split(":", 1)[1]).name if data is not None else a.dataset
    out = Path(a.out or f"classifiers/{name}.pt")
    if out.exists() and not a.force:
        raise ArsmoothError(f"{out} already exists; pass --force to overwrite it")
    try:  # find out now, not after minutes of training, that the file cannot be written
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArsmoothError(f"cannot create {out.parent}: {e.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise ArsmoothError(f"{out.parent} is not writable")
    net, info = K.fit_dataset(a.dataset, a.data_root, a.epochs, a.seed, not a.no_progress, data=data, device=device)
    sha = K.save(net, info, out)
    task = " (telling the four rotations apart)" if info.get("task") == "rotation" else ""
    print(f"test accuracy{task} {100 * info['test_accuracy']:.2f}% after {info['epochs']} epochs "
          f"({info['train_seconds']} s); wrote {out} (weights sha256 {sha[:16]}...)")
    return 0


def cmd_metrics(a) -> int:
    import json
    import warnings
    import zipfile
    from pathlib import Path

    import numpy as np

    from . import classifier as K
    from . import metrics as MT
    from .data.images import to_uint8

    _threads(a.threads)
    _device(a)  # checked before any work
    sets = []
    for path in a.samples:  # every file is read before anything is computed
        if not Path(path).is_file():
            raise ArsmoothError(f"{path} does not exist (give .npz files written by arsmooth sample or reproduce)")
        if not zipfile.is_zipfile(path):
            raise ArsmoothError(f"{path} is not an .npz file (arsmooth sample and reproduce write them)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k == "uint8" or k.endswith(".uint8")}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ArsmoothError(f"{path} is not a readable .npz of samples ({' '.join(str(e).split())[:120]})") from None
        if not arrays:
            raise ArsmoothError(f"{path} holds no uint8 images (arsmooth sample and reproduce write them as 'uint8')")
        sets += [(path, key, u8) for key, u8 in arrays.items()]
    net, info = K.load(a.classifier)
    net = net.to(_device(a))
    real = to_uint8(_metrics_test_images(a, sets[0][2].shape))
    for path, key, u8 in sets:
        n = min(a.n or len(u8), len(u8), len(real))
        with warnings.catch_warnings():  # torchmetrics' notes on buffering features: not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            # a rotation LeNet's logits say nothing about classes: no Inception-style score from it
            res = MT.sample_metrics(u8[:n], real[:n], net, a.seed, score=info.get("task") != "rotation")
        res = {"samples": f"{path}" + ("" if key == "uint8" else f":{key[:-len('.uint8')]}"), **res,
               "feature_extractor": f"LeNet {Path(a.classifier).name} ({100 * info['test_accuracy']:.2f}% test "
               f"accuracy on {info.get('dataset', '?')}, sha256 {info['weights_sha256'][:12]})"}
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    return 0


def _metrics_test_images(a, shape: tuple):
    """The test images ``metrics`` compares with: ``--dataset``; a ``folder:`` at the samples' size and channels
    (``shape``: ``(N, C, H, W)``), unless ``--set data.*`` says otherwise."""
    from .config import DataSettings, Settings
    from .data.images import load_configured

    data = DataSettings(dataset=a.dataset, data_root=a.data_root,
                        **({"size": int(shape[2]), "channels": int(shape[1])} if a.dataset.startswith("folder:") else {}))
    if a.set:
        bad = [t for t in a.set if not t.strip().startswith("data.")]
        if bad:
            raise ArsmoothError(f"--set {bad[0]}: only data.* settings apply here")
        data = Settings(data=data).with_overrides(a.set).data
    return load_configured(data, "test")[0]


def cmd_report(a) -> int:
    from pathlib import Path

    from .report import folders_only, write_report

    if Path(a.out).exists() and not a.force:
        raise ArsmoothError(f"{a.out} already exists; pass --force to overwrite it")
    dirs, skipped = folders_only(a.runs, a.out)
    if skipped:
        print(f"skipped {len(skipped)} path(s) that are not folders: {', '.join(map(str, skipped))}", file=sys.stderr)
    print(f"wrote {write_report(dirs, a.out)}")
    return 0


def cmd_pretrained(a) -> int:
    from . import pretrained as P

    m = P.manifest()
    if not m:
        print("no pretrained models ship with this installation")
        return 0
    for name in sorted(m):
        for kind in P.KINDS:
            e = m[name].get(kind)
            if e:
                size = "/".join(str(e["model"][k]) for k in ("nr_resnet", "nr_filters", "nr_logistic_mix"))
                imgs = f"{e['images_seen']:,}" if e.get("images_seen") else "?"
                print(f"{name:8s} {kind:8s} resnets/filters/logistics {size:8s} sigma {e['sigma']}  "
                      f"{imgs} training images  sha256 {e['sha256'][:12]}...")
    print("(arsmooth sample --pretrained NAME --method two-step --out DIR; arsmooth evaluate --pretrained NAME)")
    return 0


def cmd_list(a) -> int:
    from .experiments import EXPERIMENTS

    for e in EXPERIMENTS.values():
        print(f"{e.name:10s} {e.what}")
    return 0


def _common(sp, seed_help: str = "random seed") -> None:
    """The options every long-running command shares."""
    sp.add_argument("--seed", type=nonneg_int, default=0, help=f"{seed_help} (default 0)")
    sp.add_argument("--force", action="store_true", help="overwrite existing output files")
    sp.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="baseline vs smoothed MADE on the olympics data, then pretrained MNIST "
                       "digits (about a minute)",
                       description="Train a baseline MADE and a smoothed MADE side by side on the 2-d "
                       "olympics data and write report.md with the test NLL table and sample plots. Runs on "
                       "one thread unless --threads says otherwise: these small models gain nothing from a "
                       "second one, and two threads on a busy 2-core machine took 176 s instead of 42 s. Then it adds the "
                       "paper's Fig. 6 columns sampled from the pretrained MNIST models (5 to 8 s; --no-images skips it).")
    d.add_argument("--out", default="arsmooth-demo", help="output folder (default ./arsmooth-demo)")
    d.add_argument("--steps", type=positive_int, default=16000, help="training steps (default 16000)")
    d.add_argument("--sigma", type=positive_float, default=0.3, help="noise std of q(x~|x) (default 0.3)")
    d.add_argument("--hidden", type=positive_int, default=128, help="hidden units per layer (default 128)")
    d.add_argument("--no-images", action="store_true",
                   help="skip the image part (MNIST digits sampled from the pretrained models that ship)")
    _common(d)
    _device_option(d, "the pretrained image models")
    d.set_defaults(func=cmd_demo, threads=1)


def _add_reproduce(sub) -> None:
    from .experiments import EXPERIMENTS

    r = sub.add_parser("reproduce", help="run one of the paper's experiments",
                       description="Run an experiment of the paper and write NAME.json, NAME.md, "
                       "NAME.run.json and PNG figures to --out. Experiments: "
                       + "; ".join(f"{e.name}: {e.what}" for e in EXPERIMENTS.values()))
    r.add_argument("name", metavar="NAME", help=f"one of {', '.join(EXPERIMENTS)}")
    r.add_argument("--out", required=True, help="output folder (created if missing)")
    r.add_argument("--quick", action="store_true", help="tiny budgets: the same code path in seconds")
    r.add_argument("--sigma", type=positive_float, default=None,
                   help="noise std (fig3, denoise1d, table1, realnvp; fig4 adds it to its sweep)")
    r.add_argument("--stage2", choices=("stacked", "spatial"), default=None,
                   help="stage-2 design of mnist / fashion / cifar10 / celeba: the paper's stacked [x~ ; x] image or "
                   "x~ through a spatial encoder (default: see README, 'Two designs of stage 2')")
    r.add_argument("--data-root", default=None,
                   help="data folder of the image experiments (default $ARSMOOTH_DATA, else ./data); CelebA is read "
                   "from DATA_ROOT/celeba/img_align_celeba")
    r.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="cifar10 / celeba: also compute the standard Inception FID / KID / IS with torch-fidelity "
                   "(pip install 'arsmooth[inception]') from this weights file "
                   "(weights-inception-2015-12-05-6726825d.pth); nothing is downloaded")
    r.add_argument("--classifier", default=None, metavar="FILE",
                   help="image experiments: the LeNet of the sample metrics, fit on the experiment's dataset (e.g. "
                   "results/classifiers/mnist.pt, or arsmooth fit-classifier); default OUT/classifier.pt, fit when missing")
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan (models, budgets, and for cifar10 / celeba the cost estimate on --device) and exit")
    _device_option(r, "sampling and scoring (training follows each preset's device setting)")
    _common(r)
    r.set_defaults(func=cmd_reproduce)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a baseline, stage-1 or stage-2 image model",
                       description="Train an image model (PixelCNN++, or the causal pixel transformer with "
                       "model.network=transformer) from a preset (arsmooth presets) with optional key=value "
                       "overrides. The run folder gets config.yaml, metrics.jsonl and an atomically written last.pt; "
                       "--resume continues a run exactly where it stopped (it may change the budgets and train.lr, "
                       "logged in metrics.jsonl). One process writes a run at a time: a second is refused.")
    t.add_argument("preset", nargs="?", help="preset name or YAML file (omit with --resume)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.batch_size=16 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--init-from", metavar="CKPT", help="start from the network weights of this checkpoint (e.g. stage 1 "
                   "from a baseline trained on clean data); the optimizer starts fresh, the run records where it began")
    t.add_argument("--max-steps", type=nonneg_int, help="training budget in steps (default: the preset's)")
    t.add_argument("--max-minutes", type=positive_float,
                   help="training budget in minutes; given alone, it replaces the preset's step budget")
    t.add_argument("--seed", type=nonneg_int, default=None, help="random seed (default: the preset's)")
    t.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    t.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def _add_presets(sub) -> None:
    pr = sub.add_parser("presets", help="list the training presets, or show one's settings",
                        description="Without NAME: the preset names. With NAME (a preset or a YAML file): its "
                        "settings merged over the defaults, as arsmooth train would use them (with --set "
                        "overrides applied). 'arsmooth presets --keys' lists every setting with its default.")
    pr.add_argument("name", nargs="?", metavar="NAME", help="a preset name or YAML file")
    pr.add_argument("--keys", action="store_true", help="list every setting with its default")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    pr.set_defaults(func=cmd_presets)


def _add_sample(sub) -> None:
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
    _device_option(sm)
    _common(sm)
    sm.set_defaults(func=cmd_sample)


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="test bits/dim: baseline (exact), two-step ELBO and IW bound",
                        description="Score test images in bits per dimension of 8-bit images (lower is better): "
                        "the baseline's exact -log p(x), and for a stage-1 + stage-2 pair the two-step -ELBO "
                        "and the tighter importance-weighted bound, both upper bounds on -log p(x). (The "
                        "'test bits/dim' that training logs for stage 1 alone is a density of noisy images x~, "
                        "not comparable with these.) The test set is the checkpoint's own dataset and image "
                        "size unless --dataset says otherwise; prints one JSON object.")
    ev.add_argument("--baseline", help="baseline checkpoint")
    ev.add_argument("--stage1", help="stage-1 checkpoint (with --stage2)")
    ev.add_argument("--stage2", help="stage-2 checkpoint (with --stage1)")
    ev.add_argument("--pretrained", metavar="NAME", help="score the models that ship with arsmooth (e.g. mnist)")
    ev.add_argument("--dataset", default=None, help="dataset name, or folder:PATH to score another folder with the "
                    "checkpoint's image size and channels (default: the one the checkpoints were trained on)")
    ev.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="data settings of the test set, e.g. --set data.center_crop=140 (repeatable)")
    ev.add_argument("--data-root", help="data folder (default: the checkpoint's, else $ARSMOOTH_DATA, else ./data)")
    ev.add_argument("--n-images", type=positive_int, default=1000, help="test images (default 1000)")
    ev.add_argument("--draws", type=positive_int, default=1, help="noise draws for the ELBO (default 1)")
    ev.add_argument("--iw", type=nonneg_int, default=10, help="K of the importance-weighted bound (default 10; 0: skip)")
    ev.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noise draws (default 0)")
    ev.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--batch-size", type=positive_int, default=None,
                    help="test images scored at once (default 50 on the CPU, 500 on a GPU)")
    _device_option(ev)
    ev.set_defaults(func=cmd_evaluate)


def _add_sensitivity(sub) -> None:
    se = sub.add_parser("sensitivity", help="how much a stage-2 model listens to x~ at each pixel",
                        description="For test images x and x~ = x + noise, the gradient norm of stage 2's output "
                        "parameters at four pixels with respect to the causal clean neighbours of each pixel, "
                        "against the gradient norm with respect to x~ at the pixel itself, and their ratio "
                        "(neighbours / x~). A p(x | x~) that ignores x~ has a huge ratio. Prints one JSON object.")
    se.add_argument("stage2", metavar="CKPT", help="a stage-2 checkpoint")
    se.add_argument("--n-images", type=positive_int, default=8, help="test images (default 8)")
    se.add_argument("--data-root", help="data folder (default: the checkpoint's, else $ARSMOOTH_DATA, else ./data)")
    se.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noise (default 0)")
    se.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    _device_option(se)
    se.set_defaults(func=cmd_sensitivity)


def _add_sigma(sub) -> None:
    sg = sub.add_parser("sigma", help="the noise level the median-distance heuristic suggests for a dataset",
                        description="Saremi and Hyvarinen's heuristic, the one behind the paper's choices (App. C.1): "
                        "median pairwise distance of training images / (2 sqrt(D)), in the [-1, 1] units of "
                        "smoothing.sigma, averaged over random subsets (with its spread). The paper uses 0.5 "
                        "for MNIST and 0.3 for CIFAR-10 and CelebA 'mainly based on' it.")
    sg.add_argument("--dataset", required=True, help="any dataset the loaders take (mnist, fashion, digits, folder:PATH, ...)")
    sg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="data settings, e.g. --set data.size=32 --set data.channels=3 for folder:PATH")
    sg.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    sg.add_argument("-n", type=positive_int, default=2000, help="images per random subset (default 2000)")
    sg.add_argument("--subsets", type=positive_int, default=5, help="random subsets (default 5)")
    sg.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    sg.set_defaults(func=cmd_sigma)


def _add_export(sub) -> None:
    ex = sub.add_parser("export", help="export a checkpoint's weights as safetensors (no pickle)")
    ex.add_argument("checkpoint", help="a checkpoint written by arsmooth train (e.g. RUN/last.pt)")
    ex.add_argument("output", help="the .safetensors file to write")
    ex.add_argument("--force", action="store_true", help="overwrite the output file")
    ex.set_defaults(func=cmd_export)


def _add_import(sub) -> None:
    im = sub.add_parser("import", help="a PixelCNN++ trained by the public PyTorch port as a baseline run",
                        description="Read a state dict saved by the public PyTorch PixelCNN++ port "
                        "(pclucas14/pixel-cnn-pp: torch.save(model.state_dict()), weight-normed layers as weight_g / "
                        "weight_v, optionally behind DataParallel's module.) with weights_only=True and write it as "
                        "a baseline run folder of ours (config.yaml + last.pt) whose network computes the same "
                        "mixture parameters. nr_resnet, nr_filters, nr_logistic_mix and the channels come from the "
                        "tensors' shapes; the port's Dropout2d is recorded as model.dropout_mode=channel. Then: "
                        "arsmooth train cifar10-stage1 --init-from RUN/last.pt (the KTH reproduction's route). "
                        "Anything else is refused with one line and nothing is written.")
    im.add_argument("checkpoint", metavar="PORT_CHECKPOINT", help="the .pth file the port saved")
    im.add_argument("--out", required=True, help="the run folder to write")
    im.add_argument("--size", type=positive_int, default=32, help="image side the model was trained on (default 32)")
    im.add_argument("--dataset", default=None, help="its dataset (default cifar10 for RGB, mnist for grey)")
    im.set_defaults(func=cmd_import)


def _add_bench(sub) -> None:
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
    _device_option(be, "the benchmarks")
    be.add_argument("--out", help="also write the JSON lines to this file")
    be.add_argument("--seed", type=nonneg_int, default=0)
    be.add_argument("--force", action="store_true", help="overwrite --out")
    be.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    be.set_defaults(func=cmd_bench)


def _add_fit_classifier(sub) -> None:
    fc = sub.add_parser("fit-classifier", help="train the LeNet feature extractor of the sample metrics",
                        description="Train the small LeNet classifier whose features and logits our FID, KID and "
                        "Inception-style score use (deterministic, a few CPU minutes for MNIST). On CIFAR-10 the "
                        "same LeNet on 3x32x32 images: its numbers are 'FID (LeNet features)', not Inception FID.")
    fc.add_argument("--dataset", required=True, metavar="NAME",
                    help="mnist, fashion, cifar10, celeba or folder:PATH (your own images, with --set data.size=S "
                    "--set data.channels=C as you trained on them). celeba and folders have no labels: the LeNet "
                    "learns to tell four rotations apart instead")
    fc.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="folder:PATH only: its image settings (data.size, data.channels, data.center_crop, "
                    "data.test_fraction)")
    fc.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    fc.add_argument("--epochs", type=positive_int, default=None,
                    help="epochs (default 3 for mnist, 10 for fashion, 15 for cifar10, 5 for celeba, 20 for a folder)")
    fc.add_argument("--out", help="where to write it (default classifiers/DATASET.pt; a folder: classifiers/FOLDERNAME.pt)")
    _device_option(fc, "the classifier trains")
    _common(fc)
    fc.set_defaults(func=cmd_fit_classifier)


def _add_metrics(sub) -> None:
    mt = sub.add_parser("metrics", help="FID / KID / Inception-style score of sample files, with our LeNet",
                        description="Score the uint8 images of .npz files written by 'arsmooth sample' (or every "
                        "column of a reproduce samples.npz) against as many test images of --dataset: FID and KID "
                        "on the LeNet's features, the Inception-style score on its logits (fit one with "
                        "'arsmooth fit-classifier'). One JSON line per sample set; the numbers compare sets scored "
                        "with the same classifier, not papers.")
    mt.add_argument("samples", nargs="+", help=".npz files of samples")
    mt.add_argument("--dataset", required=True, help="the test set to compare with (e.g. mnist, fashion, or "
                    "folder:PATH, read at the samples' size and channels)")
    mt.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                    help="data settings of the test set, e.g. --set data.center_crop=140 (repeatable)")
    mt.add_argument("--classifier", required=True, help="a classifier written by arsmooth fit-classifier")
    mt.add_argument("-n", type=positive_int, default=None, help="images per side (default: all samples)")
    mt.add_argument("--data-root", help="data folder (default $ARSMOOTH_DATA, else ./data)")
    mt.add_argument("--seed", type=nonneg_int, default=0, help="seed of the KID subsets (default 0)")
    mt.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    _device_option(mt, "the classifier and the metrics")
    mt.set_defaults(func=cmd_metrics)


def _add_report(sub) -> None:
    rp = sub.add_parser("report", help="one markdown report over image reproductions (paper Table 2 layout)",
                        description="Put the baseline, p(x~), single-step and two-step of one or more "
                        "'arsmooth reproduce mnist|fashion' folders side by side: metrics, bits/dim, grids, "
                        "neighbours, probes, budgets. 'arsmooth train' run folders (your own data too) get a "
                        "table and a plot of their learning curves (REPORT_curves.png beside the report).")
    rp.add_argument("runs", nargs="+", help="output folders of arsmooth reproduce mnist / fashion, or arsmooth train run folders")
    rp.add_argument("--out", default="report.md", help="the markdown file to write (default report.md)")
    rp.add_argument("--force", action="store_true", help="overwrite --out")
    rp.set_defaults(func=cmd_report)


def _add_pretrained(sub) -> None:
    pt = sub.add_parser("pretrained", help="list the pretrained models that ship with arsmooth",
                        description="The CPU-scale models inside the package (safetensors, SHA-256 checked on "
                        "every load): dataset, kind, size, sigma and training images. Use them with "
                        "'arsmooth sample --pretrained NAME' and 'arsmooth evaluate --pretrained NAME'.")
    pt.set_defaults(func=cmd_pretrained)


def _add_list(sub) -> None:
    ls = sub.add_parser("list", help="list the experiments")
    ls.set_defaults(func=cmd_list)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="arsmooth", description="Distribution smoothing for autoregressive models "
                "(Meng et al., ICLR 2021): train on noisy data, then denoise.")
    p.add_argument("--version", action="version", version=f"arsmooth {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_demo, _add_reproduce, _add_train, _add_presets, _add_sample, _add_evaluate, _add_sensitivity,
                _add_sigma, _add_export, _add_import, _add_bench, _add_fit_classifier, _add_metrics, _add_report,
                _add_pretrained, _add_list):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .fileio import remove_unused_folders

    try:
        return args.func(args)
    except ArsmoothError as e:
        remove_unused_folders()  # a refused command leaves no empty output folder behind
        print(f"arsmooth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        remove_unused_folders()
        print("arsmooth: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions changed mid-run, ...
        remove_unused_folders()
        print(f"arsmooth: error: {e.strerror or e} ({getattr(e, 'filename', '') or ''})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
