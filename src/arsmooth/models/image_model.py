"""Image models of the smoothing method: an AR network (PixelCNN++ or the pixel transformer) with the
likelihood head its objective asks for (:mod:`arsmooth.maths.objectives`).

* ``baseline``: p(x) on clean 8-bit images, discretized logistic mixture (PixelCNN++);
* ``stage1``: p(x~) on smoothed images, continuous logistic mixture, never clamped (paper sec. 4);
* ``stage2``: p(x | x~) with the discretized mixture, so the two-step ELBO bounds the 8-bit
  likelihood (paper eq. 5). Two designs (``stage2_conditioning``):

  - ``stacked`` (the paper's): the same network on the stacked image ``[x~ ; x]``, scored on the
    bottom half only; x~(i, j) then sits H rows above x(i, j), at the edge of the receptive field;
  - ``spatial`` (ours): the network on x alone, causal as in PixelCNN++, with x~ through a non-causal
    encoder whose maps are added, per position, inside every gated resnet block
    (:class:`arsmooth.networks.pixelcnnpp.ConditionEncoder`).

  ``stage2_likelihood="continuous-jitter"`` is the official code's variant (continuous density on x
  plus 0.01 Gaussian jitter): its numbers are not 8-bit bits/dim.

Samplers (:mod:`arsmooth.networks.sampling`) fill pixels in raster order and draw each pixel exactly from its
mixture (:func:`arsmooth.maths.likelihoods.image_sample`). Nothing is clamped except on request.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import ArsmoothError
from ..maths import likelihoods
from ..maths.objectives import KINDS, objective_of
from ..networks import build_network
from ..networks.sampling import raster_sample
from ..networks.stacked import bottom_half, stack_pair
from ..runtime.config import ModelSettings, SmoothingSettings


class ImageModel(nn.Module):
    """An AR network with the likelihood of its ``kind``'s objective (:mod:`arsmooth.maths.objectives`); all
    log-probabilities in nats per image."""

    def __init__(self, kind: str, m: ModelSettings, *, channels: int, image_size: tuple[int, int]):
        super().__init__()
        if kind not in KINDS:
            raise ArsmoothError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.objective = objective_of(kind)
        self.spatial = self.objective.takes_context and m.stage2_conditioning == "spatial"
        self.kind, self.channels, self.nr_mix = kind, channels, m.nr_logistic_mix
        # the likelihood the objective chooses for these settings (fixed with the settings, so read once)
        self.discretized, self.jitter = self.objective.discretized(m), self.objective.jitter(m)
        self.image_size = tuple(image_size)
        self.net = build_network(channels, m, image_size=self.image_size, conditioned=self.spatial)

    def _check(self, x: Tensor, name: str = "images") -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ArsmoothError(f"{name} must be (B, {self.channels}, H, W), got {tuple(x.shape)}")

    @property
    def takes_context(self) -> bool:
        """Whether the network is given x~ (stage 2): the objective's answer."""
        return self.objective.takes_context

    @property
    def conditioning(self) -> str | None:
        """``stacked`` or ``spatial`` for stage 2, None otherwise."""
        return ("spatial" if self.spatial else "stacked") if self.takes_context else None

    def params(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Mixture parameters ``(B, P, H, W)`` for the pixels of ``x`` (given x~ ``context`` for stage 2)."""
        self._check(x)
        if self.takes_context:
            if context is None:
                raise ArsmoothError("a stage-2 model needs the smoothed image x~ as context")
            self._check(context, "x~")
            if self.spatial:
                return self.net(x, cond=context)
            return bottom_half(self.net(stack_pair(context, x)))
        if context is not None:
            raise ArsmoothError(f"a {self.kind} model takes no context")
        return self.net(x)

    def pixel_log_prob(self, x: Tensor, context: Tensor | None = None, detach_params: bool = False) -> Tensor:
        """Per-pixel log-probabilities ``(B, H, W)``; ``context`` is x~ for stage 2."""
        if self.takes_context:
            params = self.params(x, context)
        else:
            params = self.params(x.detach() if detach_params else x, context)
        # the likelihood in fp32 under autocast too
        return likelihoods.image_log_prob(x, _at_least_fp32(params), self.nr_mix, self.discretized)

    def log_prob(self, x: Tensor, context: Tensor | None = None, detach_params: bool = False) -> Tensor:
        """``log p(x)`` (or ``log p(x | x~)``) in nats per image, ``(B,)``."""
        return self.pixel_log_prob(x, context, detach_params).flatten(1).sum(1)

    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood in nats per image (training loss)."""
        if self.jitter:
            x = x + self.jitter * torch.randn_like(x)
        return -self.log_prob(x, context).mean()

    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        *,
        shape: tuple[int, int] | None = None,
        context: Tensor | None = None,
        known: Tensor | None = None,
        start_row: int = 0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        fast: bool = True,
    ) -> Tensor:
        """Ancestral sampling in raster order, ``(B, C, H, W)``.

        Baseline / stage 1: ``n`` images of size ``shape``. Stage 2: one x per context image x~.
        ``known`` with ``start_row`` keeps rows ``< start_row`` of ``known`` and samples the rest
        (inpainting). Non-finite network outputs stop sampling with an error, never garbage images.
        ``fast=False`` runs the obvious sampler (one full network pass per pixel), for checking.
        """
        if self.takes_context:
            if context is None:
                raise ArsmoothError("sampling a stage-2 model needs x~ (context)")
            self._check(context, "x~")
            b, _, h, w = context.shape
        else:
            if known is not None:
                b, _, h, w = known.shape
            elif n is None:
                raise ArsmoothError("give the number of images to sample")
            else:
                b, (h, w) = n, (shape or self.image_size)
        ref = next(self.parameters())
        x = torch.zeros(b, self.channels, h, w, device=ref.device, dtype=ref.dtype)
        if known is not None:
            x[:, :, :start_row] = known[:, :, :start_row].to(x)
        was_training = self.training
        self.eval()
        try:
            raster_sample(self, x, start_row, None if context is None else context.to(x), generator, progress, fast)
        finally:
            self.train(was_training)
        return x


