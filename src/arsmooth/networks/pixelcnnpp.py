"""PixelCNN++: a causal convolutional network that outputs logistic-mixture parameters per pixel.

Salimans, Karpathy, Chen, Kingma, "PixelCNN++: Improving the PixelCNN with Discretized Logistic
Mixture Likelihood and Other Modifications", ICLR 2017 (https://arxiv.org/abs/1701.05517).

Two streams keep the model causal in raster order without masks: ``u`` sees the rows above a pixel
(down-shifted convolutions), ``ul`` sees the rows above and the pixels to its left in the same row
(down-right-shifted convolutions, fed ``u`` as auxiliary input). Every convolution is
weight-normalised; padding is done with ``F.pad`` on each call, so nothing depends on the batch size.

The network only outputs parameters ``(B, P, H, W)`` in the layout of
``arsmooth.maths.likelihoods.split_image_params``; ``likelihoods.image_log_prob`` scores them. For stage 2
of the smoothing method either the same network runs unchanged on the stacked image ``[x~ ; x]``
(the paper's design, ``arsmooth.networks.stacked``), or ``spatial_condition=True`` adds a non-causal
encoder of x~ (:class:`ConditionEncoder`) whose maps enter every gated resnet block per position, as
PixelCNN++ adds a conditioning vector ``h``.

The network's graph is public and typed, for the fast sampler of ``arsmooth.networks.sampling``: :meth:`PixelCNNpp.walk`
writes the data flow once, over any :class:`GraphOps` (tensors for the forward pass, cached nodes for the
sampler); each shifted convolution gives its :class:`ConvGeometry`; the gated block's maths
(:func:`concat_elu`, :func:`gate`) is written once, along any channel axis, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.parametrizations import weight_norm

from ..errors import ArsmoothError
from ..maths import likelihoods
from ..runtime.config import ModelSettings
from .cpu_kernels import DropoutMasks, FusedGate, draw_dropout_mask, padded_concat_elu


def down_shift(x: Tensor) -> Tensor:
    """Move every row one step down (zeros in row 0): row ``i`` then only holds rows ``< i``."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]  # (B, C, H, W)


def right_shift(x: Tensor) -> Tensor:
    """Move every column one step right (zeros in column 0)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]  # (B, C, H, W)


def concat_elu(x: Tensor, dim: int = 1) -> Tensor:
    """ELU of ``[x, -x]`` along the channel axis ``dim``: keeps both signs' information at twice the channels."""
    return F.elu(torch.cat([x, -x], dim))  # (B, 2C, H, W) for dim 1


def gate(x: Tensor, c: Tensor, dim: int = 1) -> Tensor:
    """The gated resnet's output ``x + a * sigmoid(b)``, ``(a, b)`` the halves of ``c`` along ``dim``."""
    a, b = c.chunk(2, dim)
    return x + a * torch.sigmoid(b)


@dataclass(frozen=True)
class ConvGeometry:
    """Where a shifted convolution reads: output ``(i, j)`` reads input rows ``stride * i + a - top`` and columns
    ``stride * j + b - left`` for kernel offsets ``a < kernel[0]``, ``b < kernel[1]`` (zeros outside)."""

    kernel: tuple[int, int]
    top: int
    left: int
    stride: int


class ShiftedConv2d(nn.Module):
    """A weight-normalised convolution after ``F.pad(x, pad)``; ``geometry`` says where it reads."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], stride: int, pad: tuple[int, int, int, int]):
        super().__init__()
        self.kernel, self.pad = kernel, pad  # pad: (left, right, top, bottom), F.pad's order
        self.conv = weight_norm(nn.Conv2d(in_ch, out_ch, kernel, stride))

    @property
    def geometry(self) -> ConvGeometry:
        left, _, top, _ = self.pad
        return ConvGeometry(tuple(self.kernel), top, left, self.conv.stride[0])

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))


class DownShiftedConv2d(ShiftedConv2d):
    """Convolution whose output at row ``i`` sees input rows ``i - kh + 1 .. i`` only."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int] = (2, 3), stride: int = 1):
        kh, kw = kernel
        # all vertical padding on top makes the kernel look only up; horizontal padding is centred
        super().__init__(in_ch, out_ch, kernel, stride, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0))


