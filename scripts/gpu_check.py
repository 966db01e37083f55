"""The CUDA path, proved and measured in one command (under 8 minutes on one H100 / H200, start-up included):

    PYTHONPATH=src python3 scripts/gpu_check.py --out results/bench/gpu.jsonl --table results/bench/gpu_costs.md

Runs from the source tree on a bare GPU machine (it needs torch, numpy, pillow, tqdm, pyyaml, matplotlib,
torchmetrics and safetensors, which such images hold; nothing is installed or downloaded). In order:

1. exactness: the fast sampler against the obvious one on CUDA, CIFAR-10 stage 1 and the spatial stage 2
   (batch 8, the first 64 pixels), with the number of sampled sub-pixels that differ (if any: a value that
   falls within float rounding of a bin edge, from a different summation order in cuDNN's kernels);
2. a training step of each CIFAR-10 preset in fp32, bf16 autocast, channels_last and both: images/s and the
   first step's loss and gradients against fp32 from the same weights and data;
3. sampling throughput of the fast sampler at the paper's size (32x32 RGB, CIFAR-10 stage 1) for batch 64
   and a large batch, with the obvious sampler timed on a prefix for the speed-up;
4. ``reproduce celeba --quick`` end to end on CUDA, on a fake CelebA folder this script writes;
5. the cost table: each CIFAR-10 preset's training and sampling speed on this device, and the hours of its
   step budget, of an epoch, and of the 50,000-sample Fig. 6 columns (``arsmooth.evaluation.bench.COST_FORMULA``).

One JSON line per measurement in ``--out``; the cost table as markdown in ``--table``. Without a GPU it
writes the one line saying so. ``--cpu-dry-run`` runs the same code on CPU with the tiny digits presets and
a small fake folder (the tests run it).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from arsmooth.evaluation.bench import bench_sample, cost_lines, measure_costs, precision_check
from arsmooth.runtime.config import load_config
from arsmooth.runtime.fileio import atomic_write_text


def fake_celeba(root: Path, n: int) -> Path:
    """``n`` random 178x218 RGB images where the CelebA loader looks (``ROOT/celeba/img_align_celeba``)."""
    from PIL import Image

    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 255, (218, 178, 3)).astype(np.uint8), "RGB").save(folder / f"{i:06d}.png")
    return root


def reproduce_celeba(device: str, n_images: int) -> dict:
    from arsmooth.experiments import reproduce

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rec = reproduce("celeba", Path(tmp) / "out", quick=True, data_root=str(fake_celeba(Path(tmp), n_images)),
                        device=device, progress=False)
        return {"bench": "reproduce", "name": "celeba --quick (fake folder)", "device": device,
                "seconds": round(time.perf_counter() - t0, 1), "bpd": rec["result"]["bpd"],
                "ok": bool(np.isfinite(rec["result"]["bpd"]["baseline"]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/gpu.jsonl")
    p.add_argument("--table", default=None, help="the cost table as markdown (default: beside --out, gpu_costs.md)")
    p.add_argument("--cpu-dry-run", action="store_true", help="the same code on CPU with tiny presets")
    a = p.parse_args()
    table = Path(a.table) if a.table else Path(a.out).with_name("gpu_costs.md")
    for f in (Path(a.out), table):
        f.parent.mkdir(parents=True, exist_ok=True)
    lines: list[dict] = []

    def emit(row: dict) -> None:
        lines.append(row)
        print(json.dumps(row), flush=True)

    if not torch.cuda.is_available() and not a.cpu_dry_run:
        emit({"gpu": None, "note": "no CUDA GPU was available to torch on this machine; nothing was measured",
              "torch": torch.__version__})
        atomic_write_text(a.out, "\n".join(json.dumps(x) for x in lines) + "\n")
        return 0
    dry = a.cpu_dry_run
    dev = "cpu" if dry else "cuda"
    prefix = "digits" if dry else "cifar10"
    presets = {"baseline": f"{prefix}-baseline", "stage1": f"{prefix}-stage1", "stage2": f"{prefix}-stage2",
               "stage2-spatial": f"{prefix}-stage2-spatial"}
    t_start = time.perf_counter()
    for kind in ("stage1", "stage2-spatial"):  # 1. exactness
        emit(bench_sample(presets[kind], batch=8, ref_pixels=0 if dry else 64, device=dev))
    options = ((True, False),) if dry else ((True, False), (False, True), (True, True))
    for kind in ("baseline", "stage1", "stage2-spatial"):  # 2. precision and layout
        emit(precision_check(presets[kind], device=dev, steps=1 if dry else 5, options=options,
                             batch=4 if dry else None, cuda_semantics=not dry))
    for batch in ((4,) if dry else (64, 512)):  # 3. throughput at the paper's size
        emit(bench_sample(presets["stage1"], batch=batch, ref_pixels=8 if dry else 32, device=dev))
    emit(reproduce_celeba(dev, 64 if dry else 300))  # 4. end to end
    shape = (1, 8, 8) if dry else (3, 32, 32)  # 5. the cost table
    costs = measure_costs({k: load_config(v) for k, v in presets.items()}, shape, dev, train_batch=4 if dry else None,
                          train_steps=1 if dry else 3, sample_batch=4 if dry else 256, sample_rows=1 if dry else 2)
    emit({"bench": "costs", **costs, "device_name": torch.cuda.get_device_name() if not dry else "cpu",
          "torch": torch.__version__})
    md = ["# Cost of the CIFAR-10 presets, measured" + (" (CPU dry run, digits presets)" if dry else ""), "",
          f"Device: {torch.cuda.get_device_name() if not dry else 'cpu'}; torch {torch.__version__}; "
          f"`scripts/gpu_check.py` ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - t_start:.0f} s in all).", "",
          *cost_lines(costs)]
    atomic_write_text(a.out, "\n".join(json.dumps(x) for x in lines) + "\n")
    atomic_write_text(table, "\n".join(md) + "\n")
    print("\n".join(md), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
