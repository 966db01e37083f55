"""The stacked image ``[x~ ; x]`` of stage 2 (the paper's section 3.2).

Stacking the smoothed image on top of the clean one puts every x~ pixel before every x pixel in
raster order, so an unchanged autoregressive image model on the ``(B, C, 2H, W)`` stack gives
p(x | x~) on its bottom half. Only the bottom half is scored; the top half is fed, never scored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArsmoothError


def stack_pair(x_tilde: Tensor, x: Tensor) -> Tensor:
    """``(B, C, H, W), (B, C, H, W) -> (B, C, 2H, W)`` with ``x_tilde`` on top."""
    if x_tilde.shape != x.shape or x.dim() != 4:
        raise ArsmoothError(
            f"stack_pair needs two (B, C, H, W) tensors of one shape, got {tuple(x_tilde.shape)} "
            f"and {tuple(x.shape)}"
        )
    return torch.cat([x_tilde, x], dim=2)


def bottom_half(t: Tensor) -> Tensor:
    """Rows of x in a stacked tensor: ``(..., 2H, W) -> (..., H, W)``.

    Works for images, network parameters ``(B, P, 2H, W)`` and per-pixel log-probs ``(B, 2H, W)``.
    """
    if t.dim() < 2 or t.shape[-2] % 2:
        raise ArsmoothError(f"bottom_half needs an even height (..., 2H, W), got {tuple(t.shape)}")
    return t[..., t.shape[-2] // 2 :, :]