class DownRightShiftedConv2d(ShiftedConv2d):
    """Convolution whose output at ``(i, j)`` sees rows ``<= i`` and columns ``<= j`` only."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int] = (2, 2), stride: int = 1):
        kh, kw = kernel
        super().__init__(in_ch, out_ch, kernel, stride, (kw - 1, 0, kh - 1, 0))


class ShiftedDeconv2d(nn.Module):
    """Stride-2 transposed convolution cropped to ``2H x 2W``.

    Each input pixel is written to a ``kh x kw`` block; keeping the first ``2H`` rows maps input
    row ``i`` to output rows ``2i, 2i + 1`` only (no row looks down), and the column offset
    ``col0`` centres (``u``) or left-aligns (``ul``) the blocks.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], col0: int):
        super().__init__()
        self.col0 = col0
        # dim=1: ConvTranspose2d stores (in, out, kh, kw); normalise per output filter
        self.deconv = weight_norm(nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=2), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return self.deconv(x)[:, :, : 2 * h, self.col0 : self.col0 + 2 * w]  # (B, C, 2H, 2W)


def down_shifted_deconv2d(in_ch: int, out_ch: int) -> ShiftedDeconv2d:
    """2x up-sampling for the ``u`` stream (kernel 2x3, centred columns)."""
    return ShiftedDeconv2d(in_ch, out_ch, (2, 3), col0=1)


def down_right_shifted_deconv2d(in_ch: int, out_ch: int) -> ShiftedDeconv2d:
    """2x up-sampling for the ``ul`` stream (kernel 2x2, output pixel sees inputs up-left)."""
    return ShiftedDeconv2d(in_ch, out_ch, (2, 2), col0=0)


def _nin(in_ch: int, out_ch: int) -> nn.Module:
    """Weight-normalised 1x1 convolution ("network in network")."""
    return weight_norm(nn.Conv2d(in_ch, out_ch, 1))


