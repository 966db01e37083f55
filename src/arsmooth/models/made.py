"""MADE with a mixture of logistics per dimension, and the stacked MADE of the smoothing method.

MADE: Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
Estimation", ICML 2015 (arXiv 1502.03509). Masks are applied as ``F.linear(x, W * mask)``; weights
are never modified in place. Output ``i`` (in the natural order) sees inputs ``< i`` only.

The smoothed model of the paper (the paper's sections 4.2 and 5.1) is one MADE over the stacked
vector ``[x~, x]`` of ``2 D`` dimensions: its first ``D`` conditionals form p(x~), its last ``D``
form p(x | x~).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..maths import likelihoods


class MaskedLinear(nn.Linear):
    """A linear layer whose connectivity is restricted by a fixed binary mask ``(out, in)``."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive density on ``R^D``: each conditional is a mixture of ``n_mix`` logistics."""

    def __init__(self, *, dim: int, hidden: tuple[int, ...] = (256, 256), n_mix: int = 3):
        super().__init__()
        if dim < 1 or n_mix < 1 or not hidden:
            raise ValueError(f"need dim >= 1, n_mix >= 1 and a hidden layer; got {dim}, {n_mix}, {hidden}")
        self.dim, self.n_mix, self.hidden = dim, n_mix, tuple(hidden)
        in_deg = torch.arange(1, dim + 1)
        # hidden degrees cycle through 1..D-1 so every conditional gets units (D = 1: all 0, no inputs)
        degs = [in_deg]
        for h in hidden:
            degs.append(torch.arange(h) % max(dim - 1, 1) + (1 if dim > 1 else 0))
        layers = []
        for d_in, d_out in zip(degs[:-1], degs[1:]):
            layers.append(MaskedLinear(len(d_in), len(d_out), d_out[:, None] >= d_in[None, :]))
        self.hidden_layers = nn.ModuleList(layers)
        n_par = 3 * n_mix
        out_deg = in_deg.repeat(n_par)  # output index p * D + i belongs to dimension i
        self.out = MaskedLinear(len(degs[-1]), n_par * dim, out_deg[:, None] > degs[-1][None, :])
        # direct input -> output connections (Germain et al. 2015, section 4): a masked linear
        # skip that lets every conditional depend linearly on its inputs, e.g. p(x | x~) near x~
        self.direct = MaskedLinear(dim, n_par * dim, out_deg[:, None] > in_deg[None, :], bias=False)
        nn.init.zeros_(self.direct.weight)

    def params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture parameters of every conditional, each ``(N, D, K)``."""
        h = x
        for layer in self.hidden_layers:
            h = F.relu(layer(h))
        p = (self.out(h) + self.direct(x)).view(x.shape[0], 3 * self.n_mix, self.dim).transpose(1, 2)  # (N, D, 3K)
        logit_pi, mu, log_s = p.split(self.n_mix, -1)
        return logit_pi, mu, log_s

    def log_prob_dims(self, x: Tensor, detach_params: bool = False) -> Tensor:
        """Per-dimension conditional log densities ``log p(x_i | x_<i)``, shape ``(N, D)``.

        ``detach_params=True`` computes the mixture parameters from a detached copy of ``x``, so a
        gradient w.r.t. ``x`` only flows through each conditional's own value (the official
        single-step denoiser's "score", paper eq. 7).
        """
        logit_pi, mu, log_s = self.params(x.detach() if detach_params else x)
        return likelihoods.mixture_log_prob(x, logit_pi, mu, log_s)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.log_prob_dims(x).sum(1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        fixed: Tensor | None = None,
        stop: int | None = None,
    ) -> Tensor:
        """Ancestral sampling of coordinates ``F..stop-1``; ``fixed`` ``(N, F)`` pins the first ``F``.

        Later coordinates (``>= stop``) are left at zero.
        """
        start = 0 if fixed is None else fixed.shape[1]
        x = torch.zeros(n, self.dim, device=self.out.weight.device, dtype=self.out.weight.dtype)
        if fixed is not None:
            x[:, :start] = fixed
        for i in range(start, self.dim if stop is None else stop):
            logit_pi, mu, log_s = (t[:, i] for t in self.params(x))
            x[:, i] = likelihoods.mixture_sample(logit_pi, mu, log_s, generator)
        return x


class StackedMADE(nn.Module):
    """p(x~) and p(x | x~) from one MADE over ``[x~, x]`` (paper section 4.2).

    Implements the smoothed-model protocol used by :mod:`arsmooth.maths.smoothing`:
    ``log_prob_noisy``, ``log_prob_clean``, ``sample_noisy``, ``sample_clean``.
    """

    def __init__(self, *, dim: int, hidden: tuple[int, ...] = (256, 256), n_mix: int = 3):
        super().__init__()
        self.dim = dim
        self.made = MADE(dim=2 * dim, hidden=hidden, n_mix=n_mix)

    def log_prob_noisy(self, x_tilde: Tensor, detach_params: bool = False) -> Tensor:
        # the first D conditionals never see the x half, so zeros stand in for it
        z = torch.cat([x_tilde, torch.zeros_like(x_tilde)], 1)  # (N, 2D)
        return self.made.log_prob_dims(z, detach_params)[:, : self.dim].sum(1)

    def log_prob_clean(self, x: Tensor, x_tilde: Tensor) -> Tensor:
        return self.made.log_prob_dims(torch.cat([x_tilde, x], 1))[:, self.dim :].sum(1)

    def log_prob_pair(self, x: Tensor, x_tilde: Tensor) -> tuple[Tensor, Tensor]:
        """Both terms from a single forward pass (training)."""
        lp = self.made.log_prob_dims(torch.cat([x_tilde, x], 1))
        return lp[:, : self.dim].sum(1), lp[:, self.dim :].sum(1)

    def sample_noisy(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.made.sample(n, generator, stop=self.dim)[:, : self.dim]

    def sample_clean(self, x_tilde: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.made.sample(x_tilde.shape[0], generator, fixed=x_tilde)[:, self.dim :]
