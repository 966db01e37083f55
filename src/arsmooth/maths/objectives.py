"""Training objectives as objects: what a run of each ``kind`` trains, how its batch is noised, its loss,
the bound it reports and what its checkpoint records.

:data:`OBJECTIVES` is the one registry that maps a saved ``kind`` string to its objective; everything else
asks the objective (``model.objective``, :func:`objective_of`) instead of comparing kind strings.

* :class:`Baseline`: p(x) on clean 8-bit images, the discretized mixture;
* :class:`SmoothedDensity` (stage 1): p(x~) on x~ ~ q(x~ | x), a continuous density (paper sec. 4);
* :class:`Reverse` (stage 2): p(x | x~), discretized so that the two-step ELBO bounds the 8-bit
  likelihood (paper eq. 5);
* :class:`JointELBO` (``smoothed``): stages 1 and 2 trained together on the ELBO with a fixed or learned
  Gaussian sigma (paper sec. 3.3).

A model the objective drives offers ``loss(x, context=None)`` and ``log_prob(x, context=None)``
(:class:`arsmooth.models.image_model.ImageModel`), or for the joint objective ``loss(x, eps)``, ``elbo(x, eps)``
and ``sigma``. Noise comes from the run's kernel (:mod:`arsmooth.maths.kernels`): ``kernel.noise(shape, like,
generator)`` and ``kernel.sample(x, generator)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ArsmoothError


class Objective:
    """One kind of training run. Subclasses set the class attributes and override what differs."""

    kind: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]  # the single-network objectives whose networks it trains
    noised: ClassVar[bool] = True  # each batch draws noise (x~, or eps for the joint ELBO)
    takes_context: ClassVar[bool] = False  # its network reads x~ as conditioning (a stage 2)
    reverse: ClassVar[bool] = False  # it trains a p(x | x~) (a stage 2, alone or in the joint model)
    eight_bit: ClassVar[bool] = True  # its bits/dim are 8-bit bits/dim (else a density of x~)
    learns_sigma: ClassVar[bool] = False  # sigma may be a parameter (smoothing.learn_sigma)
    help: ClassVar[str]

    @property
    def joint(self) -> bool:
        """It trains more than one network (stages 1 and 2 together)."""
        return len(self.stages) > 1

    def discretized(self, model_settings) -> bool:
        """Whether its network's likelihood is the discretized mixture (an 8-bit likelihood)."""
        return self.eight_bit

    def jitter(self, model_settings) -> float:
        """Std of the Gaussian jitter added to x in the loss (the official stage 2's continuous variant)."""
        return 0.0

    def check(self, settings) -> str | None:
        """Why ``settings`` cannot train this objective, or None."""
        if settings.smoothing.learn_sigma and not self.learns_sigma:
            return ("smoothing.learn_sigma=true needs kind=smoothed (both stages trained together on the ELBO, "
                    "e.g. the mnist-cpu-smoothed preset)")
        return None

    def inputs(self, x: Tensor, x_tilde: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """What its network scores and its conditioning, from clean ``x`` and noisy ``x_tilde``."""
        return x, None

    def batch_noise(self, x: Tensor, kernel, shape: tuple[int, ...], generator: torch.Generator,
                    rows: slice) -> Tensor | None:
        """The noise of one training batch: drawn for the global batch ``shape`` (so every process count
        draws the same numbers), this process's ``rows`` returned; ``x`` holds those rows."""
        return x + kernel.noise(shape, x, generator)[rows]

    def loss(self, model, x: Tensor, noise: Tensor | None) -> Tensor:
        """The training loss, nats per image, mean over the batch; ``noise`` from :meth:`batch_noise`."""
        return model.loss(*self.inputs(x, noise))

    def log_prob(self, model, x: Tensor, kernel, generator: torch.Generator) -> Tensor:
        """The per-image log-likelihood (or ELBO) in nats its test bits/dim report, noise from ``generator``."""
        x_tilde = kernel.sample(x, generator) if self.noised else None
        inp, context = self.inputs(x, x_tilde)
        return model.log_prob(inp, context=context)

    def sigma(self, model, smoothing) -> float | None:
        """The noise level its checkpoint records."""
        return smoothing.sigma

    def logged(self, model) -> dict:
        """Extra fields of each training log line."""
        return {}


class Baseline(Objective):
    kind, stages, noised = "baseline", ("baseline",), False
    help = "p(x) on clean 8-bit images"

    def batch_noise(self, x, kernel, shape, generator, rows):
        return None

    def sigma(self, model, smoothing):
        return None


class SmoothedDensity(Objective):
    kind, stages, eight_bit = "stage1", ("stage1",), False
    help = "stage 1: p(x~), a continuous density of smoothed images"

    def inputs(self, x, x_tilde):
        return x_tilde, None


class Reverse(Objective):
    kind, stages, takes_context, reverse = "stage2", ("stage2",), True, True
    help = "stage 2: p(x | x~), the discretized mixture given the smoothed image"

    def discretized(self, model_settings) -> bool:
        return model_settings.stage2_likelihood == "discretized"

    def jitter(self, model_settings) -> float:
        return 0.01 if model_settings.stage2_likelihood == "continuous-jitter" else 0.0

    def inputs(self, x, x_tilde):
        return x, x_tilde


class JointELBO(Objective):
    kind, stages, reverse, learns_sigma = "smoothed", ("stage1", "stage2"), True, True
    help = "stages 1 and 2 trained together on the ELBO (fixed or learned Gaussian sigma)"

    def check(self, settings):
        if settings.smoothing.kernel != "gaussian":
            return f"kind smoothed trains a Gaussian q(x~ | x), got smoothing.kernel={settings.smoothing.kernel}"
        if settings.model.stage2_likelihood != "discretized":
            return "kind smoothed needs model.stage2_likelihood=discretized"
        return super().check(settings)

    def batch_noise(self, x, kernel, shape, generator, rows):
        """Standard normal eps; x~ = x + sigma eps is formed inside the model, so sigma gets its gradient."""
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)[rows]

    def loss(self, model, x, noise):
        return model.loss(x, noise)

    def log_prob(self, model, x, kernel, generator):
        """The ELBO: a bound in 8-bit bits/dim."""
        return model.elbo(x, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))

    def sigma(self, model, smoothing):
        return model.sigma

    def logged(self, model):
        return {"sigma": model.sigma}


OBJECTIVES: dict[str, Objective] = {o.kind: o for o in (Baseline(), SmoothedDensity(), Reverse(), JointELBO())}
RUN_KINDS = tuple(OBJECTIVES)  # what a run trains and a checkpoint holds
KINDS = tuple(k for k, o in OBJECTIVES.items() if o.stages == (k,))  # one network each


def objective_of(kind: str) -> Objective:
    """The objective of a saved or configured ``kind``."""
    try:
        return OBJECTIVES[kind]
    except (KeyError, TypeError):
        raise ArsmoothError(f"unknown kind {kind!r}; choose one of {', '.join(OBJECTIVES)}") from None
