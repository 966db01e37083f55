"""The commands that make and move run folders: train, presets, export, import.
Each command's parser, then its handler: a thin layer over library calls."""

from __future__ import annotations

import sys

from ..errors import ArsmoothError
from .options import nonneg_int, positive_float, positive_int, set_threads


def add_train(sub) -> None:
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
    t.set_defaults(func=run_train)


def run_train(a) -> int:
    from pathlib import Path

    from ..maths.objectives import objective_of
    from ..runtime.config import UNLIMITED_STEPS, load_config
    from ..training.trainer import train

    set_threads(a.threads)
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
            from ..runtime.checkpoint import load_checkpoint, settings_of

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


def add_presets(sub) -> None:
    pr = sub.add_parser("presets", help="list the training presets, or show one's settings",
                        description="Without NAME: the preset names. With NAME (a preset or a YAML file): its "
                        "settings merged over the defaults, as arsmooth train would use them (with --set "
                        "overrides applied). 'arsmooth presets --keys' lists every setting with its default.")
    pr.add_argument("name", nargs="?", metavar="NAME", help="a preset name or YAML file")
    pr.add_argument("--keys", action="store_true", help="list every setting with its default")
    pr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    pr.set_defaults(func=run_presets)


def run_presets(a) -> int:
    from ..runtime.config import load_config, preset_names, settings_help

    if a.keys:
        print(settings_help())
    elif a.name is None:
        print("\n".join(preset_names()))
        print("(arsmooth presets NAME shows one preset's merged settings; arsmooth presets --keys lists every key)")
    else:
        import yaml

        print(yaml.safe_dump(load_config(a.name, a.set).to_dict(), sort_keys=False), end="")
    return 0


def add_export(sub) -> None:
    ex = sub.add_parser("export", help="export a checkpoint's weights as safetensors (no pickle)")
    ex.add_argument("checkpoint", help="a checkpoint written by arsmooth train (e.g. RUN/last.pt)")
    ex.add_argument("output", help="the .safetensors file to write")
    ex.add_argument("--force", action="store_true", help="overwrite the output file")
    ex.set_defaults(func=run_export)


def run_export(a) -> int:

    from ..runtime import checkpoint as ckpt_io
    from ..runtime.fileio import prepare_out_file

    out = prepare_out_file(a.output, a.force)
    ckpt = ckpt_io.load_checkpoint(a.checkpoint)
    ckpt_io.export_safetensors(ckpt, out)
    print(f"wrote the {ckpt['kind']} weights (sigma {ckpt['sigma']}, step {ckpt['step']}) to {out}")
    return 0


def add_import(sub) -> None:
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
    im.set_defaults(func=run_import)


def run_import(a) -> int:
    from ..models.port import import_port

    r = import_port(a.checkpoint, a.out, a.size, a.dataset)
    print(f"imported {r['params']:,} parameters (nr_resnet {r['nr_resnet']}, nr_filters {r['nr_filters']}, "
          f"nr_logistic_mix {r['nr_logistic_mix']}, {r['channels']} channels) into {r['run']}/last.pt; "
          f"start from it with: arsmooth train PRESET --init-from {r['run']}/last.pt")
    return 0
