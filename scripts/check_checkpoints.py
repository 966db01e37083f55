"""Every committed run checkpoint and every shipped pretrained model still loads, samples and (runs) resumes.

For each ``last.pt`` that git tracks: load it (``weights_only``), rebuild its model, draw one image from each of
its networks (a stage 2 given a noisy image), and resume a copy of its run folder for one more step with
``--resume --set train.max_steps=STEP+1``. For each shipped model: load (SHA-256 checked) and draw one image.
Needs the datasets of the runs (``ARSMOOTH_DATA``); prints one line per checkpoint and a summary, exit 1 if
any fails.

    ARSMOOTH_DATA=../shared/data python scripts/check_checkpoints.py [--out results/restructuring/checkpoints.md]
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from arsmooth.maths.kernels import make_kernel
from arsmooth.models import pretrained
from arsmooth.models.build import model_from_checkpoint
from arsmooth.runtime import checkpoint as ckpt_io
from arsmooth.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def one_image_each(ckpt: dict) -> list[str]:
    """Draw one image from every network of the checkpoint; what was drawn, as words."""
    model = model_from_checkpoint(ckpt)
    kernel = make_kernel(ckpt_io.settings_of(ckpt).smoothing.kernel, ckpt["sigma"] or 0.5)
    g = torch.Generator().manual_seed(0)
    drawn = []
    for stage in getattr(model, "stages", (model,)):
        shape = (1, stage.channels, *stage.image_size)
        if stage.takes_context:
            x = stage.sample(context=kernel.sample(torch.zeros(shape), g), generator=g)
        else:
            x = stage.sample(1, generator=g)
        assert x.shape == shape and torch.isfinite(x).all(), "a non-finite or misshapen sample"
        drawn.append(stage.kind)
    return drawn


def resumed_one_step(run: Path, ckpt: dict) -> int:
    """Resume a copy of the run folder for one more step; the step it reached."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        copy.mkdir()
        for name in ("config.yaml", "metrics.jsonl", "last.pt"):
            if (run / name).is_file():
                shutil.copy2(run / name, copy / name)
        # one more step, whatever budget stopped it (the step budget, or the time budget of a timed run)
        cfg = ckpt_io.settings_of(ckpt).with_overrides([f"train.max_steps={ckpt['step'] + 1}", "train.max_minutes=null"])
        return train(cfg, copy, resume=True, progress=False)["steps"]


def main() -> int:
    files = subprocess.run(["git", "ls-files", "*last.pt"], cwd=ROOT, capture_output=True, text=True, check=True)
    rows, failed = [], 0
    for rel in files.stdout.split():
        t0 = time.perf_counter()
        try:
            ckpt = ckpt_io.load_checkpoint(ROOT / rel)
            drawn = one_image_each(ckpt)
            step = resumed_one_step((ROOT / rel).parent, ckpt)
            ok = step == ckpt["step"] + 1
            row = f"| `{rel}` | {ckpt['kind']} | {ckpt['step']:,} | {', '.join(drawn)} | {step:,} | {'yes' if ok else 'NO'} |"
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the exit status says so
            ok, row = False, f"| `{rel}` | | | | | NO: {type(e).__name__}: {str(e).splitlines()[0][:100]} |"
        failed += not ok
        rows.append(row)
        print(row, f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for name in sorted(pretrained.manifest()):
        for kind in pretrained.KINDS:
            try:
                drawn = one_image_each(pretrained.checkpoint(name, kind))
                row = f"| pretrained `{name}` | {kind} | | {', '.join(drawn)} | | yes |"
            except Exception as e:  # noqa: BLE001
                failed += 1
                row = f"| pretrained `{name}` | {kind} | | | | NO: {type(e).__name__}: {e} |"
            rows.append(row)
            print(row, flush=True)
    table = ["| checkpoint | kind | step | sampled one image from | resumed to step | ok |", "|---|---|---|---|---|---|", *rows]
    if "--out" in sys.argv:
        Path(sys.argv[sys.argv.index("--out") + 1]).write_text("\n".join(table) + "\n")
    print(f"{len(rows) - failed} of {len(rows)} checkpoints load, sample and resume")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
