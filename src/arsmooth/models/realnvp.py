"""RealNVP: a normalising flow of affine coupling layers, optionally conditioned on a context.

Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017 (arXiv 1605.08803).
Each coupling layer keeps some coordinates fixed and moves the others by an affine map whose
shift and log-scale an MLP computes from the fixed ones (and the context), so the Jacobian is
triangular and ``log|det J|`` is the sum of the log-scales. Layers alternate which coordinates
they move (for ``dim = 2``: first x2, then x1, ...). The base distribution is N(0, I).

For the smoothing method (Meng et al., ICLR 2021, arXiv 2103.15089, section 5) the unconditional
flow (``context_dim=0``) models p(x~) or p(x), and the conditional one (``context_dim=dim``, the
context being x~) models p(x | x~): "p(x|x~) also a RealNVP".
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor


class AffineCoupling(nn.Module):
    """``y[moved] = x[moved] * exp(s) + t`` with ``(s, t)`` a function of ``x[kept]`` and the context."""

    def __init__(
        self,
        *,
        kept: Tensor,
        moved: Tensor,
        hidden: int,
        n_hidden_layers: int,
        context_dim: int,
        max_log_scale: float,
    ):
        super().__init__()
        self.register_buffer("kept", kept)
        self.register_buffer("moved", moved)
        self.max_log_scale = max_log_scale
        widths = [len(kept) + context_dim] + [hidden] * n_hidden_layers
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.SiLU()]
        last = nn.Linear(widths[-1], 2 * len(moved))
        # zero output -> s = t = 0: every layer, hence the whole flow, starts as the identity
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def _shift_log_scale(self, x_kept: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        h = x_kept if context is None else torch.cat([x_kept, context], 1)
        shift, raw = self.net(h).chunk(2, 1)  # (N, M) each
        # a soft bound on the log-scale keeps deep stacks from blowing up early in training
        log_scale = self.max_log_scale * torch.tanh(raw / self.max_log_scale)
        return shift, log_scale

    def forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(x[:, self.kept], context)
        y = x.clone()
        y[:, self.moved] = x[:, self.moved] * log_scale.exp() + shift
        return y, log_scale.sum(1)

    def inverse(self, y: Tensor, context: Tensor | None) -> Tensor:
        # kept coordinates are unchanged by the layer, so (s, t) can be recomputed from y
        shift, log_scale = self._shift_log_scale(y[:, self.kept], context)
        x = y.clone()
        x[:, self.moved] = (y[:, self.moved] - shift) * (-log_scale).exp()
        return x


class RealNVP(nn.Module):
    """Density on ``R^dim`` (``context_dim=0``) or conditional density given a ``(N, context_dim)`` context.

    ``forward`` maps data to latent (the density direction), ``inverse`` latent to data (sampling).
    ``context_embed > 0`` passes the context through one MLP shared by all coupling layers (that many
    outputs) instead of handing each layer the raw context.
    """

    def __init__(
        self,
        *,
        dim: int,
        n_layers: int = 8,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        context_dim: int = 0,
        max_log_scale: float = 2.0,
        context_embed: int = 0,
    ):
        super().__init__()
        if dim < 2:
            raise ValueError(
                f"RealNVP needs dim >= 2 (a coupling layer splits the coordinates); got dim={dim}. "
                "Use a mixture model for 1-d data."
            )
        if n_layers < 1 or hidden < 1 or n_hidden_layers < 0 or context_dim < 0:
            raise ValueError(
                "need n_layers >= 1, hidden >= 1, n_hidden_layers >= 0, context_dim >= 0; got "
                f"{n_layers}, {hidden}, {n_hidden_layers}, {context_dim}"
            )
        if max_log_scale <= 0:
            raise ValueError(f"max_log_scale must be positive; got {max_log_scale}")
        if context_embed < 0 or (context_embed and not context_dim):
            raise ValueError(f"context_embed needs a context and must be >= 0; got {context_embed} (context_dim={context_dim})")
        self.dim, self.context_dim = dim, context_dim
        # optional context encoder shared by every coupling layer: an MLP (width ``hidden``) computed once per
        # context, so the flow's conditioners read a learned feature of the context instead of the raw columns
        self.embed = None
        if context_embed:
            self.embed = nn.Sequential(nn.Linear(context_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                       nn.Linear(hidden, context_embed))
        parity = torch.arange(dim) % 2
        layers = []
        for k in range(n_layers):
            # alternating parity masks: a coordinate moved by layer k is kept (and read) by layer k+1
            kept = (parity == k % 2).nonzero().flatten()
            moved = (parity != k % 2).nonzero().flatten()
            layers.append(
                AffineCoupling(
                    kept=kept,
                    moved=moved,
                    hidden=hidden,
                    n_hidden_layers=n_hidden_layers,
                    context_dim=context_embed or context_dim,
                    max_log_scale=max_log_scale,
                )
            )
        self.layers = nn.ModuleList(layers)

    def _check(self, x: Tensor, context: Tensor | None, name: str = "x") -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (N, {self.dim}); got {tuple(x.shape)}")
        if self.context_dim == 0:
            if context is not None:
                raise ValueError("this RealNVP is unconditional (context_dim=0) but a context was given")
            return
        if context is None:
            raise ValueError(
                f"this RealNVP is conditional (context_dim={self.context_dim}): pass context of shape "
                f"(N, {self.context_dim})"
            )
        if context.dim() != 2 or context.shape != (x.shape[0], self.context_dim):
            raise ValueError(
                f"context must have shape ({x.shape[0]}, {self.context_dim}); got {tuple(context.shape)}"
            )

    def _embed(self, context: Tensor | None) -> Tensor | None:
        return context if self.embed is None else self.embed(context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data to latent: ``z`` ``(N, D)`` and ``log|det dz/dx|`` ``(N,)``."""
        self._check(x, context)
        logdet = x.new_zeros(x.shape[0])  # (N,)
        z, context = x, self._embed(context)
        for layer in self.layers:
            z, ld = layer(z, context)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Latent to data, ``(N, D)``."""
        self._check(z, context, "z")
        x, context = z, self._embed(context)
        for layer in reversed(self.layers):
            x = layer.inverse(x, context)
        return x

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(x)`` (or ``log p(x | context)``) in nats, ``(N,)``."""
        z, logdet = self(x, context)
        base = -0.5 * (z**2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)  # (N,)
        return base + logdet

    def sample(
        self,
        n: int | None = None,
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``(N, D)`` samples; one per context row when a context is given.

        Not wrapped in ``no_grad``: the samples are reparameterised, so gradients flow to the
        parameters and the context when the caller wants them.
        """
        if context is not None:
            if context.dim() != 2:
                raise ValueError(
                    f"context must have shape (N, {self.context_dim}); got {tuple(context.shape)}"
                )
            if n is not None and n != context.shape[0]:
                raise ValueError(f"n={n} but context has {context.shape[0]} rows; pass n=None or match them")
            n = context.shape[0]
        if n is None:
            raise ValueError("pass n (the number of samples) or a context with one row per sample")
        ref = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, device=ref.device, dtype=ref.dtype)  # (N, D)
        return self.inverse(z, context)


class CenteredConditional(nn.Module):
    """p(x | x~) by a conditional flow over ``u = (x - x~) / scale``: an exact affine change of variables.

    ``log p(x | x~) = log p_flow(u | context) - D log(scale)``. The flow then only has to model the
    (localised) noise that took x to x~, not x from scratch; ``scale`` is the kernel's std. The
    first ``D`` columns of the context are x~ (the centre); any further columns are extra inputs
    to the flow's networks (see :class:`arsmooth.maths.smoothing.ScoreConditionedPair`).
    """

    def __init__(self, flow: RealNVP, scale: float):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale}")
        if flow.context_dim < flow.dim:
            raise ValueError(f"the flow's context must hold x~ ({flow.dim} columns); got context_dim={flow.context_dim}")
        self.flow, self.scale = flow, float(scale)

    def log_prob(self, x: Tensor, context: Tensor) -> Tensor:
        u = (x - context[:, : x.shape[1]]) / self.scale
        return self.flow.log_prob(u, context) - x.shape[1] * math.log(self.scale)

    def sample(self, n: int | None = None, context: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        if context is None:
            raise ValueError("CenteredConditional samples x given x~: pass context")
        return context[:, : self.flow.dim] + self.scale * self.flow.sample(n, context, generator)