class GatedResnet(nn.Module):
    """``x + a * sigmoid(b)`` with ``(a, b)`` from two shifted convs on concat-ELU features.

    ``n_aux`` feature maps of auxiliary input (the other stream, or skip connections) enter
    through a 1x1 convolution added after the first conv. ``aux`` is a list of the maps the
    auxiliary input is concatenated from.

    ``fused=True`` computes the same function with fewer memory passes: each concat-ELU (with its
    dropout and the next convolution's padding) is written into one buffer by
    ``padded_concat_elu``, the gate is one ``addcmul`` (:class:`FusedGate`). Same parameters, same random numbers.
    ``mask_source`` is how dropout masks are drawn on CPU in training (``bits`` or ``bernoulli``, see
    :func:`draw_dropout_mask`); both paths draw the same masks from the same generator state.
    """

    def __init__(self, nr_filters: int, conv: type[nn.Module], n_aux: int, dropout: float, *, fused: bool,
                 n_cond: int, channel_dropout: bool, mask_source: str):
        super().__init__()
        self.fused, self.channel_dropout, self.mask_source = fused, channel_dropout, mask_source
        self.conv_in = conv(2 * nr_filters, nr_filters)
        self.nin_aux = _nin(2 * n_aux * nr_filters, nr_filters) if n_aux else None
        self.dropout = nn.Dropout2d(dropout) if channel_dropout else nn.Dropout(dropout)
        self.conv_out = conv(2 * nr_filters, 2 * nr_filters)
        # a per-position conditioning map enters where PixelCNN++ adds its conditioning vector h
        self.nin_cond = _nin(n_cond, 2 * nr_filters) if n_cond else None

    def forward(self, x: Tensor, aux: list[Tensor] | None = None, masks: DropoutMasks | None = None,
                cond: Tensor | None = None) -> Tensor:
        if self.fused:
            return self._fused_forward(x, aux, masks, cond)
        c = self.conv_in(concat_elu(x))  # (B, F, H, W)
        if aux is not None:
            c = c + self.nin_aux(concat_elu(torch.cat(aux, 1)))
        c = self.conv_out(self._dropout(concat_elu(c)))  # (B, 2F, H, W)
        if cond is not None:
            c = c + self.nin_cond(cond)
        return gate(x, c)

    def _source(self, x: Tensor) -> str:
        return self.mask_source if x.device.type == "cpu" else "bernoulli"  # CUDA: torch's dropout kernels

    def _dropout(self, h: Tensor) -> Tensor:
        """``self.dropout(h)``, or with bit masks the same distribution from :func:`draw_dropout_mask`."""
        if not (self.training and self.dropout.p > 0 and self._source(h) == "bits"):
            return self.dropout(h)
        b, c = h.shape[:2]
        return h * draw_dropout_mask(h, (b, c, 1, 1) if self.channel_dropout else h.shape, self.dropout.p, "bits")

    def _fused_forward(self, x: Tensor, aux: list[Tensor] | None, masks: DropoutMasks | None,
                       cond: Tensor | None) -> Tensor:
        c = self.conv_in.conv(padded_concat_elu([x], self.conv_in.pad))  # (B, F, H, W)
        if aux is not None:  # in place: a convolution's backward pass does not need its output
            c = c.add_(self.nin_aux(padded_concat_elu(aux)))
        h = padded_concat_elu([c], self.conv_out.pad, self.dropout.p, self.training, masks, self.channel_dropout,
                              self._source(x))
        c = self.conv_out.conv(h)  # (B, 2F, H, W)
        if cond is not None:
            c = c.add_(self.nin_cond(cond))
        return FusedGate.apply(x, c)  # x + a * sigmoid(b), (a, b) = c.chunk(2, 1)


