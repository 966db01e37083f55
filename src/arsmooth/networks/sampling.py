"""Raster-order samplers for PixelCNN++ image models: the obvious one and a fast, exact one.

The obvious sampler runs the whole network once per pixel: H*W full passes. The fast sampler unrolls
the network into nodes (a convolution with its element-wise tail, or a transposed convolution) and
works out, from the geometry alone, the *last* input pixel in raster order that each activation of
each node depends on. After pixel ``p`` is drawn it computes exactly the activations whose last input
is ``p``, each from the small window of cached activations it reads. Every activation is then
computed once per image, about one forward pass in all, plus a few small operations per pixel: the
caching idea of Ramachandran et al. (2017), "Fast Generation for Convolutional Autoregressive Models",
with the queues derived from dependency maps instead of written by hand.

Both samplers draw every pixel with :func:`arsmooth.maths.likelihoods.image_sample` from the same
parameters in the same order, so with the same generator they give the same images (to float
tolerance in the network's arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ArsmoothError
from ..maths import likelihoods
from .interface import SupportsIncremental
from .pixelcnnpp import PixelCNNpp, concat_elu, gate

M = 3  # zero margin (top, left, right) of every activation buffer: windows are plain slices


@dataclass
class _Node:
    """One cached activation map ``(B, channels, h, w)``.

    ``conv``: ``out(i, j) = post(conv(pre(src))(i - di, j - dj), *extra(i, j))`` where the convolution
    reads ``src`` rows ``s i + a - pt`` and columns ``s j + b - pl`` (zeros outside); positions with
    ``i < di`` or ``j < dj`` hold 0 before ``post`` (``down_shift`` / ``right_shift``).
    ``deconv``: a stride-2 transposed convolution with kernel height 2, cropped from column ``col0``.
    """

    op: str
    src: int
    channels: int
    shape: tuple[int, int]
    weight: Tensor | None = None
    bias: Tensor | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    pad: tuple[int, int] = (0, 0)  # (pt, pl) of the convolution itself
    shift: tuple[int, int] = (0, 0)  # (di, dj)
    col0: int = 0
    pre: Callable[[Tensor], Tensor] | None = None
    post: Callable[..., Tensor] | None = None
    extra: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.op == "conv":  # (kh * kw * Cin, Cout): rows in the order of a flattened channels-last window
            self.flat = self.weight.permute(2, 3, 1, 0).reshape(-1, self.weight.shape[0]).contiguous()


class _Graph:
    """PixelCNN++ on ``h x w`` images as cached nodes, with the per-pixel schedule."""

    def __init__(self, net: PixelCNNpp, h: int, w: int):
        net.check_size(torch.zeros(1, net.in_channels, h, w))
        self.h, self.w, self.net = h, w, net
        self.nodes: list[_Node] = []
        with torch.no_grad():
            self.out = self._build(net)
        self.schedule = self._make_schedule()

    # -- building ---------------------------------------------------------------------------
    def _add(self, node: _Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def _conv(self, src: int, m, *, pre=None, post=None, extra=(), shift=(0, 0), channels=None) -> int:
        geo = m.geometry
        kernel, pad, stride = geo.kernel, (geo.top, geo.left), geo.stride
        c = m.conv
        h, w = self.nodes[src].shape
        shape = ((h - 1) // stride + 1, (w - 1) // stride + 1)
        return self._add(_Node("conv", src, channels or c.out_channels, shape, c.weight.detach().clone(), c.bias.detach().clone(),
                               kernel, stride, pad, shift, pre=pre, post=post, extra=tuple(extra)))

    def _deconv(self, src: int, m) -> int:
        d = m.deconv
        h, w = self.nodes[src].shape
        return self._add(_Node("deconv", src, d.out_channels, (2 * h, 2 * w), d.weight.detach().clone(),
                               d.bias.detach().clone(), tuple(d.kernel_size), 2, col0=m.col0))

    def _gated(self, x: int, block, aux: list[int], cond: int | None = None) -> int:
        """A ``GatedResnet`` as two nodes: conv_in (+ the 1x1 of the auxiliary input), conv_out + gate
        (+ the 1x1 of the conditioning map, a constant node)."""
        c = self._conv(x, block.conv_in, pre=_celu, post=_aux_adder(block.nin_aux) if aux else None, extra=aux)
        post, extra = (_gate, [x]) if cond is None else (_cond_gate(block.nin_cond), [x, cond])
        return self._conv(c, block.conv_out, pre=_celu, post=post, extra=extra, channels=self.nodes[x].channels)

    def _build(self, net: PixelCNNpp) -> int:
        """Nodes by :meth:`PixelCNNpp.walk`, the same data flow as the forward pass (``self`` is its ``ops``)."""
        x = self._add(_Node("input", -1, net.in_channels + 1, (self.h, self.w)))
        self.cond: list[int] = []
        if net.encoder is not None:  # the conditioning maps: known before any pixel, filled by set_cond
            h, w = self.h, self.w
            for _ in range(3):
                self.cond.append(self._add(_Node("const", -1, net.nr_filters, (h, w))))
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        return net.walk(self, x)

    # -- the ops of PixelCNNpp.walk (networks.pixelcnnpp.GraphOps), on node ids ----------------------------------------------
    def init(self, net: PixelCNNpp, x: int) -> tuple[int, int]:
        u = self._conv(x, net.u_init, shift=(1, 0))
        above = self._conv(x, net.ul_init_above, shift=(1, 0))
        ul = self._conv(x, net.ul_init_left, shift=(0, 1), post=lambda out, a: out + a, extra=[above])
        return u, ul

    def gated(self, block, x: int, aux: list[int], level: int) -> int:
        return self._gated(x, block, aux, self.cond[level] if self.cond else None)

    def conv(self, m, x: int) -> int:
        return self._conv(x, m)

    def deconv(self, m, x: int) -> int:
        return self._deconv(x, m)

    def out(self, n, ul: int) -> int:
        return self._add(_Node("conv", ul, n.out_channels, (self.h, self.w), n.weight.detach().clone(),
                               n.bias.detach().clone(), pre=F.elu))

    # -- dependency maps and schedule ---------------------------------------------------------
    def _deps(self) -> list[np.ndarray]:
        """For each node, the raster index of the last input pixel each position depends on (-1: none)."""
        deps: list[np.ndarray] = []
        for n in self.nodes:
            h, w = n.shape
            if n.op == "input":
                d = np.arange(h * w).reshape(h, w)
            elif n.op == "const":
                d = np.full((h, w), -1)
            elif n.op == "conv":
                src = deps[n.src]
                (kh, kw), (pt, pl), s, (di, dj) = n.kernel, n.pad, n.stride, n.shift
                sp = np.full((src.shape[0] + 2 * 8, src.shape[1] + 2 * 8), -1)
                sp[8:-8, 8:-8] = src
                d = np.full((h, w), -1)
                ii, jj = np.arange(h)[:, None] - di, np.arange(w)[None, :] - dj
                for a in range(kh):
                    for b in range(kw):
                        r, c = s * ii + a - pt, s * jj + b - pl
                        d = np.maximum(d, sp[np.clip(r, -8, src.shape[0] + 7) + 8, np.clip(c, -8, src.shape[1] + 7) + 8])
                d[(ii < 0).repeat(w, 1) | (jj < 0).repeat(h, 0)] = -1
                for e in n.extra:
                    d = np.maximum(d, deps[e])
            else:  # deconv: output (2i + a, 2j + b - col0) <- input (i, j)
                src = deps[n.src]
                d = np.full((h, w), -1)
                kh, kw = n.kernel
                for a in range(kh):
                    for b in range(kw):
                        rows = 2 * np.arange(src.shape[0]) + a
                        cols = 2 * np.arange(src.shape[1]) + b - n.col0
                        ok_r, ok_c = rows < h, (cols >= 0) & (cols < w)
                        blk = src[ok_r][:, ok_c]
                        sub = d[np.ix_(rows[ok_r], cols[ok_c])]
                        d[np.ix_(rows[ok_r], cols[ok_c])] = np.maximum(sub, blk)
            deps.append(d)
        return deps

    def _make_schedule(self) -> list[list[tuple[int, int, int, int]]]:
        """``schedule[p + 1]``: the segments ``(node, row, j0, j1)`` that become final once pixel ``p`` is known."""
        sched: list[list[tuple[int, int, int, int]]] = [[] for _ in range(self.h * self.w + 1)]
        self.deps = self._deps()
        for k, d in enumerate(self.deps):
            if self.nodes[k].op in ("input", "const"):
                continue
            for i in range(d.shape[0]):
                row, j0 = d[i], 0
                for j in range(1, len(row) + 1):
                    if j == len(row) or row[j] != row[j0]:
                        sched[row[j0] + 1].append((k, i, j0, j - 1))
                        j0 = j
        for steps in sched:
            steps.sort(key=lambda t: t[0])  # topological order within a step
        return sched

    # -- evaluation (channels-last buffers (B, M + h, M + w + M, C): windows are slices) ------------
    def buffers(self, b: int, like: Tensor) -> list[Tensor]:
        bufs = [like.new_zeros(b, M + n.shape[0], 2 * M + n.shape[1], n.channels) for n in self.nodes]
        bufs[0][:, M:, M:-M, -1] = 1.0  # the channel of ones
        return bufs

    def compute(self, bufs: list[Tensor], k: int, i: int, j0: int, j1: int) -> None:
        """Positions ``(i, j0 .. j1)`` of node ``k``, from the cached positions they read."""
        n = self.nodes[k]
        src, nb, length = bufs[n.src], bufs[n.src].shape[0], j1 - j0 + 1
        if n.op == "conv":
            (kh, kw), (pt, pl), s, (di, dj) = n.kernel, n.pad, n.stride, n.shift
            if i < di:
                out = src.new_zeros(nb * length, n.weight.shape[0])
            else:
                r0, c0 = s * (i - di) - pt + M, s * (j0 - dj) - pl + M
                win = src[:, r0 : r0 + kh, c0 : c0 + s * (length - 1) + kw]  # (B, kh, span, C)
                win = n.pre(win) if n.pre else win
                if length > 1:  # (B, kh, L, C, kw) -> (B, L, kh, kw, C)
                    win = win.unfold(2, kw, s).permute(0, 2, 1, 4, 3)
                out = torch.addmm(n.bias, win.reshape(nb * length, -1), n.flat)  # (B L, Cout)
                if j0 < dj:
                    out.view(nb, length, -1)[:, : dj - j0] = 0
            out = out.view(nb, length, -1)
            if n.post is not None:
                out = n.post(out, *(bufs[e][:, M + i, M + j0 : M + j1 + 1] for e in n.extra))
        else:
            assert n.kernel[0] == 2, "up-sampling kernels are 2 rows high"
            kw, hs, ws = n.kernel[1], i // 2, src.shape[2] - 2 * M
            ja, jb = max(0, -((kw - 1 - j0 - n.col0) // 2)), min(ws - 1, (j1 + n.col0) // 2)
            inp = src[:, M + hs : M + hs + 1, M + ja : M + jb + 1].permute(0, 3, 1, 2)  # (B, C, 1, n)
            full = F.conv_transpose2d(inp, n.weight, n.bias, stride=2)  # (B, Cout, 2, 2 (n - 1) + kw)
            t0 = j0 + n.col0 - 2 * ja
            out = full[:, :, i % 2, t0 : t0 + length].transpose(1, 2)  # (B, L, Cout)
        bufs[k][:, M + i, M + j0 : M + j1 + 1] = out

    def run_steps(self, bufs: list[Tensor], first: int, last: int) -> None:
        """Compute everything that becomes final once pixels ``first .. last`` are known (-1: none)."""
        for p in range(first, last + 1):
            for seg in self.schedule[p + 1]:
                self.compute(bufs, *seg)

    def run_prefix(self, bufs: list[Tensor], known: int) -> None:
        """Everything that depends only on the first ``known`` pixels, node by node in whole-row runs.

        Valid because a node reads only earlier nodes: once those are complete for this prefix, each
        row of the node can be computed at once (far fewer, larger operations than pixel by pixel).
        """
        for k, d in enumerate(self.deps):
            if self.nodes[k].op in ("input", "const"):
                continue
            for i in range(d.shape[0]):
                ready = d[i] < known
                j = 0
                while j < len(ready):
                    if not ready[j]:
                        j += 1
                        continue
                    j0 = j
                    while j < len(ready) and ready[j]:
                        j += 1
                    self.compute(bufs, k, i, j0, j - 1)

    def set_rows(self, bufs: list[Tensor], x: Tensor, row0: int) -> None:
        """Write images ``(B, C, r, w)`` into rows ``row0 ..`` of the input."""
        bufs[0][:, M + row0 : M + row0 + x.shape[2], M:-M, :-1] = x.permute(0, 2, 3, 1)

    def set_cond(self, bufs: list[Tensor], x_tilde: Tensor) -> None:
        """The conditioning maps of x~, computed once by the network's encoder, into their constant nodes."""
        for k, t in zip(self.cond, self.net.encoder(x_tilde)):
            h, w = self.nodes[k].shape
            bufs[k][:, M : M + h, M : M + w] = t.permute(0, 2, 3, 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """The whole network through the cache (for tests): equals ``net(x, cond)``, ``(B, P, H, W)``."""
        bufs = self.buffers(x.shape[0], x)
        if cond is not None:
            self.set_cond(bufs, cond)
        self.set_rows(bufs, x, 0)
        self.run_prefix(bufs, self.h * self.w)
        return bufs[self.out][:, M:, M:-M].permute(0, 3, 1, 2)


def _celu(x: Tensor) -> Tensor:
    """The network's concat_elu over the last (channel) axis of channels-last rows."""
    return concat_elu(x, -1)


def _gate(out: Tensor, x: Tensor) -> Tensor:
    """The network's gate on channels-last rows."""
    return gate(x, out, -1)


def _cond_gate(nin) -> Callable[..., Tensor]:
    """``_gate(out + nin(cond), x)`` on channels-last rows."""
    wn = nin.weight.detach()[:, :, 0, 0].t().contiguous()  # (Cin, Cout)
    bn = nin.bias.detach().clone()

    def gate(out: Tensor, x: Tensor, cond: Tensor) -> Tensor:
        return _gate(out + torch.matmul(cond, wn) + bn, x)

    return gate


def _aux_adder(nin) -> Callable[..., Tensor]:
    """``out + nin(concat_elu(cat(aux)))`` on channels-last rows."""
    wn = nin.weight.detach()[:, :, 0, 0].t().contiguous()  # (Cin, Cout)
    bn = nin.bias.detach().clone()

    def add(out: Tensor, *aux: Tensor) -> Tensor:
        return out + torch.matmul(_celu(torch.cat(aux, -1) if len(aux) > 1 else aux[0]), wn) + bn

    return add


def _draw(model, params: Tensor, i: int, j: int, generator) -> Tensor:
    if not torch.isfinite(params).all():
        raise ArsmoothError(f"the {model.kind} network produced non-finite values at pixel ({i}, {j}); "
                            "the checkpoint is probably broken")
    return likelihoods.image_sample(params, model.channels, model.nr_mix, model.discretized, generator)[:, :, 0, 0]


def raster_sample(model, x: Tensor, start_row: int, context: Tensor | None, generator, progress: bool,
                  fast: bool = True, limit: int | None = None) -> Tensor:
    """Fill rows ``>= start_row`` of ``x`` (B, C, H, W) in raster order from ``model`` (eval mode).

    A stacked stage 2 runs on the image ``[context ; x]`` and only its bottom half is drawn; a spatial
    one runs on ``x`` with ``context`` through its encoder (computed once, up front).
    ``limit`` stops after that many pixels (benchmarks time the obvious sampler on a prefix). A network
    with neither its own incremental sampler nor PixelCNN++'s cached graph gets the obvious sampler.
    """
    b, _, h, w = x.shape
    spatial = context is not None and model.net.encoder is not None
    top = 0 if context is None or spatial else h  # rows of x~ above x in the stacked image
    positions = [(i, j) for i in range(start_row, h) for j in range(w)][:limit]
    bar = tqdm(positions, desc=f"sampling {model.kind}", disable=not progress, leave=False)
    if not fast or not isinstance(model.net, (SupportsIncremental, PixelCNNpp)):  # a network with no fast path
        for i, j in bar:
            if spatial:
                params = model.net(x, cond=context)[:, :, i : i + 1, j : j + 1]
            else:
                inp = x if context is None else torch.cat([context, x], 2)
                params = model.net(inp)[:, :, top + i : top + i + 1, j : j + 1]
            x[:, :, i, j] = _draw(model, params, i, j, generator)
        return x
    if isinstance(model.net, SupportsIncremental):  # the network's own exact incremental sampler (a KV cache)
        inc = model.net.incremental(x, context if spatial else None, start_row * w)
        for i, j in bar:
            p = i * w + j
            x[:, :, i, j] = v = _draw(model, inc.params(p)[:, :, None, None], i, j, generator)
            inc.push(p, v)
        return x
    g = _Graph(model.net, top + h, w)  # copies the current weights; cheap next to sampling
    bufs = g.buffers(b, x)
    if spatial:
        g.set_cond(bufs, context)
    elif context is not None:
        g.set_rows(bufs, context, 0)
    if start_row:
        g.set_rows(bufs, x[:, :, :start_row], top)
    first = (top + start_row) * w
    g.run_prefix(bufs, first)
    out = bufs[g.out]
    for i, j in bar:
        params = out[:, M + top + i, M + j, :, None, None]  # (B, P, 1, 1)
        x[:, :, i, j] = v = _draw(model, params, i, j, generator)
        bufs[0][:, M + top + i, M + j, :-1] = v
        p = (top + i) * w + j
        g.run_steps(bufs, p, p)
    return x
