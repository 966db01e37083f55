"""Linear probes on a network's blocks: how much class information each block's features hold.

Every block the network names (``net.probe_layers()``: PixelCNN++'s gated resnet blocks of the ``ul``
stream, down pass then up pass; the transformer's blocks) is hooked; its output, as a ``(B, F, h, w)``
map (``net.feature_map``, where the network's blocks output something else), is averaged over positions into
one vector per image (``grid=1``), or over each cell of a ``grid x grid``
partition of the image (which keeps where a stroke is), and a multinomial logistic regression (L-BFGS on
standardised features, small L2 penalty) is fit on training images and scored on test images.
Stage 1 sees perturbed images x~; stage 2 x with x~ (stacked or spatial); the baseline clean x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_map(net, out: Tensor) -> Tensor:
    return net.feature_map(out) if hasattr(net, "feature_map") else out


@torch.no_grad()
def block_features(model, x: Tensor, kernel=None, generator=None, batch_size: int = 100,
                   grids: tuple[int, ...] = (1,)) -> dict[int, list[Tensor]]:
    """Output of every probed block averaged over each cell of a ``g x g`` grid, for each ``g`` in ``grids``:
    ``{g: [(N, F * g * g) per block]}`` (``g = 1``: the position average).

    Each block's features are written into one ``(N, F * g * g)`` tensor allocated at the first batch: appending
    a small tensor per batch between the large, freed activations fragments the heap, and resident memory then
    grows by tens of megabytes a batch (0.6 MB per image for the MNIST transformer, 36 GB over 60,000 images)."""
    blocks = model.net.probe_layers()
    store: dict[int, list[Tensor | None]] = {g: [None] * len(blocks) for g in grids}
    rows = [0, 0]  # the batch being written: first and last row

    def hook(k, out):
        out = _as_map(model.net, out)
        for g in grids:
            pooled = F.adaptive_avg_pool2d(out, g).flatten(1)
            if store[g][k] is None:
                store[g][k] = torch.empty(len(x), pooled.shape[1], dtype=pooled.dtype)
            store[g][k][rows[0] : rows[1]] = pooled

    hooks = [b.register_forward_hook(lambda _m, _i, out, k=k: hook(k, out)) for k, b in enumerate(blocks)]
    model.eval()
    dev = next(model.parameters()).device
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev)
            rows[:] = [i, i + len(xb)]
            xt = kernel.sample(xb, generator) if model.objective.noised else None
            inp, context = model.objective.inputs(xb, xt)
            model.params(inp, context)
    finally:
        for h in hooks:
            h.remove()
    return {g: list(per_block) for g, per_block in store.items()}


def linear_probe(f_train: Tensor, y_train: Tensor, f_test: Tensor, y_test: Tensor, l2: float = 1e-3,
                 iters: int = 200) -> float:
    """Test accuracy of a logistic regression fit on standardised features."""
    mu, sd = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    n_cls = int(y_train.max()) + 1
    w = torch.zeros(a.shape[1], n_cls, requires_grad=True)
    c = torch.zeros(n_cls, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + c, y_train) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + c).argmax(1) == y_test).float().mean())


def probe_accuracies(model, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], kernel=None,
                     seed: int = 0, grids: tuple[int, ...] = (1,)) -> dict[int, list[float]]:
    """Probe accuracy of every probed block of ``model``, in network order, for each pooling grid."""
    g = torch.Generator().manual_seed(seed)
    ftr = block_features(model, train[0], kernel, g, grids=grids)
    fte = block_features(model, test[0], kernel, g, grids=grids)
    return {k: [linear_probe(a, train[1], b, test[1]) for a, b in zip(ftr[k], fte[k])] for k in grids}
