"""Mixtures of logistics: continuous (for smoothed data) and discretized (for 8-bit data).

Pure functions of distribution parameters; networks produce the parameters, samplers and the
training loop call these. Conventions:

* scalar mixtures: ``logit_pi, mu, log_s`` share a shape ``(..., K)``, the value ``x`` has shape
  ``(...)`` and the result has shape ``(...)``;
* log-scales are clamped below at ``LOG_SCALE_MIN`` (-7), as in PixelCNN++ and the paper's code;
* continuous log density of one logistic: ``z - log s - 2 softplus(z)``, ``z = (x - mu) / s``
  (Salimans et al. 2017); mixtures combine components with log-softmax and log-sum-exp.

Image parameters follow PixelCNN++ (Salimans et al. 2017): a tensor ``(B, P, H, W)`` with
``P = K * (1 + 3 C)`` for ``C = 1`` (logits, means, log-scales) and ``P = 10 K`` for ``C = 3``
(logits, 3 means, 3 log-scales, 3 coupling coefficients through tanh), channel coupling
``mean_G += c0 x_R`` and ``mean_B += c1 x_R + c2 x_G``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_SCALE_MIN = -7.0


def _z(x: Tensor, mu: Tensor, log_s: Tensor) -> tuple[Tensor, Tensor]:
    log_s = log_s.clamp(min=LOG_SCALE_MIN)
    return (x.unsqueeze(-1) - mu) * torch.exp(-log_s), log_s


# ---------------------------------------------------------------- continuous scalar mixtures
def logistic_log_pdf(x: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
    """Per-component log density, shape ``(..., K)`` for ``x`` of shape ``(...)``."""
    z, log_s = _z(x, mu, log_s)
    return z - log_s - 2.0 * F.softplus(z)


def mixture_log_prob(x: Tensor, logit_pi: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
    """Log density of a continuous mixture of logistics."""
    return torch.logsumexp(F.log_softmax(logit_pi, -1) + logistic_log_pdf(x, mu, log_s), -1)


def mixture_cdf(x: Tensor, logit_pi: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
    """CDF of a continuous mixture of logistics."""
    z, _ = _z(x, mu, log_s)
    return (torch.softmax(logit_pi, -1) * torch.sigmoid(z)).sum(-1)


def draw(dist: str, shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``torch.rand`` (``dist="uniform"``) or ``torch.randn`` (``"normal"``) of ``shape``, in ``like``'s dtype and
    on its device, from ``generator``: drawn where the generator lives and moved to ``like``'s device, so a
    CPU generator gives the same numbers whichever device the model runs on (None: ``like``'s device's own)."""
    dev = like.device if generator is None else generator.device
    out = (torch.rand if dist == "uniform" else torch.randn)(shape, generator=generator, device=dev, dtype=like.dtype)
    return out if out.device == like.device else out.to(like.device)


