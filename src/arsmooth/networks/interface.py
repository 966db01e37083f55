"""What an autoregressive image network offers so that arsmooth trains, samples, scores and checkpoints it.

Both families here (:class:`~arsmooth.networks.pixelcnnpp.PixelCNNpp`,
:class:`~arsmooth.networks.transformer.PixelTransformer`) satisfy :class:`ARImageNetwork`; the transformer also
:class:`SupportsIncremental`, which the raster sampler (:func:`arsmooth.networks.sampling.raster_sample`) uses when a
network has it (PixelCNN++'s fast path is the cached graph of :mod:`arsmooth.networks.sampling`; any other network
without one gets the obvious sampler's work). ``tests/test_networks.py`` runs one contract over every family:
causality by exact Jacobian zeros, a stage 2's dependence on x~ around each position, every pixel's
distribution summing to one, a gradient for every parameter, fast sampler == obvious sampler.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class ARImageNetwork(Protocol):
    """An autoregressive network over ``(B, C, H, W)`` images in raster order, C = 1 or 3.

    ``forward(x, cond=None)`` returns the parameters ``(B, P, H, W)`` of a discretized logistic mixture per
    pixel in the layout of :func:`arsmooth.maths.likelihoods.split_image_params` (``P = 3 K`` for grey, ``10 K`` for
    RGB with the channel coupling of PixelCNN++). The parameters of pixel ``p`` depend on the pixels before
    ``p`` only (all channels of each); for a stage 2 (``encoder`` is not None) also on ``cond`` = x~, anywhere.
    """

    in_channels: int
    out_channels: int
    nr_logistic_mix: int
    encoder: nn.Module | None  # the non-causal x~ path of a stage 2 that sees x~ per position, else None

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor: ...

    def check_size(self, x: Tensor) -> None:
        """Raise :class:`~arsmooth.errors.ArsmoothError` for images this network cannot take."""

    def probe_layers(self) -> list[nn.Module]:
        """The blocks whose outputs linear probes read (a ``feature_map(out)`` method turns outputs that are not
        ``(B, F, h, w)`` maps into them)."""


@runtime_checkable
class IncrementalSampler(Protocol):
    """Exact sampling one pixel at a time: ``params(p)`` is pixel ``p``'s mixture parameters ``(B, P)`` once every
    pixel before it was given with ``push``; equal to ``forward``'s to float rounding."""

    def params(self, p: int) -> Tensor: ...

    def push(self, p: int, value: Tensor) -> None: ...


@runtime_checkable
class SupportsIncremental(Protocol):
    """A network with its own incremental sampler (a key/value cache, say)."""

    def incremental(self, x: Tensor, cond: Tensor | None, known: int) -> IncrementalSampler:
        """A sampler over ``x`` whose first ``known`` pixels (raster order) are given."""
