"""Sample-quality metrics with our own feature extractor: FID, KID, Inception-style score, neighbours.

The metrics are torchmetrics' (FID, KID, IS) with the LeNet of :mod:`arsmooth.evaluation.classifier` in place of
Inception (Inception features mean little on 28x28 grey images): penultimate features for FID / KID, class logits
for the score. Names
in every output say so ("FID (LeNet features)"). Every result carries the number of samples, and a
real-vs-real baseline (test images against as many training images) puts the numbers in scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ArsmoothError
from ..runtime.fileio import atomic_write_text
from .classifier import Features, LeNet, Logits

NAMES = {"fid": "FID (LeNet features)", "kid": "KID (LeNet features)", "kid_std": "KID std",
         "is": "Inception-style score (LeNet logits)"}


def _u8(x: Tensor | np.ndarray) -> Tensor:
    x = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))  # a tensor stays where it is
    if x.dtype != torch.uint8:
        raise ArsmoothError(f"metrics take uint8 images, got {x.dtype}")
    return x


@torch.no_grad()
def sample_metrics(fake, real, net: LeNet, seed: int = 0, batch_size: int = 500, score: bool = True) -> dict:
    """FID, KID (mean, std) and IS of uint8 images ``fake`` against ``real``, ``(N, C, H, W)``.

    ``score=False`` (a classifier whose logits are not classes, e.g. the rotation task): IS is None.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    fake, real = _u8(fake), _u8(real)
    if len(fake) < 2 or len(real) < 2:
        raise ArsmoothError(f"metrics need at least 2 images on each side, got {len(fake)} and {len(real)}")
    net = net.eval()
    subset = max(2, min(1000, len(fake) // 2, len(real) // 2))  # KID's subsets: half the samples, at most 1000
    dev = net.conv1.weight.device  # the metrics run where the classifier is
    with torch.device("cpu"):  # torchmetrics makes its states on the default device: say which, then move them
        fid = FrechetInceptionDistance(feature=Features(net), reset_real_features=False)
        kid = KernelInceptionDistance(feature=Features(net), subset_size=subset, subsets=50, reset_real_features=False)
        incep = InceptionScore(feature=Logits(net), splits=10 if len(fake) >= 100 else 1) if score else None
    fid, kid, incep = fid.to(dev), kid.to(dev), (incep.to(dev) if incep is not None else None)
    for side, imgs in (("real", real), ("fake", fake)):
        for i in range(0, len(imgs), batch_size):
            b = imgs[i : i + batch_size].to(dev)
            fid.update(b, real=side == "real")
            kid.update(b, real=side == "real")
            if side == "fake" and incep is not None:
                incep.update(b)
    torch.manual_seed(seed)  # KID subsets and the IS split order use the global generator
    k_mean, k_std = kid.compute()
    is_mean = None if incep is None else float(incep.compute()[0])
    return {"fid": float(fid.compute()), "kid": float(k_mean), "kid_std": float(k_std), "is": is_mean,
            "n_samples": len(fake), "n_real": len(real), "kid_subset_size": subset}


def real_baseline(test_u8, train_u8, n: int, net: LeNet, net_sha: str, cache_dir: str | Path | None = None,
                  seed: int = 0, score: bool = True) -> dict:
    """Metrics of ``n`` test images against ``n`` random training images (the floor a model can reach).

    Computed once per dataset size and classifier and cached as JSON in ``cache_dir``.
    """
    subset = max(2, min(1000, n // 2))
    path = Path(cache_dir) / f"real_baseline_{n}_kid{subset}_{net_sha[:12]}.json" if cache_dir else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train_u8), generator=g)[:n]
    res = sample_metrics(_u8(train_u8)[idx], _u8(test_u8)[:n], net, seed, score=score)
    if path is not None:
        atomic_write_text(path, json.dumps(res, indent=1) + "\n")
    return res


@torch.no_grad()
def nearest(samples: Tensor, train: Tensor, k: int = 5, embed=None, batch_size: int = 250) -> Tensor:
    """Indices ``(N, k)`` of the ``k`` training images nearest each sample, in l2 of ``embed`` (pixels if None)."""
    f = embed or (lambda x: x.float().flatten(1))
    ref = torch.cat([f(train[i : i + 2000]) for i in range(0, len(train), 2000)])
    out = []
    for i in range(0, len(samples), batch_size):
        d = torch.cdist(f(samples[i : i + batch_size]), ref)
        out.append(d.topk(k, largest=False).indices.cpu())
    return torch.cat(out)


INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # what torch-fidelity downloads for FID


def check_inception(weights_path: str | Path) -> None:
    """Stop with one line, before any work, unless torch-fidelity and the Inception weights file are there."""
    if not Path(weights_path).is_file():
        raise ArsmoothError(f"no Inception weights at {weights_path}: the standard metrics need torch-fidelity's "
                            f"{INCEPTION_FILE} (from its v0.2.0 release); download it on a machine with network "
                            "and pass its path")
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        raise ArsmoothError("Inception metrics need torch-fidelity: pip install 'arsmooth[inception]'")


@torch.no_grad()
def inception_metrics(fake, real, weights_path: str | None = None, batch_size: int = 100) -> dict:
    """The standard Inception FID / KID / IS for RGB data (uint8 ``(N, 3, H, W)``).

    Needs the optional extra ``pip install 'arsmooth[inception]'`` (torch-fidelity) and the Inception
    weights, either already in torch-fidelity's cache or given as ``weights_path``; nothing else
    downloads here, and a missing piece gives one clear error.
    """
    fake, real = _u8(fake), _u8(real)
    if fake.shape[1] != 3 or real.shape[1] != 3:
        raise ArsmoothError("Inception metrics are for RGB images; 1-channel data use sample_metrics with our LeNet")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance

        kw = {"feature_extractor_weights_path": weights_path} if weights_path else {}
        fid = FrechetInceptionDistance(feature=2048, **kw)
        kid = KernelInceptionDistance(subset_size=max(2, min(1000, len(fake) // 2, len(real) // 2)), **kw)
        score = InceptionScore(**kw)
    except ModuleNotFoundError:
        raise ArsmoothError("Inception metrics need torch-fidelity: pip install 'arsmooth[inception]'") from None
    except (OSError, RuntimeError) as e:  # no weights in the cache and no network
        raise ArsmoothError(f"Inception weights are not available ({type(e).__name__}); put the FID Inception "
                            "weights file somewhere and pass its path") from None
    for i in range(0, len(real), batch_size):
        fid.update(real[i : i + batch_size], real=True)
        kid.update(real[i : i + batch_size], real=True)
    for i in range(0, len(fake), batch_size):
        fid.update(fake[i : i + batch_size], real=False)
        kid.update(fake[i : i + batch_size], real=False)
        score.update(fake[i : i + batch_size])
    k_mean, k_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(k_mean), "kid_std": float(k_std),
            "is": float(score.compute()[0]), "n_samples": len(fake), "n_real": len(real)}
