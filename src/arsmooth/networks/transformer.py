"""A causal pixel transformer: the second autoregressive family that arsmooth smooths.

One token per pixel in raster order, all channels of a pixel in one token (as Image Transformer /
ImageGPT over pixels, Parmar et al. 2018, Chen et al. 2020). The input is shifted by one position, so
the token at position ``p`` carries the value of pixel ``p - 1`` (a learned start vector at ``p = 0``)
plus a learned 2-d position embedding of ``p`` (row + column): position ``p`` sees pixels ``< p`` only.
Pre-norm blocks (LayerNorm -> causal multi-head attention through ``F.scaled_dot_product_attention``
-> residual; LayerNorm -> GELU MLP -> residual), dropout on both residual branches, a final LayerNorm
and a linear head to the same discretized-logistic-mixture parameters as PixelCNN++ (with its channel
coupling), so every bound stays a bound on the 8-bit likelihood.

Stage 2 (``conditioned=True``) sees x~ at and around every position: a small non-causal convolutional
encoder of x~ (:class:`ConvEncoder`) gives one feature vector per position, and each block adds its own
linear projection of it to the residual stream at that position, as the spatial PixelCNN++ adds its
encoder's maps inside every gated block. Convolutions, not a bidirectional transformer: denoising is
local (x~ near a pixel says most about it), convolutions give that locality with few parameters, and
they cost O(N) where attention over x~ would cost another O(N^2).

:meth:`PixelTransformer.incremental` samples with a key/value cache: one token per step (and the
encoder once per batch), the same parameters as the full forward pass to float tolerance.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ArsmoothError
from ..maths import likelihoods
from ..runtime.config import ModelSettings

_COUNTER: list[int] = []  # attention FLOPs, while counting_attention() is open (torch's counter skips SDPA on CPU)


@contextmanager
def counting_attention():
    """Count the multiply-adds of every attention call inside (2 per entry of Q K^T and of A V, times 2 for
    FLOPs); yields a one-element list holding the total. Full causal attention is counted whole (n x n)."""
    _COUNTER.append(0)
    total = [0]
    try:
        yield total
    finally:
        total[0] = _COUNTER.pop()


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` over ``(B, heads, n, d)`` (counted under :func:`counting_attention`)."""
    if _COUNTER:
        _COUNTER[-1] += 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class ConvEncoder(nn.Module):
    """x~ -> ``(B, N, D)`` features, non-causal: a 3x3 convolution, then residual blocks of a 5x5
    depthwise and a 1x1 convolution (receptive field 3 + 4 per block)."""

    def __init__(self, in_channels: int, width: int, blocks: int):
        super().__init__()
        self.inp = nn.Conv2d(in_channels + 1, width, 3, padding=1)
        self.depthwise = nn.ModuleList(nn.Conv2d(width, width, 5, padding=2, groups=width) for _ in range(blocks))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(blocks))

    def forward(self, x_tilde: Tensor) -> Tensor:
        b, _, h, w = x_tilde.shape
        t = self.inp(torch.cat([x_tilde, x_tilde.new_ones(b, 1, h, w)], 1))  # (B, D, H, W)
        for dw, pw in zip(self.depthwise, self.pointwise):
            t = t + pw(F.gelu(dw(t)))
        return t.flatten(2).transpose(1, 2)  # (B, N, D), raster order


