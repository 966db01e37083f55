"""The CPU speed machinery of PixelCNN++'s training step, kept out of the network's file: the network
(:mod:`arsmooth.networks.pixelcnnpp`) calls these, and its maths is unchanged by them.

* :class:`FusedGate` and :class:`PaddedConcatElu`: the gated resnet's gate and its concat-ELU / dropout / padding
  chain as autograd functions with hand-written backward passes, in fewer memory passes than the
  straightforward chain (``model.fused: true``);
* dropout masks drawn from random bits (``model.dropout_masks: bits``: :func:`draw_dropout_mask`,
  :func:`random_bytes`), or exactly as ``F.dropout`` draws them (``bernoulli``), optionally ahead of time on a
  side thread (:class:`DropoutMasks`), with :func:`threads_for_masks` giving that thread a core during the
  forward pass (the trainer and the benchmark enter it; the network never changes the process's threads).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor


class FusedGate(torch.autograd.Function):
    """``x + a * sigmoid(b)`` with ``(a, b) = c.chunk(2, 1)``, the gated resnet's output; the backward pass
    writes both halves of ``c``'s gradient into one buffer instead of concatenating them."""

    @staticmethod
    def forward(ctx, x: Tensor, c: Tensor) -> Tensor:
        a, b = c.chunk(2, 1)
        s = torch.sigmoid(b)
        ctx.save_for_backward(a, s)
        return torch.addcmul(x, a, s)

    @staticmethod
    def backward(ctx, g: Tensor):
        a, s = ctx.saved_tensors
        n = a.shape[1]
        gc = torch.empty(g.shape[0], 2 * n, *g.shape[2:], dtype=g.dtype, device=g.device,
                         memory_format=memory_layout(a))
        torch.mul(g, s, out=gc[:, :n])  # d/da
        torch.ops.aten.sigmoid_backward.grad_input(g * a, s, grad_input=gc[:, n:])  # d/db: g a s (1 - s)
        return g, gc


class PaddedConcatElu(torch.autograd.Function):
    """``F.pad(concat_elu(cat(xs)) * mask, pad)`` in fewer memory passes than the straightforward chain.

    The chain allocates a tensor for the negation, the concatenation, the ELU, the dropout product and the
    padding, and its backward pass runs through each of them. Here ``elu(x)`` and ``elu(-x)`` are written
    into the two halves of one contiguous buffer (contiguous, so the ELU runs vectorised), which is then
    scaled by the mask into the inside of the padded buffer, whose border alone is zeroed; without padding
    and mask the ELU buffer itself is the output. The backward pass is one ``elu_backward`` on the saved
    ELU output and one subtraction. ``mask`` is the scaled dropout mask (``(B, 2C, H, W)``, or
    ``(B, 2C, 1, 1)`` for channel dropout) or None.
    """

    @staticmethod
    def forward(ctx, pad: tuple[int, int, int, int], mask: Tensor | None, *xs: Tensor) -> Tensor:
        left, right, top, bottom = pad
        b, _, h, w = xs[0].shape
        c = sum(x.shape[1] for x in xs)
        fmt = memory_layout(xs[0])
        y = torch.empty(b, 2 * c, h, w, dtype=xs[0].dtype, device=xs[0].device, memory_format=fmt)
        k = 0
        for x in xs:  # channel order of cat([x, -x]) with x = cat(xs): [xs..., -xs...]
            n = x.shape[1]
            torch._C._nn.elu(x, 1.0, 1.0, 1.0, out=y[:, k : k + n])
            F.elu(torch.neg(x, out=y[:, c + k : c + k + n]), inplace=True)
            k += n
        ctx.pad, ctx.split = pad, [x.shape[1] for x in xs]
        ctx.save_for_backward(y, *([mask] if mask is not None else []))
        if not any(pad):
            return y if mask is None else y * mask
        out = torch.empty(b, 2 * c, h + top + bottom, w + left + right, dtype=y.dtype, device=y.device,
                          memory_format=fmt)
        for rows, cols in ((slice(0, top), slice(None)), (slice(top + h, None), slice(None)),
                           (slice(top, top + h), slice(0, left)), (slice(top, top + h), slice(left + w, None))):
            out[:, :, rows, cols].zero_()  # the border only; the inside is written next
        inner = out[:, :, top : top + h, left : left + w]
        torch.mul(y, mask, out=inner) if mask is not None else inner.copy_(y)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        left, _, top, _ = ctx.pad
        y, *mask = ctx.saved_tensors
        h, w = y.shape[-2:]
        g = grad[:, :, top : top + h, left : left + w]
        # derivative of ELU from its output: 1 where y > 0, y + 1 elsewhere; with a mask, in place on g * mask
        if mask:
            g = g * mask[0]
            d = torch.ops.aten.elu_backward.grad_input(g, 1.0, 1.0, 1.0, True, y, grad_input=g)
        else:
            d = torch.ops.aten.elu_backward(g, 1.0, 1.0, 1.0, True, y)  # (B, 2C, H, W)
        c = y.shape[1] // 2
        grads, k = [], 0
        for n in ctx.split:
            grads.append(d[:, k : k + n] - d[:, c + k : c + k + n])
            k += n
        return (None, None, *grads)


