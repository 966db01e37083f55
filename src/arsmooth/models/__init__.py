"""The density models: PixelCNN++ image models, MADE, mixtures, RealNVP."""

from torch import nn


def count_params(m: nn.Module) -> int:
    """The number of parameters of ``m``."""
    return sum(p.numel() for p in m.parameters())