class Block(nn.Module):
    """Pre-norm transformer block; ``cond`` (``(B, N, D)`` or None) enters through its own projection."""

    def __init__(self, width: int, heads: int, dropout: float, conditioned: bool):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp_in, self.mlp_out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)
        self.cond = nn.Linear(width, width) if conditioned else None

    def _split(self, t: Tensor) -> Tensor:  # (B, n, D) -> (B, heads, n, D / heads)
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def _merge(self, t: Tensor) -> Tensor:  # (B, heads, n, d) -> (B, n, D)
        b, _, n, _ = t.shape
        return t.transpose(1, 2).reshape(b, n, -1)

    def qkv_of(self, h: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The residual stream after the conditioning, and its queries, keys and values per head."""
        if self.cond is not None:
            h = h + self.cond(cond)
        q, k, v = self.qkv(self.norm1(h)).chunk(3, -1)
        return h, self._split(q), self._split(k), self._split(v)

    def finish(self, h: Tensor, att: Tensor) -> Tensor:
        """Residual of the attention output ``(B, heads, n, d)``, then the MLP."""
        h = h + self.drop(self.proj(self._merge(att)))
        return h + self.drop(self.mlp_out(F.gelu(self.mlp_in(self.norm2(h)))))

    def forward(self, h: Tensor, cond: Tensor | None = None) -> Tensor:
        h, q, k, v = self.qkv_of(h, cond)
        return self.finish(h, attention(q, k, v, causal=True))


class PixelTransformer(nn.Module):
    """Causal transformer over ``(B, C, H, W)`` images of one size, C = 1 or 3.

    ``forward(x, cond=None)`` returns ``(B, P, H, W)`` mixture parameters (the layout of
    :func:`arsmooth.maths.likelihoods.split_image_params`); those of pixel ``p`` depend on pixels ``< p`` in
    raster order only (and, when ``conditioned``, on all of ``cond`` = x~). Shape from
    :class:`~arsmooth.runtime.config.ModelSettings`: ``tf_width``, ``tf_layers``, ``tf_heads``,
    ``tf_encoder_blocks``, ``nr_logistic_mix``, ``dropout``.
    """

    def __init__(self, in_channels: int, m: ModelSettings, *, image_size: tuple[int, int], conditioned: bool):
        super().__init__()
        if in_channels not in (1, 3):
            raise ArsmoothError(f"the pixel transformer handles 1 or 3 channels, got {in_channels}")
        d = m.tf_width
        self.in_channels, self.nr_logistic_mix, self.width = in_channels, m.nr_logistic_mix, d
        self.image_size = tuple(image_size)
        self.out_channels = likelihoods.image_param_channels(in_channels, m.nr_logistic_mix)
        h, w = self.image_size
        self.embed = nn.Linear(in_channels, d)
        self.start = nn.Parameter(torch.zeros(d))
        self.row = nn.Parameter(torch.randn(h, d) * 0.02)
        self.col = nn.Parameter(torch.randn(w, d) * 0.02)
        self.drop = nn.Dropout(m.dropout)
        self.encoder = ConvEncoder(in_channels, d, m.tf_encoder_blocks) if conditioned else None
        self.blocks = nn.ModuleList(Block(d, m.tf_heads, m.dropout, conditioned) for _ in range(m.tf_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.out_channels)
        self.apply(_init)

    @property
    def conditioned(self) -> bool:
        return self.encoder is not None

    def check_size(self, x: Tensor, cond: Tensor | None = None) -> None:
        """Refuse images this network cannot take (it was built for one image size)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ArsmoothError(f"the pixel transformer expects images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ArsmoothError(f"this pixel transformer was built for {self.image_size[0]}x{self.image_size[1]} "
                                f"images, got {x.shape[-2]}x{x.shape[-1]}")
        if cond is not None and cond.shape != x.shape:
            raise ArsmoothError(f"the conditioning image must have the shape of x, {tuple(x.shape)}, got {tuple(cond.shape)}")

    def positions(self) -> Tensor:
        """Learned 2-d position embeddings in raster order, ``(N, D)``."""
        return (self.row[:, None, :] + self.col[None, :, :]).flatten(0, 1)

    def tokens(self, x: Tensor) -> Tensor:
        """Input tokens ``(B, N, D)``: position ``p`` holds pixel ``p - 1`` (the start vector at 0)."""
        b = x.shape[0]
        pix = self.embed(x.flatten(2).transpose(1, 2))  # (B, N, D)
        shifted = torch.cat([self.start.expand(b, 1, -1), pix[:, :-1]], 1)
        return self.drop(shifted + self.positions())

    def conditioning(self, cond: Tensor | None) -> Tensor | None:
        if (cond is None) != (self.encoder is None):
            raise ArsmoothError("a conditioned pixel transformer needs cond=x~; an unconditioned one takes none"
                                if self.encoder is not None else "this pixel transformer takes no conditioning image")
        return None if cond is None else self.encoder(cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Mixture parameters ``(B, P, H, W)``; ``cond`` is x~ for a conditioned (stage-2) network."""
        self.check_size(x, cond)
        c = self.conditioning(cond)
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h, c)
        return self.params_of(h).transpose(1, 2).reshape(x.shape[0], -1, *self.image_size)

    def params_of(self, h: Tensor) -> Tensor:
        return self.head(self.norm(h))

    def probe_layers(self) -> list[nn.Module]:
        """The modules whose outputs linear probes read: every block, in order."""
        return list(self.blocks)

    def feature_map(self, h: Tensor) -> Tensor:
        """A block's output ``(B, N, D)`` as a map ``(B, D, H, W)``."""
        return h.transpose(1, 2).reshape(h.shape[0], -1, *self.image_size)

    def incremental(self, x: Tensor, cond: Tensor | None, known: int) -> KVCacheSampler:
        """A key/value-cache sampler over ``x`` whose first ``known`` pixels (raster order) are given."""
        return KVCacheSampler(self, x, cond, known)


class KVCacheSampler:
    """Exact incremental sampling: ``params(p)`` gives pixel ``p``'s mixture parameters ``(B, P)`` once
    pixels ``< p`` were given by ``push``; each layer keeps the keys and values of the positions so far,
    so every token goes through the network once (a prefix of known pixels in one causal pass)."""

    def __init__(self, net: PixelTransformer, x: Tensor, cond: Tensor | None, known: int):
        net.check_size(x, cond)
        self.net, self.b = net, x.shape[0]
        n, d = x.shape[2] * x.shape[3], net.width
        self.c = net.conditioning(cond)
        self.pos = net.positions()
        heads = net.blocks[0].heads if len(net.blocks) else 1
        self.k = [x.new_zeros(self.b, heads, n, d // heads) for _ in net.blocks]
        self.v = [x.new_zeros(self.b, heads, n, d // heads) for _ in net.blocks]
        self.n, self.out = 0, None
        tokens = net.tokens(x)  # token p needs pixel p - 1: the known prefix and one more position
        self._run(tokens[:, : known + 1], 0)

    def _run(self, h: Tensor, p0: int) -> None:
        """Positions ``p0 .. p0 + len - 1`` through every block; keeps the parameters of the last one."""
        p1 = p0 + h.shape[1]
        for k, block in enumerate(self.net.blocks):
            h, q, key, val = block.qkv_of(h, None if self.c is None else self.c[:, p0:p1])
            self.k[k][:, :, p0:p1], self.v[k][:, :, p0:p1] = key, val
            att = attention(q, self.k[k][:, :, :p1], self.v[k][:, :, :p1], mask=_causal(p0, p1, h.device))
            h = block.finish(h, att)
        self.n, self.out = p1, self.net.params_of(h[:, -1])

    def params(self, p: int) -> Tensor:
        if p != self.n - 1:
            raise RuntimeError(f"the cache is at position {self.n - 1}, pixel {p} was asked for")
        return self.out

    def push(self, p: int, value: Tensor) -> None:
        """Pixel ``p``'s value ``(B, C)``: computes position ``p + 1`` (nothing after the last pixel)."""
        if p + 1 < self.pos.shape[0]:
            h = self.net.embed(value) + self.pos[p + 1]
            self._run(h[:, None], p + 1)


def _causal(p0: int, p1: int, device) -> Tensor | None:
    """Mask of queries ``p0 .. p1 - 1`` over keys ``0 .. p1 - 1`` (None for one query: it sees them all)."""
    if p1 - p0 == 1:
        return None
    q = torch.arange(p0, p1, device=device)[:, None]
    return torch.arange(p1, device=device)[None, :] <= q


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)