def sample_component(logit_pi: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Index of one component per mixture, drawn by the Gumbel-max trick; shape ``(...)``."""
    u = draw("uniform", logit_pi.shape, generator, logit_pi)
    u = u.clamp(1e-6, 1.0 - 1e-6)
    return (logit_pi - torch.log(-torch.log(u))).argmax(-1)


def logistic_noise(shape, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard logistic noise ``log u - log(1 - u)``."""
    u = draw("uniform", shape, generator, like).clamp(1e-6, 1.0 - 1e-6)
    return torch.log(u) - torch.log1p(-u)


def _pick(t: Tensor, k: Tensor) -> Tensor:
    return torch.gather(t, -1, k.unsqueeze(-1)).squeeze(-1)


def mixture_sample(
    logit_pi: Tensor, mu: Tensor, log_s: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Exact sample: pick a component, then ``mu + s (log u - log(1 - u))``."""
    k = sample_component(logit_pi, generator)
    m, ls = _pick(mu, k), _pick(log_s, k).clamp(min=LOG_SCALE_MIN)
    return m + torch.exp(ls) * logistic_noise(m.shape, m, generator)


# ---------------------------------------------------------------- discretized scalar mixtures
def discretized_logistic_log_prob_components(
    x: Tensor, mu: Tensor, log_s: Tensor, n_bins: int = 256, low: float = -1.0, high: float = 1.0
) -> Tensor:
    """Per-component log probability of the bin holding ``x``, shape ``(..., K)``.

    ``x`` holds bin centres ``low + i * (high - low) / (n_bins - 1)``; the first and last bins
    extend to -inf and +inf (PixelCNN++ edge cases), so the bins of every component sum to one.
    """
    half = 0.5 * (high - low) / (n_bins - 1)
    log_s = log_s.clamp(min=LOG_SCALE_MIN)
    centred = x.unsqueeze(-1) - mu
    inv_s = torch.exp(-log_s)
    plus_in = inv_s * (centred + half)
    min_in = inv_s * (centred - half)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): left edge bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): right edge bin
    # log(sigmoid(a) - sigmoid(b)) computed stably: sigma(a) - sigma(b) with a > b
    log_mid = _log_sigmoid_diff(plus_in, min_in)
    edge_lo = x.unsqueeze(-1) <= low + half * 0.5
    edge_hi = x.unsqueeze(-1) >= high - half * 0.5
    return torch.where(edge_lo, log_cdf_plus, torch.where(edge_hi, log_one_minus_cdf_min, log_mid))


def _log_sigmoid_diff(a: Tensor, b: Tensor) -> Tensor:
    """``log(sigmoid(a) - sigmoid(b))`` for ``a > b``, accurate in both tails.

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)).
    """
    return F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1((b - a).clamp(max=-1e-12)))


def discretized_mixture_log_prob(
    x: Tensor,
    logit_pi: Tensor,
    mu: Tensor,
    log_s: Tensor,
    n_bins: int = 256,
    low: float = -1.0,
    high: float = 1.0,
) -> Tensor:
    """Log probability of a discretized mixture of logistics (one scalar per entry of ``x``)."""
    comp = discretized_logistic_log_prob_components(x, mu, log_s, n_bins, low, high)
    return torch.logsumexp(F.log_softmax(logit_pi, -1) + comp, -1)


def quantize(x: Tensor, n_bins: int = 256, low: float = -1.0, high: float = 1.0) -> Tensor:
    """Nearest bin centre, clamped into ``[low, high]``."""
    step = (high - low) / (n_bins - 1)
    return (torch.round((x - low) / step) * step + low).clamp(low, high)


# ---------------------------------------------------------------- image parameters (PixelCNN++)
def image_param_channels(channels: int, nr_mix: int) -> int:
    """Number of parameter channels a network must output for ``channels`` colour channels."""
    if channels == 1:
        return 3 * nr_mix
    if channels == 3:
        return 10 * nr_mix
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def split_image_params(params: Tensor, channels: int, nr_mix: int):
    """``(B, P, H, W)`` -> ``logit_pi (B, H, W, K)``, ``mu, log_s, coeff (B, C, H, W, K)``.

    ``coeff`` is ``None`` for one channel; for three it holds tanh'd ``(c0, c1, c2)``.
    """
    expected = image_param_channels(channels, nr_mix)
    if params.shape[1] != expected:
        raise ValueError(f"expected {expected} parameter channels, got {params.shape[1]}")
    b, _, h, w = params.shape
    p = params.permute(0, 2, 3, 1)  # (B, H, W, P)
    logit_pi = p[..., :nr_mix]
    rest = p[..., nr_mix:].reshape(b, h, w, -1, nr_mix)  # (B, H, W, groups, K)
    mu = rest[..., :channels, :].permute(0, 3, 1, 2, 4)
    log_s = rest[..., channels : 2 * channels, :].permute(0, 3, 1, 2, 4).clamp(min=LOG_SCALE_MIN)
    coeff = None
    if channels == 3:
        coeff = torch.tanh(rest[..., 6:9, :]).permute(0, 3, 1, 2, 4)
    return logit_pi, mu, log_s, coeff


def coupled_means(x: Tensor, mu: Tensor, coeff: Tensor | None) -> Tensor:
    """Means after channel coupling, given the (true or sampled) values ``x`` ``(B, C, H, W)``."""
    if coeff is None:
        return mu
    xr, xg = x[:, 0].unsqueeze(-1), x[:, 1].unsqueeze(-1)
    m_r = mu[:, 0]
    m_g = mu[:, 1] + coeff[:, 0] * xr
    m_b = mu[:, 2] + coeff[:, 1] * xr + coeff[:, 2] * xg
    return torch.stack([m_r, m_g, m_b], 1)


def image_log_prob(
    x: Tensor, params: Tensor, nr_mix: int, discretized: bool, n_bins: int = 256
) -> Tensor:
    """Per-pixel log likelihood ``(B, H, W)`` of images ``x`` ``(B, C, H, W)`` in [-1, 1] units.

    ``discretized=True``: PixelCNN++'s discretized mixture (x must hold 8-bit bin centres);
    ``discretized=False``: the continuous mixture used for smoothed data (never clamped).
    Channels share the mixture component; within a component they are independent given the
    coupled means, so the joint over channels is a mixture of products.
    """
    channels = x.shape[1]
    logit_pi, mu, log_s, coeff = split_image_params(params, channels, nr_mix)
    means = coupled_means(x, mu, coeff)  # (B, C, H, W, K)
    if discretized:
        comp = discretized_logistic_log_prob_components(x, means, log_s, n_bins)
    else:
        comp = logistic_log_pdf(x, means, log_s)
    return torch.logsumexp(F.log_softmax(logit_pi, -1) + comp.sum(1), -1)


def image_sample(
    params: Tensor,
    channels: int,
    nr_mix: int,
    discretized: bool,
    generator: torch.Generator | None = None,
    n_bins: int = 256,
) -> Tensor:
    """Exact sample of every pixel's mixture, ``(B, C, H, W)``.

    One component per pixel, then the channels in order from their coupled logistic; this is
    exact ancestral sampling of the joint mixture. Discretized: each channel is rounded to its
    bin (with edge bins) before it conditions the next one, which is exactly the discretized law.
    """
    logit_pi, mu, log_s, coeff = split_image_params(params, channels, nr_mix)
    k = sample_component(logit_pi, generator)  # (B, H, W)
    kk = k.unsqueeze(1).expand(-1, channels, -1, -1)
    m, ls = _pick(mu, kk), _pick(log_s, kk)  # (B, C, H, W)
    noise = logistic_noise(m.shape, m, generator)
    out = []
    for c in range(channels):
        mean = m[:, c]
        if c >= 1:
            mean = mean + _pick(coeff[:, c - 1], k) * out[0]
        if c == 2:
            mean = mean + _pick(coeff[:, 2], k) * out[1]
        v = mean + torch.exp(ls[:, c]) * noise[:, c]
        out.append(quantize(v, n_bins) if discretized else v)
    return torch.stack(out, 1)


def bits_per_dim(nll_nats: Tensor | float, dims: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example into bits per dimension."""
    return nll_nats / (dims * math.log(2.0))
