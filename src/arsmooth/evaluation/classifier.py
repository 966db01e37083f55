"""A small LeNet-style digit / clothing classifier: the feature extractor of our sample metrics.

Inception features mean little on 28x28 grey digits, so FID, KID and the
Inception-style score of 1-channel datasets use this network instead: its penultimate layer
(``num_features`` wide) for FID / KID, its class logits for the score. Every number computed with it
is named after it ("FID (LeNet features)") and is not comparable with Inception-based figures.

Data without labels (CelebA) get the same network trained to tell which of four rotations (0, 90, 180,
270 degrees) an image was turned by, a self-supervised task (Gidaris et al. 2018): its features serve FID
and KID, and no Inception-style score is reported, since rotation logits say nothing about classes.

Training is deterministic on CPU (fixed seed, fixed data order, one thread); the saved file records
its SHA-256 and test accuracy so that a metric can say which extractor produced it.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ArsmoothError
from ..runtime.fileio import atomic_write
from ..training.loop import Loop

FORMAT = "arsmooth-classifier"


class LeNet(nn.Module):
    """conv5-20, pool, conv5-40, pool, fc 256, fc 10 on ``(B, 1, 28, 28)`` images.

    Accepts uint8 images (0..255) or floats in [-1, 1]; ``features`` is the penultimate layer.
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, num_features: int = 256, size: int = 28):
        super().__init__()
        self.channels, self.size, self.num_features = channels, size, num_features
        self.conv1 = nn.Conv2d(channels, 20, 5, padding=2)
        self.conv2 = nn.Conv2d(20, 40, 5, padding=2)
        self.fc1 = nn.Linear(40 * (size // 4) ** 2, num_features)
        self.fc2 = nn.Linear(num_features, num_classes)

    def _prep(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.size, self.size):
            raise ArsmoothError(f"the classifier expects images (B, {self.channels}, {self.size}, {self.size}), "
                                f"got {tuple(x.shape)}")
        x = x.to(self.conv1.weight.device)  # host images in, the network's device out
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1.0
        return x.to(self.conv1.weight.dtype)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(self._prep(x))), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))  # (B, num_features)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.fc2(self.features(x))


class Features(nn.Module):
    """The classifier's penultimate features, in the form torchmetrics takes as a custom extractor."""

    def __init__(self, net: LeNet):
        super().__init__()
        self.net, self.num_features = net, net.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)


class Logits(nn.Module):
    """The classifier's logits (for the Inception-style score)."""

    def __init__(self, net: LeNet):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@torch.no_grad()