class _PlainResnet(nn.Module):
    """``h + conv(concat_elu(conv(concat_elu(h))))`` with ordinary 3x3 convolutions (not causal)."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = weight_norm(nn.Conv2d(2 * nf, nf, 3, padding=1))
        self.conv2 = weight_norm(nn.Conv2d(2 * nf, nf, 3, padding=1))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv2(concat_elu(self.conv1(concat_elu(h))))


class ConditionEncoder(nn.Module):
    """The non-causal path of a spatially conditioned stage 2: x~ -> maps at H, H/2 and H/4.

    Ordinary (unshifted) convolutions: the map at ``(i, j)`` sees x~ around ``(i, j)``, including
    ``x~(i, j)`` itself, which the stacked ``[x~ ; x]`` image puts ``H`` rows away. x~ is known
    before any x is drawn, so this path never breaks the causality of x; samplers compute it once.
    One plain resnet block per resolution (receptive field 7x7 at full resolution, wider below).
    """

    def __init__(self, in_channels: int, nf: int, nr_block: int = 1):
        super().__init__()
        self.inp = weight_norm(nn.Conv2d(in_channels + 1, nf, 3, padding=1))
        self.blocks = nn.ModuleList(nn.ModuleList(_PlainResnet(nf) for _ in range(nr_block)) for _ in range(3))
        self.down = nn.ModuleList(weight_norm(nn.Conv2d(nf, nf, 3, stride=2, padding=1)) for _ in range(2))

    def forward(self, x_tilde: Tensor) -> list[Tensor]:
        b, _, h, w = x_tilde.shape
        t = self.inp(torch.cat([x_tilde, x_tilde.new_ones(b, 1, h, w)], 1))  # (B, F, H, W)
        maps = []
        for level in range(3):
            for block in self.blocks[level]:
                t = block(t)
            maps.append(t)  # level 0: (B, F, H, W); 1: H/2 (rounded up); 2: H/4
            if level < 2:
                t = self.down[level](F.elu(t))
        return maps


class PixelCNNpp(nn.Module):
    """PixelCNN++ over ``(B, C, H, W)`` images (C = 1 or 3, H and W divisible by 4).

    ``forward(x)`` returns ``(B, P, H, W)`` mixture parameters, ``P =
    likelihoods.image_param_channels(in_channels, nr_logistic_mix)``; the parameters at pixel
    ``(i, j)`` depend only on pixels before it in raster order (all channels of earlier pixels).
    Its shape and dropout come from :class:`~arsmooth.runtime.config.ModelSettings` (the paper's CIFAR-10 network:
    ``nr_resnet=5, nr_filters=160, nr_logistic_mix=10, dropout=0.5``; its MNIST one ``nr_filters=40``);
    ``spatial_condition`` adds the x~ encoder of the spatial stage 2. ``dropout_mode``: ``element`` drops single
    activations (``nn.Dropout``), ``channel`` whole feature maps per image (``nn.Dropout2d``, what the
    paper's official code and the public PyTorch port draw). ``dropout_masks`` (CPU training): ``bits``
    draws the masks from random bits (one generator call per 64 draws at ``dropout=0.5``; same
    distribution, another random stream), ``bernoulli`` exactly as ``F.dropout`` does (the fused path
    then draws them on a side thread, :class:`DropoutMasks`).
    """

    def __init__(self, in_channels: int, m: ModelSettings, *, spatial_condition: bool):
        super().__init__()
        if in_channels not in (1, 3):
            raise ArsmoothError(f"PixelCNN++ handles 1 or 3 channels, got in_channels={in_channels}")
        if not isinstance(m, ModelSettings):
            raise ArsmoothError(f"PixelCNN++ takes its settings as a ModelSettings, got {type(m).__name__}")
        nr_resnet, nr_filters, nr_logistic_mix = m.nr_resnet, m.nr_filters, m.nr_logistic_mix
        dropout, fused, dropout_masks = m.dropout, m.fused, m.dropout_masks
        self.dropout_mode, self.dropout_masks = m.dropout_mode, dropout_masks
        self.in_channels, self.nr_resnet, self.nr_filters = in_channels, nr_resnet, nr_filters
        self.nr_logistic_mix, self.dropout, self.fused = nr_logistic_mix, dropout, fused
        self.out_channels = likelihoods.image_param_channels(in_channels, nr_logistic_mix)
        nf, cin = nr_filters, in_channels + 1  # +1: the channel of ones

        # initial convs, shifted so that position (i, j) never sees itself
        self.u_init = DownShiftedConv2d(cin, nf, (2, 3))
        self.ul_init_above = DownShiftedConv2d(cin, nf, (1, 3))
        self.ul_init_left = DownRightShiftedConv2d(cin, nf, (2, 1))

        # spatial_condition: forward(x, cond=x~) also takes an image x~ through ConditionEncoder
        self.encoder = ConditionEncoder(in_channels, nf) if spatial_condition else None
        n_cond = nf if spatial_condition else 0

        def blocks(n: int, conv: type[nn.Module], n_aux: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(nf, conv, n_aux, dropout, fused=fused, n_cond=n_cond,
                                             channel_dropout=m.dropout_mode == "channel", mask_source=dropout_masks)
                                 for _ in range(n))

        # Down pass (resolution H -> H/4; the paper's code calls it the "up pass"): nr_resnet
        # blocks per stage; ul gets u as auxiliary input.
        self.down_u = nn.ModuleList(blocks(nr_resnet, DownShiftedConv2d, 0) for _ in range(3))
        self.down_ul = nn.ModuleList(blocks(nr_resnet, DownRightShiftedConv2d, 1) for _ in range(3))
        self.downsample_u = nn.ModuleList(DownShiftedConv2d(nf, nf, (2, 3), 2) for _ in range(2))
        self.downsample_ul = nn.ModuleList(DownRightShiftedConv2d(nf, nf, (2, 2), 2) for _ in range(2))
        # Up pass: every block pops one skip connection per stream; the down pass stored
        # 3 nr_resnet + 3 of them (initial, blocks, down-samplings), one is the starting point,
        # so the stages hold nr_resnet, nr_resnet + 1, nr_resnet + 1 blocks as in the paper's code.
        sizes = (nr_resnet, nr_resnet + 1, nr_resnet + 1)
        self.up_u = nn.ModuleList(blocks(n, DownShiftedConv2d, 1) for n in sizes)
        self.up_ul = nn.ModuleList(blocks(n, DownRightShiftedConv2d, 2) for n in sizes)
        self.upsample_u = nn.ModuleList(down_shifted_deconv2d(nf, nf) for _ in range(2))
        self.upsample_ul = nn.ModuleList(down_right_shifted_deconv2d(nf, nf) for _ in range(2))

        # the paper's code applies a plain ELU before the output layer
        self.nin_out = _nin(nf, self.out_channels)

    def _check(self, x: Tensor, cond: Tensor | None = None) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ArsmoothError(
                f"PixelCNN++ expects images (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ArsmoothError(
                f"PixelCNN++ needs H and W divisible by 4, got {h}x{w}; pad or resize the images"
            )
        if (cond is None) != (self.encoder is None):
            raise ArsmoothError("a spatially conditioned PixelCNN++ needs cond=x~; an unconditioned one takes none"
                                if self.encoder is not None else "this PixelCNN++ takes no conditioning image")
        if cond is not None and cond.shape != x.shape:
            raise ArsmoothError(f"the conditioning image must have the shape of x, {tuple(x.shape)}, got {tuple(cond.shape)}")

    def check_size(self, x: Tensor) -> None:
        """Refuse images ``x`` (any batch) this network cannot take, with or without its conditioning image."""
        self._check(x, x if self.encoder is not None else None)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Mixture parameters ``(B, P, H, W)``; ``cond`` is x~ for a spatially conditioned network."""
        self._check(x, cond)
        maps = None if cond is None else self.encoder(cond)
        if not (self.fused and self.training and self.dropout > 0 and x.device.type == "cpu"
                and self.dropout_masks == "bernoulli"):  # bit masks are cheap enough to draw inline
            return self.walk(_TensorOps(None, maps), x)
        # the masks are drawn on a side thread; the trainer gives it a core (cpu_kernels.threads_for_masks)
        masks = DropoutMasks(x, self._mask_shapes(x.shape[0], *x.shape[2:]), self.dropout)
        try:
            return self.walk(_TensorOps(masks, maps), x)
        finally:
            masks.close()

    def probe_layers(self) -> list[nn.Module]:
        """The blocks linear probes read: the ``ul`` stream's gated resnets, down pass then up pass."""
        return [b for stage in self.down_ul for b in stage] + [b for stage in self.up_ul for b in stage]

    def _mask_shapes(self, b: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """The dropout masks' shapes in the order the blocks draw them (u, then ul, block by block)."""
        f2, n = 2 * self.nr_filters, self.nr_resnet
        down = [(b, f2, h >> s, w >> s) for s in range(3) for _ in range(2 * n)]
        up = [(b, f2, h >> (2 - s), w >> (2 - s)) for s, k in enumerate((n, n + 1, n + 1)) for _ in range(2 * k)]
        if self.dropout_mode == "channel":  # one draw per image and channel, whatever the resolution
            return [(b, f2, 1, 1) for _ in down + up]
        return down + up

    def walk(self, ops: GraphOps[T], x: T) -> T:
        """The network's data flow, written once, over ``ops`` (:class:`GraphOps`): the forward pass runs it
        on tensors (:class:`_TensorOps`), the fast sampler (``arsmooth.networks.sampling``) on cached-node ids, so the
        two cannot drift apart."""
        u, ul = ops.init(self, x)
        us, uls = [u], [ul]
        for stage in range(3):  # down pass (resolution H -> H/4; the paper's code calls it the "up pass")
            for block_u, block_ul in zip(self.down_u[stage], self.down_ul[stage]):
                u = ops.gated(block_u, u, [], stage)
                ul = ops.gated(block_ul, ul, [u], stage)
                us.append(u)
                uls.append(ul)
            if stage < 2:
                u, ul = ops.conv(self.downsample_u[stage], u), ops.conv(self.downsample_ul[stage], ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()  # H/4
        for stage in range(3):
            for block_u, block_ul in zip(self.up_u[stage], self.up_ul[stage]):
                u = ops.gated(block_u, u, [us.pop()], 2 - stage)
                ul = ops.gated(block_ul, ul, [u, uls.pop()], 2 - stage)
            if stage < 2:
                u, ul = ops.deconv(self.upsample_u[stage], u), ops.deconv(self.upsample_ul[stage], ul)
        assert not us and not uls, "every skip connection is used exactly once"
        return ops.out(self.nin_out, ul)


T = TypeVar("T")


@runtime_checkable
class GraphOps(Protocol, Generic[T]):
    """The operations :meth:`PixelCNNpp.walk` composes, on values of type ``T`` (tensors, or a sampler's node
    ids). The modules passed in are the network's own; what they compute is public: a shifted convolution's
    ``conv`` and ``geometry``, a deconvolution's ``deconv`` and ``col0``, a gated block's ``conv_in``, ``nin_aux``,
    ``conv_out``, ``nin_cond`` with :func:`concat_elu` and :func:`gate`."""

    def init(self, net: PixelCNNpp, x: T) -> tuple[T, T]:
        """The two streams' first maps from the input (``u`` sees the rows above, ``ul`` also the left)."""

    def gated(self, block: GatedResnet, x: T, aux: list[T], level: int) -> T:
        """A gated resnet block on ``x`` with auxiliary inputs ``aux``; ``level`` is its resolution (0: H x W,
        1: H/2, 2: H/4), which picks the conditioning map of a spatial stage 2."""

    def conv(self, m: ShiftedConv2d, x: T) -> T:
        """A stride-2 shifted convolution (down-sampling)."""

    def deconv(self, m: ShiftedDeconv2d, x: T) -> T:
        """A shifted transposed convolution (up-sampling)."""

    def out(self, nin: nn.Module, ul: T) -> T:
        """The output layer on the ``ul`` stream: mixture parameters."""


class _TensorOps:
    """:meth:`PixelCNNpp.walk` on tensors: the forward pass."""

    def __init__(self, masks: DropoutMasks | None, maps: list[Tensor] | None):
        self.masks, self.maps = masks, maps

    def init(self, net: PixelCNNpp, x: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = x.shape
        # zero padding is then distinguishable from a pixel whose value is 0
        x = torch.cat([x, x.new_ones(b, 1, h, w)], 1)  # (B, C+1, H, W)
        u = down_shift(net.u_init(x))  # (B, F, H, W): rows above
        ul = down_shift(net.ul_init_above(x)) + right_shift(net.ul_init_left(x))  # + left in row
        return u, ul

    def gated(self, block: GatedResnet, x: Tensor, aux: list[Tensor], level: int) -> Tensor:
        return block(x, aux or None, self.masks, None if self.maps is None else self.maps[level])

    def conv(self, m: nn.Module, x: Tensor) -> Tensor:
        return m(x)  # down-sampling (B, F, H/2, W/2) or up-sampling (B, F, 2H, 2W)

    deconv = conv

    def out(self, nin: nn.Module, ul: Tensor) -> Tensor:
        return nin(F.elu(ul))  # (B, P, H, W); the paper's code applies a plain ELU before the output layer
