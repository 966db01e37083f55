"""The autoregressive image networks: PixelCNN++ and a causal pixel transformer, built from settings."""

from __future__ import annotations

from torch import nn

from ..config import ModelSettings


def build_network(channels: int, m: ModelSettings, *, image_size: tuple[int, int], conditioned: bool) -> nn.Module:
    """The network ``m.network`` names, for ``channels``-channel images of ``image_size``; ``conditioned``
    gives it the non-causal x~ path of a spatial stage 2."""
    if m.network == "transformer":
        from .transformer import PixelTransformer

        return PixelTransformer(channels, m, image_size=image_size, conditioned=conditioned)
    from .pixelcnnpp import PixelCNNpp

    return PixelCNNpp(channels, m, spatial_condition=conditioned)