def memory_layout(t: Tensor) -> torch.memory_format:
    """channels_last for tensors stored so (the gpu.channels_last option), else the default layout."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _dropout_mask(like: Tensor, shape: tuple[int, ...], p: float) -> Tensor:
    """The scaled mask ``F.dropout`` multiplies by: ``bernoulli_(1 - p) / (1 - p)`` from the default
    generator, filled in the memory order of ``like`` (as ``F.dropout``'s ``empty_like`` is)."""
    out = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_layout(like))
    return out.bernoulli_(1 - p).div_(1 - p)


def random_bytes(n: int, device: torch.device | str = "cpu") -> Tensor:
    """``n`` uniformly random bytes (uint8) from the default generator: 64-bit words (the generator's full
    64-bit range), read as bytes, so one draw gives 8 bytes and every bit is a fair coin."""
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=device).random_(-(2**63), None)
    return words.view(torch.uint8)[:n]


_BITS = {}  # dtype, device -> (256, 8) table: row k holds the 8 bits of byte k as 0 / 2 (dropped / kept at p=1/2)


def _bits_dropout_mask(like: Tensor, shape: tuple[int, ...], p: float) -> Tensor:
    """The mask ``F.dropout`` multiplies by (keep with probability ``1 - p``, scaled by ``1 / (1 - p)``),
    drawn from random bits instead of one generator call per entry: at ``p = 1/2`` every bit of a random
    byte is one draw (a byte-to-8-values table lookup, 64 draws per generator call); at ``p = k/256`` a
    random byte below ``256 (1 - p)`` keeps. Other ``p`` are not a whole number of bits: ``bernoulli_``.
    Same distribution as ``F.dropout``'s mask, another random stream. Contiguous (default) layout."""
    n, keep = 1, 256 * (1 - p)
    for d in shape:
        n *= d
    if p == 0.5 and n % 8 == 0:
        key = (like.dtype, like.device)
        if key not in _BITS:
            _BITS[key] = (2 * ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1)).to(like.dtype).to(like.device)
        return torch.index_select(_BITS[key], 0, random_bytes(n // 8, like.device).int()).view(shape)
    if keep != round(keep):
        return _dropout_mask(like, shape, p).contiguous()
    return (random_bytes(n, like.device) < int(keep)).view(shape).to(like.dtype).div_(1 - p)


def draw_dropout_mask(like: Tensor, shape: tuple[int, ...], p: float, source: str) -> Tensor:
    """A scaled dropout mask of ``shape`` from ``source``: ``bernoulli`` (exactly ``F.dropout``'s draws) or
    ``bits`` (:func:`_bits_dropout_mask`)."""
    return _bits_dropout_mask(like, shape, p) if source == "bits" else _dropout_mask(like, shape, p)


def padded_concat_elu(xs: list[Tensor], pad: tuple[int, int, int, int] = (0, 0, 0, 0), dropout: float = 0.0,
                      training: bool = False, masks: DropoutMasks | None = None, channel: bool = False,
                      source: str = "bernoulli") -> Tensor:
    """Same values as ``F.pad(F.dropout(concat_elu(torch.cat(xs, 1)), dropout, training), pad)``
    (``F.dropout2d`` with ``channel``: one draw per image and channel, ``(B, 2C, 1, 1)``).

    The dropout mask is drawn exactly as ``F.dropout`` draws it on CPU (``bernoulli_(1 - p)`` on a
    tensor of the un-padded shape, from the default generator), or taken from ``masks`` that drew it
    so ahead of time: a training run consumes the same random numbers as the straightforward chain
    and gives the same results to float tolerance. (On CUDA, ``F.dropout`` uses a fused kernel with
    its own random stream: there the masks have the same distribution, not the same values.)
    ``source="bits"`` draws the mask from random bits (:func:`draw_dropout_mask`), as the straightforward
    network with ``dropout_masks="bits"`` does.
    """
    mask = None
    if training and dropout > 0:
        b, _, h, w = xs[0].shape
        shape = (b, 2 * sum(x.shape[1] for x in xs), *((1, 1) if channel else (h, w)))
        mask = masks.next(shape) if masks is not None else draw_dropout_mask(xs[0], shape, dropout, source)
    return PaddedConcatElu.apply(pad, mask, *xs)


class DropoutMasks:
    """One forward pass's dropout masks, drawn on a side thread in the order the blocks use them.

    The straightforward network draws each mask when its block runs; on CPU that draw is serial
    (mt19937, one 64-bit draw per element) and took about a fifth of a small model's training step.
    Drawing the same masks, in the same order and from the same generator, on a second thread while
    the convolutions run hides that time (fully when a core is spare) and changes no number. Nothing
    else may draw from the default generator until ``close()``, which waits for the thread.
    """

    def __init__(self, like: Tensor, shapes: list[tuple[int, ...]], p: float):
        self._masks: list[Tensor | None] = [None] * len(shapes)
        self._ready = [threading.Event() for _ in shapes]
        self._shapes, self._next, self._error = shapes, 0, None

        def work() -> None:
            try:
                for k, shape in enumerate(shapes):
                    self._masks[k] = _dropout_mask(like, shape, p)
                    self._ready[k].set()
            except BaseException as e:  # handed to the forward pass, which raises it
                self._error = e
                for ev in self._ready:
                    ev.set()

        self._thread = threading.Thread(target=work, name="dropout-masks", daemon=True)
        self._thread.start()

    def next(self, shape: tuple[int, ...]) -> Tensor:
        k = self._next
        if k >= len(self._shapes) or tuple(self._shapes[k]) != tuple(shape):
            raise RuntimeError(f"dropout mask {k} was drawn for shape {self._shapes[k:k + 1]}, the block needs {shape}")
        self._ready[k].wait()
        if self._error is not None:
            raise self._error
        self._next += 1
        mask, self._masks[k] = self._masks[k], None
        return mask

    def close(self) -> None:
        self._thread.join()


def uses_mask_thread(model) -> bool:
    """Whether a training forward pass of ``model`` (an image model or its network) draws its dropout masks on a
    side thread: PixelCNN++, fused, training, dropout > 0, bernoulli masks, on the CPU."""
    nets = [getattr(m, "net", m) for m in getattr(model, "stages", (model,))]
    return any(getattr(n, "fused", False) and n.training and getattr(n, "dropout", 0) > 0
               and getattr(n, "dropout_masks", None) == "bernoulli" and next(n.parameters()).device.type == "cpu"
               for n in nets)


@contextmanager
def threads_for_masks(model):
    """One core fewer for torch while ``model``'s forward pass draws its masks on a side thread (measured on 2
    cores, this beats both a third thread competing with torch's two and drawing inline); torch's threads as
    they were afterwards. A no-op for every other model. Wrap the forward pass only (the backward pass draws
    nothing)."""
    if not uses_mask_thread(model):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads - 1, 1))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
