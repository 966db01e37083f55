"""The two-step smoothed model: bounds, sampling and denoising (Meng et al., ICLR 2021).

A *smoothed model* is any object with

* ``log_prob_noisy(x_tilde, detach_params=False) -> (N,)``: log p(x~) (stage 1);
* ``log_prob_clean(x, x_tilde) -> (N,)``: log p(x | x~) (stage 2);
* ``sample_noisy(n, generator=None)`` and ``sample_clean(x_tilde, generator=None)``.

:class:`~arsmooth.models.made.StackedMADE` is one network giving both stages; :class:`SmoothedPair`
joins two separate models (e.g. two RealNVPs, or two PixelCNN++s). The functions below never
know which; they work on points ``(N, D)`` and images ``(B, C, H, W)`` alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import ArsmoothError
from .kernels import Gaussian, Kernel, event_dims
from .likelihoods import draw

SAMPLING_METHODS = ("smoothed", "single-step", "single-step-detached", "two-step")


class SmoothedPair(nn.Module):
    """Two separate models: ``prior`` for p(x~) and ``reverse`` for p(x | x~).

    ``prior`` needs ``log_prob(x)`` and ``sample(n, generator=)``; ``reverse`` needs
    ``log_prob(x, context=)`` and ``sample(context=, generator=)``.
    """

    def __init__(self, prior: nn.Module, reverse: nn.Module):
        super().__init__()
        self.prior, self.reverse = prior, reverse

    def log_prob_noisy(self, x_tilde: Tensor, detach_params: bool = False) -> Tensor:
        if detach_params:
            import inspect

            if "detach_params" not in inspect.signature(self.prior.log_prob).parameters:
                raise ArsmoothError("the detached-parameter score is defined for autoregressive priors only")
            return self.prior.log_prob(x_tilde, detach_params=True)
        return self.prior.log_prob(x_tilde)

    def log_prob_clean(self, x: Tensor, x_tilde: Tensor) -> Tensor:
        return self.reverse.log_prob(x, context=x_tilde)

    def sample_noisy(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, generator=generator)

    def sample_clean(self, x_tilde: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.reverse.sample(context=x_tilde, generator=generator)


class ScoreConditionedPair(SmoothedPair):
    """A :class:`SmoothedPair` whose p(x | x~) also sees ``sigma * grad log p(x~)`` from the prior.

    By Tweedie's formula (the single-step denoiser, paper eq. 7) ``sigma * grad log p(x~)`` is the
    posterior mean of the noise ``(x - x~) / sigma`` under the smoothed density, so stage 1 hands
    stage 2 where x probably lies, e.g. how near x~ is to an edge of the data's support. The
    feature is a fixed function of x~ (computed without a graph, clamped to ``+-bound``), so
    ``log p(x | x~)`` stays a normalised density in x and the ELBO stays a bound. ``reverse``
    takes the context ``[x~, feature]`` (``2 D`` columns), e.g. a
    :class:`~arsmooth.models.realnvp.CenteredConditional`. Not in the paper: our addition.
    """

    def __init__(self, prior: nn.Module, reverse: nn.Module, sigma: float, bound: float = 10.0):
        super().__init__(prior, reverse)
        if not sigma > 0 or not bound > 0:
            raise ValueError(f"sigma and bound must be positive; got {sigma}, {bound}")
        self.sigma, self.bound = float(sigma), float(bound)

    def _context(self, x_tilde: Tensor, grad_log_prob: Tensor) -> Tensor:
        feature = (self.sigma * grad_log_prob).clamp(-self.bound, self.bound)
        return torch.cat([x_tilde, feature.detach()], 1)

    def context(self, x_tilde: Tensor) -> Tensor:
        """``[x~, clamp(sigma * grad log p(x~))]``, ``(N, 2 D)``; no gradient flows through the feature."""
        return self._context(x_tilde, score(self.prior.log_prob, x_tilde))

    def log_prob_clean(self, x: Tensor, x_tilde: Tensor) -> Tensor:
        return self.reverse.log_prob(x, context=self.context(x_tilde))

    def log_prob_pair(self, x: Tensor, x_tilde: Tensor) -> tuple[Tensor, Tensor]:
        """``(log p(x~), log p(x | x~))`` for training from one pass of the prior: its log p(x~) is
        both the first term and, differentiated in x~, the feature (``log_prob_clean`` would run it again)."""
        with torch.enable_grad():
            xt = x_tilde.detach().requires_grad_(True)
            lp_noisy = self.prior.log_prob(xt)
            (g,) = torch.autograd.grad(lp_noisy.sum(), xt, retain_graph=True)
        return lp_noisy, self.reverse.log_prob(x, context=self._context(x_tilde, g))

    def sample_clean(self, x_tilde: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.reverse.sample(context=self.context(x_tilde), generator=generator)


def smoothed_nll_loss(model, kernel: Kernel, x: Tensor, generator=None) -> Tensor:
    """Training loss of both stages: ``-[log p(x~) + log p(x | x~)]`` with fresh noise, mean over batch."""
    x_tilde = kernel.sample(x, generator)
    pair = getattr(model, "log_prob_pair", None)
    if pair is not None:
        lp_noisy, lp_clean = pair(x, x_tilde)
    else:
        lp_noisy, lp_clean = model.log_prob_noisy(x_tilde), model.log_prob_clean(x, x_tilde)
    return -(lp_noisy + lp_clean).mean()


class LearnedSigma(nn.Module):
    """A Gaussian q(x~ | x) = N(x, sigma^2 I) whose sigma is trained with the model (paper sec. 3.3).

    ``log sigma`` is the parameter; x~ = x + sigma * eps is reparameterised, so the full ELBO, entropy
    term included (:func:`learned_sigma_loss`), gives sigma a gradient through x~ and through H(q).
    ``kernel()`` is the fixed :class:`~arsmooth.maths.kernels.Gaussian` at the current value, for evaluation
    and sampling.
    """

    def __init__(self, init: float):
        super().__init__()
        if not init > 0:
            raise ArsmoothError(f"the initial sigma must be positive, got {init}")
        self.log_sigma = nn.Parameter(torch.tensor(math.log(init), dtype=torch.float64))  # exact at any init

    @property
    def value(self) -> float:
        return float(self.log_sigma.detach().exp())

    def kernel(self) -> Gaussian:
        return Gaussian(self.value)

    def sample(self, x: Tensor, generator=None) -> Tensor:
        eps = draw("normal", x.shape, generator, x)
        return x + self.log_sigma.exp().to(x.dtype) * eps

    def entropy(self, dims: int) -> Tensor:
        """H(q(. | x)) = D (log sigma + (1/2) log(2 pi e)), differentiable in log sigma."""
        return dims * (self.log_sigma + 0.5 * math.log(2 * math.pi * math.e))


def learned_sigma_loss(model, sigma: LearnedSigma, x: Tensor, generator=None) -> Tensor:
    """-ELBO (paper eq. 5) averaged over the batch, differentiable in the model and in sigma:
    -[log p(x~) + log p(x | x~) + H(q)] with x~ = x + sigma * eps."""
    x_tilde = sigma.sample(x, generator)
    lp = model.log_prob_noisy(x_tilde) + model.log_prob_clean(x, x_tilde)
    return -(lp.mean() + sigma.entropy(event_dims(x)))


def elbo(model, kernel: Kernel, x: Tensor, n_draws: int = 1, generator=None) -> Tensor:
    """Per-example ELBO in nats (paper eq. 5):

    log p(x) >= E_q[log p(x~)] + E_q[log p(x | x~)] + H(q(. | x)).

    The entropy is analytic for every kernel here (Gaussian: (D/2) log(2 pi e sigma^2)); the
    expectations are averaged over ``n_draws`` noise draws.
    """
    if n_draws < 1:
        raise ArsmoothError(f"the number of noise draws must be >= 1, got {n_draws}")
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(n_draws):
        x_tilde = kernel.sample(x, generator)
        total = total + model.log_prob_noisy(x_tilde) + model.log_prob_clean(x, x_tilde)
    return total / n_draws + kernel.entropy(event_dims(x))


def iw_bound(model, kernel: Kernel, x: Tensor, k: int, generator=None) -> Tensor:
    """Importance-weighted bound with ``k`` draws (ours, beyond the paper), nats per example:

    log P(x) >= E log (1/k) sum_j p(x~_j) p(x | x~_j) / q(x~_j | x),  x~_j ~ q(. | x).

    ``k = 1`` is the ELBO (up to its Monte-Carlo entropy term); the bound grows with ``k``.
    """
    if k < 1:
        raise ArsmoothError(f"K, the number of importance samples, must be >= 1, got {k}")
    log_w = []
    for _ in range(k):
        x_tilde = kernel.sample(x, generator)
        log_w.append(
            model.log_prob_noisy(x_tilde) + model.log_prob_clean(x, x_tilde) - kernel.log_prob(x_tilde, x)
        )
    return torch.logsumexp(torch.stack(log_w, 0), 0) - math.log(k)


def score(log_prob_fn, x_tilde: Tensor) -> Tensor:
    """``grad_x~ log p(x~)`` by autograd; ``log_prob_fn`` maps ``(N, ...)`` to ``(N,)``."""
    with torch.enable_grad():
        xt = x_tilde.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_prob_fn(xt).sum(), xt)
    return g


def single_step_denoise(model, x_tilde: Tensor, sigma: float, detach_params: bool = False) -> Tensor:
    """Single-step denoising (paper eq. 7; Tweedie): ``x_bar = x~ + sigma^2 grad log p(x~)``.

    ``detach_params=False`` is the paper's full gradient through the network; ``True`` is the
    official code's variant, which holds each conditional's mixture parameters fixed.
    Never clamped.
    """
    g = score(lambda xt: model.log_prob_noisy(xt, detach_params=detach_params), x_tilde)
    return x_tilde.detach() + sigma**2 * g


def sample(model, kernel: Kernel, n: int, method: str = "two-step", generator=None) -> Tensor:
    """Draw ``n`` samples with one of :data:`SAMPLING_METHODS`.

    ``smoothed``: x~ ~ p(x~); ``single-step``: x~ then the full-gradient denoiser (Gaussian
    kernels only); ``single-step-detached``: the official code's variant; ``two-step``:
    x~ ~ p(x~), then x ~ p(x | x~).
    """
    if method not in SAMPLING_METHODS:
        raise ArsmoothError(f"unknown sampling method {method!r}; choose one of {', '.join(SAMPLING_METHODS)}")
    x_tilde = model.sample_noisy(n, generator=generator)
    return denoise(model, kernel, x_tilde, method, generator)


def denoise(model, kernel: Kernel, x_tilde: Tensor, method: str = "two-step", generator=None) -> Tensor:
    """Map given noisy inputs ``x~`` to clean estimates or samples, by ``method``."""
    if method == "smoothed":
        return x_tilde
    if method in ("single-step", "single-step-detached"):
        if not isinstance(kernel, Gaussian):
            raise ArsmoothError(f"single-step denoising needs a Gaussian kernel, got {kernel.name}")
        return single_step_denoise(model, x_tilde, kernel.std, detach_params=method.endswith("detached"))
    if method == "two-step":
        with torch.no_grad():
            return model.sample_clean(x_tilde, generator=generator)
    raise ArsmoothError(f"unknown denoising method {method!r}; choose one of {', '.join(SAMPLING_METHODS)}")
