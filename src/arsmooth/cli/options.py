"""What the commands share: argument types, the options every long command takes, the device and thread
settings, and the shipped checkpoints behind --pretrained."""

from __future__ import annotations

import argparse
import math

from ..errors import ArsmoothError

# the same tuple as arsmooth.evaluation.tasks.IMAGE_METHODS (a test checks), kept here so --help needs no torch
IMAGE_METHODS = ("baseline", "smoothed", "single-step", "single-step-detached", "two-step")


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


def device_option(sp, what: str = "its networks") -> None:
    sp.add_argument("--device", default="auto", metavar="DEVICE",
                    help=f"where {what} run: auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; "
                    "under torchrun each process takes its own GPU (default auto)")


def chosen_device(a):
    """The device ``--device`` names, checked before any output folder is made (a GPU asked for where none is
    visible: one line, exit 2)."""
    from ..runtime.distributed import resolve_device

    return resolve_device(getattr(a, "device", "auto"))


def default_batch(a, cpu: int, gpu: int, device) -> int:
    """``--batch-size``, else a default that fills the device: ``gpu`` images on a GPU, ``cpu`` on the CPU."""
    return a.batch_size or (gpu if device.type == "cuda" else cpu)


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def common_options(sp, seed_help: str = "random seed") -> None:
    """The options every long-running command shares."""
    sp.add_argument("--seed", type=nonneg_int, default=0, help=f"{seed_help} (default 0)")
    sp.add_argument("--force", action="store_true", help="overwrite existing output files")
    sp.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")


def use_pretrained(a) -> None:
    """``--pretrained NAME``: the shipped checkpoints (SHA-256 checked) in place of --baseline / --stage1 / --stage2."""
    if not a.pretrained:
        return
    from ..models import pretrained as shipped

    given = [f"--{k}" for k in ("baseline", "stage1", "stage2") if getattr(a, k)]
    if given:
        raise ArsmoothError(f"--pretrained replaces {', '.join(given)}; give one or the other")
    need = {"baseline": ["baseline"], "two-step": ["stage1", "stage2"]}.get(getattr(a, "method", None), ["stage1"])
    if not hasattr(a, "method"):  # evaluate: every model that ships
        need = [k for k in shipped.KINDS if k in shipped.manifest().get(a.pretrained, {})] or ["baseline"]
    for kind in need:
        setattr(a, kind, shipped.checkpoint(a.pretrained, kind))
