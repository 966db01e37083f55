"""Shared fixtures. Tests never need ../shared or a network: real MNIST / Fashion-MNIST files are read
from ``$ARSMOOTH_DATA`` when it holds them (CI sets it), and every check made on them is also made on
small files the fixtures write themselves."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ENABLE = ("set ARSMOOTH_DATA to a folder holding MNIST/raw/ and FashionMNIST/raw/ with the official IDX .gz "
          "files to run this on the real data")


def perturb(model, scale: float = 0.3, seed: int = 0):
    """Add seeded noise to every parameter (layers that start at zero would make checks trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


OWN_NETWORK_DOC = Path(__file__).resolve().parents[1] / "docs" / "own_network.md"


def own_network_blocks() -> list[str]:
    """The Python blocks of ``docs/own_network.md``: the network and its registration, then its use."""
    import re

    return re.findall(r"```python\n(.*?)```", OWN_NETWORK_DOC.read_text(), re.S)


def own_network() -> dict:
    """Run the docs' network block (defines and registers ``masked-cnn``); returns its namespace."""
    ns: dict = {"__name__": "own_network_example"}
    exec(compile(own_network_blocks()[0], str(OWN_NETWORK_DOC), "exec"), ns)
    return ns


def rgb_total_probability(params, nr_mix: int) -> float:
    """Total probability an RGB pixel's discretized mixture ``params`` (``(1, P, 1, 1)``) gives all 256^3 colours."""
    from arsmooth.maths import likelihoods as L

    v = torch.linspace(-1, 1, 256, dtype=torch.double)
    g, b = torch.meshgrid(v, v, indexing="ij")
    total = 0.0
    for r in v:
        c = torch.stack([torch.full_like(g, r.item()), g, b], 0).reshape(3, -1).T.reshape(-1, 3, 1, 1)
        total += L.image_log_prob(c, params.expand(c.shape[0], -1, -1, -1), nr_mix, True).exp().sum().item()
    return total


def real_data_root() -> Path | None:
    """``$ARSMOOTH_DATA`` if it holds the official MNIST files, else None (the real-data tests skip)."""
    root = os.environ.get("ARSMOOTH_DATA")
    if root and (Path(root) / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
        return Path(root)
    return None


def real_fashion_root() -> Path | None:
    root = real_data_root()
    return root if root and (root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file() else None


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same RNG state, on one thread (CI has 2 cores)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def digits28(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits enlarged to 28x28 uint8 (a stand-in for MNIST that needs no file)."""
    from arsmooth.data.image_sets import load_digits

    u8, y = load_digits(split)
    big = torch.nn.functional.interpolate(u8.float(), size=(28, 28), mode="bilinear", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8), y


def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = (0x0800 + arr.ndim).to_bytes(4, "big")
    return magic + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.astype(np.uint8).tobytes()


@pytest.fixture(scope="session")
def _fake_idx_files(tmp_path_factory) -> tuple[Path, dict]:
    """MNIST-format test files (10,000 enlarged digits) under a temporary root, with their sizes and md5s."""
    root = tmp_path_factory.mktemp("fake_idx")
    u8, y = digits28("train")
    reps = -(-10000 // len(y))
    images = u8.repeat(reps, 1, 1, 1)[:10000, 0].numpy()
    labels = y.repeat(reps)[:10000].numpy()
    sums = {}
    for folder in ("MNIST", "FashionMNIST"):
        raw = root / folder / "raw"
        raw.mkdir(parents=True)
        for name, arr in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
            data = gzip.compress(_idx_bytes(arr), mtime=0)
            (raw / name).write_bytes(data)
            sums[(folder, name)] = (len(data), hashlib.md5(data).hexdigest())
    return root, sums


@pytest.fixture(params=["fake", "real"])
def idx_root(request, monkeypatch, _fake_idx_files) -> Path:
    """A data root with MNIST / Fashion-MNIST test files: fixture-made ones (their md5s patched in), or the
    real ones from ``$ARSMOOTH_DATA`` (skipped when absent)."""
    if request.param == "real":
        root = real_fashion_root()
        if root is None:
            pytest.skip(ENABLE)
        return root
    from arsmooth.data import image_sets as im

    root, sums = _fake_idx_files
    monkeypatch.setattr(im, "_IDX_MD5", {**im._IDX_MD5, **sums})
    monkeypatch.setattr(im, "_VERIFIED", set())  # md5s checked in this process: none of these files yet
    return root
