"""Image grids as PNG (Pillow), and matplotlib figures saved the same safe way."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.image_sets import to_uint8
from ..runtime.fileio import atomic_write


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """``(B, C, H, W)`` images in [-1, 1] (quantised and clamped here, for display only) -> HxWx3 uint8."""
    u8 = to_uint8(images.detach().cpu()).numpy()
    b, c, h, w = u8.shape
    if c == 1:
        u8 = np.repeat(u8, 3, 1)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(b))))
    ncol = int(math.ceil(b / nrow))
    out = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(b):
        i, j = divmod(k, nrow)
        top, left = pad + i * (h + pad), pad + j * (w + pad)
        out[top : top + h, left : left + w] = u8[k].transpose(1, 2, 0)
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write an HxWx3 uint8 array as PNG atomically."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"), suffix=".png")


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> None:
    save_png(grid(images, nrow, scale=scale), path)


def side_by_side(columns: dict[str, torch.Tensor], path: str | Path, n: int = 8, scale: int = 2) -> None:
    """Columns of images (e.g. the paper's Fig. 6: baseline, x~, single-step, two-step), ``n`` rows each."""
    blocks = [grid(v[:n], nrow=1, scale=scale) for v in columns.values()]
    h = max(b.shape[0] for b in blocks)
    gap = np.full((h, 6, 3), 255, np.uint8)
    parts = []
    for b in blocks:
        if b.shape[0] < h:
            b = np.concatenate([b, np.full((h - b.shape[0], b.shape[1], 3), 255, np.uint8)])
        parts += [b, gap]
    save_png(np.concatenate(parts[:-1], 1), path)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"), suffix=".png")
    finally:
        plt.close(fig)


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