class SmoothedImageModel(nn.Module):
    """Stage 1 p(x~) and stage 2 p(x | x~) trained together on the ELBO (paper eq. 5), with a Gaussian
    q(x~ | x) = N(x, sigma^2 I) whose sigma is fixed or, with ``learn_sigma``, a parameter (sec. 3.3).

    ``loss(x, eps)`` is -ELBO in nats per image for x~ = x + sigma * eps (eps standard normal, drawn by
    the caller), entropy term included: log sigma gets its gradient through x~ and through H(q). Stage 2
    uses the discretized likelihood, so the bound is on the 8-bit likelihood. ``prior`` and ``reverse``
    are ordinary stage-1 / stage-2 :class:`ImageModel` s, for sampling and the other tools.
    """

    kind = "smoothed"
    objective = objective_of(kind)

    def __init__(self, m: ModelSettings, s: SmoothingSettings, *, channels: int, image_size: tuple[int, int]):
        super().__init__()
        if m.stage2_likelihood != "discretized":
            raise ArsmoothError("the jointly trained model needs the discretized stage-2 likelihood (an 8-bit bound)")
        self.prior = ImageModel("stage1", m, channels=channels, image_size=image_size)
        self.reverse = ImageModel("stage2", m, channels=channels, image_size=image_size)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(s.sigma), dtype=torch.float64), requires_grad=s.learn_sigma)
        self.channels, self.image_size = self.prior.channels, self.prior.image_size

    @property
    def sigma(self) -> float:
        return float(self.log_sigma.detach().exp())

    @property
    def stages(self) -> tuple[ImageModel, ImageModel]:
        return self.prior, self.reverse

    def _check(self, x: Tensor, name: str = "images") -> None:
        self.prior._check(x, name)

    def elbo(self, x: Tensor, eps: Tensor) -> Tensor:
        """The ELBO of each image in nats, ``(B,)``: log p(x~) + log P(x | x~) + H(q), x~ = x + sigma eps."""
        x_tilde = x + self.log_sigma.exp().to(x.dtype) * eps
        entropy = x[0].numel() * (self.log_sigma + 0.5 * math.log(2 * math.pi * math.e))
        return self.prior.log_prob(x_tilde) + self.reverse.log_prob(x, context=x_tilde) + entropy

    def loss(self, x: Tensor, eps: Tensor) -> Tensor:
        """-ELBO, mean over the batch, nats per image (the training loss)."""
        return -self.elbo(x, eps).mean()


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t