def accuracy(net: LeNet, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    net.eval()
    right = sum(int((net(images[i : i + batch_size]).argmax(1).cpu() == labels[i : i + batch_size].cpu()).sum())
                for i in range(0, len(images), batch_size))
    return right / len(images)


ROTATIONS = 4  # the classes of the self-supervised task: quarter turns


def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Image ``i`` of ``x (N, C, S, S)`` turned by ``k[i]`` quarter turns (``torch.rot90`` on the last two dims)."""
    out = x.clone()
    for q in range(1, ROTATIONS):
        sel = k == q
        out[sel] = torch.rot90(x[sel], q, dims=(-2, -1))
    return out


def all_rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """Every image of ``x`` in each of the four rotations, with the rotation as its label (a test set)."""
    k = torch.arange(ROTATIONS).repeat_interleave(len(x))
    return rotate(x.repeat(ROTATIONS, 1, 1, 1), k), k


class _FitClassifier(Loop):
    """The shared loop (:class:`arsmooth.training.loop.Loop`) over shuffled, shifted (and for the rotation task
    turned) mini-batches; Adam with a cosine-decayed learning rate."""

    def __init__(self, net: LeNet, x: Tensor, y: Tensor | None, epochs: int, batch_size: int, lr: float, seed: int):
        self.net, self.x, self.y, self.bs = net, x, y, batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.Adam(net.parameters(), lr)
        self.steps = epochs * math.ceil(len(x) / batch_size)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / self.steps)))
        self.perm, self.pos = None, len(x)

    def batch(self) -> tuple[Tensor, Tensor]:
        x, g = self.x, self.g
        if self.pos >= len(x):  # a new epoch: a new order
            self.perm, self.pos = torch.randperm(len(x), generator=g), 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        if self.y is None:  # the rotation task: a random quarter turn, labelled with it
            yb = torch.randint(0, ROTATIONS, (len(idx),), generator=g)
            xb = rotate(x[idx], yb)
        else:
            xb, yb = x[idx], self.y[idx]
        xb = F.pad(self.net._prep(xb), (2, 2, 2, 2), value=-1.0)
        dy, dx = torch.randint(0, 5, (2,), generator=g).tolist()
        return xb[:, :, dy : dy + x.shape[-2], dx : dx + x.shape[-1]], yb

    def train_step(self, xb: Tensor, yb: Tensor) -> float:
        loss = F.cross_entropy(self.net(xb), yb.to(xb.device))
        self.update(loss)
        return loss.item()

    def after_step(self, bar) -> None:
        bar.set_postfix(loss=f"{self.running:.3f}")


def fit(train: tuple[Tensor, Tensor | None], test: tuple[Tensor, Tensor | None], *, epochs: int = 4,
        batch_size: int = 128, lr: float = 1e-3, seed: int = 0, progress: bool = True,
        device: torch.device | str = "cpu") -> tuple[LeNet, dict]:
    """Train a LeNet on uint8 images ``(N, C, S, S)`` with labels; Adam, cosine-decayed learning rate.

    Random shifts of up to 2 pixels augment the data (padding with the background value -1). Labels
    ``None``: the rotation task (each image turned by a random quarter turn, labelled with it).
    """
    x, y = train
    rotation = y is None
    if rotation and x.shape[-1] != x.shape[-2]:
        raise ArsmoothError(f"the rotation task needs square images, got {tuple(x.shape[-2:])}")
    torch.manual_seed(seed)
    net = LeNet(channels=x.shape[1], size=x.shape[-1], num_classes=ROTATIONS if rotation else 10).to(device)
    loop = _FitClassifier(net, x, y, epochs, batch_size, lr, seed)
    t0 = time.perf_counter()
    net.train()
    with tqdm(total=loop.steps, desc="fitting classifier", disable=not progress) as bar:
        loop.run(loop.steps, bar)
    test = all_rotations(test[0]) if rotation else test
    info = {"test_accuracy": accuracy(net, *test), "task": "rotation" if rotation else "classes", "epochs": epochs,
            "batch_size": batch_size, "lr": lr,
            "seed": seed, "train_images": len(x), "train_seconds": round(time.perf_counter() - t0, 1)}
    return net.eval().cpu(), info


def save(net: LeNet, info: dict, path: str | Path) -> str:
    """Write the classifier atomically; returns the SHA-256 of its weights."""
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    digest = weights_sha256(state)
    blob = {"format": FORMAT, "state": state, "info": {**info, "weights_sha256": digest},
            "arch": {"channels": net.channels, "size": net.size, "num_features": net.num_features,
                     "num_classes": net.fc2.out_features}}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    return digest


def weights_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load(path: str | Path) -> tuple[LeNet, dict]:
    """Load a classifier (``weights_only``); checks the recorded SHA-256 of its weights."""
    path = Path(path)
    if not path.is_file():
        raise ArsmoothError(f"no classifier at {path}; train one with: arsmooth fit-classifier --dataset NAME")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = LeNet(**blob["arch"])
        net.load_state_dict(blob["state"])
        ok = blob["format"] == FORMAT
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ArsmoothError(f"{path} is not a classifier written by arsmooth ({type(e).__name__})") from None
    if not ok or weights_sha256(blob["state"]) != blob["info"].get("weights_sha256"):
        raise ArsmoothError(f"{path} is damaged: its weights do not match their recorded SHA-256")
    return net.eval(), blob["info"]


DEFAULT_EPOCHS = {"mnist": 3, "fashion": 10, "cifar10": 15, "celeba": 5, "digits": 20, "folder": 20}


def fit_dataset(dataset: str, data_root=None, epochs: int | None = None, seed: int = 0,
                progress: bool = True, data=None, device: torch.device | str = "cpu") -> tuple[LeNet, dict]:
    """The feature extractor of ``dataset`` (mnist, fashion, cifar10 (the same LeNet on 3 x 32 x 32: far from
    Inception, and named so), celeba or celeba:<folder> (the rotation task); digits for quick runs), on its
    full training set. ``folder:PATH`` (your own images, no labels) takes its image settings from ``data``
    (:class:`~arsmooth.runtime.config.DataSettings`: size, channels, crop, test share) and learns the rotation task,
    as CelebA does."""
    from ..data.image_sets import load_configured, load_dataset

    base = dataset.split(":", 1)[0]  # celeba:<folder> takes celeba's epochs
    if base not in DEFAULT_EPOCHS:
        raise ArsmoothError(f"fit-classifier handles {', '.join(DEFAULT_EPOCHS)} and folder:PATH, got {dataset!r}")
    if base == "folder":
        if data is None or not data.dataset.startswith("folder:"):
            raise ArsmoothError(f"{dataset} needs its image settings (data.size, data.channels)")
        train, test = load_configured(data, "train"), load_configured(data, "test")
        dataset = data.dataset  # the absolute path
    else:
        train = load_dataset(dataset, "train", data_root)
        test = load_dataset(dataset, "test", data_root)
    net, info = fit(train, test, epochs=epochs or DEFAULT_EPOCHS[base], seed=seed, progress=progress, device=device)
    return net, {**info, "dataset": dataset}
