"""A free 1-d mixture of logistics: the density of the paper's 1-d studies (Figs. 3 and 4)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..maths import likelihoods


class MixtureOfLogistics1d(nn.Module):
    """A free 1-d mixture of ``n_mix`` logistics (paper Fig. 3 and the Fig. 4 baseline)."""

    def __init__(self, *, n_mix: int = 3, init_range: float = 1.0):
        super().__init__()
        self.n_mix = n_mix
        self.logit_pi = nn.Parameter(torch.zeros(n_mix))
        self.mu = nn.Parameter(torch.linspace(-init_range, init_range, n_mix))
        self.log_s = nn.Parameter(torch.zeros(n_mix))

    def _p(self, n):
        return (t.expand(n, self.n_mix) for t in (self.logit_pi, self.mu, self.log_s))

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.reshape(-1)
        return likelihoods.mixture_log_prob(x, *self._p(len(x)))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return likelihoods.mixture_sample(*self._p(n), generator).unsqueeze(1)
