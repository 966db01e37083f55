"""Contracts that every model of a kind keeps, each written once and run over all of them: a density
integrates to one (for every context), and every parameter takes part in the loss."""

import pytest
import torch

from arsmooth.maths import likelihoods as L
from arsmooth.models.image_model import ImageModel, SmoothedImageModel
from arsmooth.models.made import MADE, StackedMADE
from arsmooth.models.realnvp import RealNVP
from arsmooth.networks.pixelcnnpp import PixelCNNpp
from arsmooth.runtime.config import ModelSettings, SmoothingSettings
from conftest import perturb


def _realnvp(dim, context_dim=0, **kw):
    return perturb(RealNVP(dim=dim, context_dim=context_dim, **{"n_layers": 4, "hidden": 16, **kw}).double())


# name: (random-weight model, fixed context or None, grid half-width, grid points per axis, tolerance)
DENSITIES_2D = {
    "MADE": (lambda: perturb(MADE(dim=2, hidden=(32, 32), n_mix=3)).double(), None, 30.0, 1201, 2e-3),
    "RealNVP": (lambda: _realnvp(2), None, 12.0, 481, 1e-2),
    "RealNVP given a context": (lambda: _realnvp(2, 2), (0.7, -1.3), 12.0, 481, 1e-2),
    "RealNVP given an embedded context": (lambda: _realnvp(2, 2, context_embed=3), (0.7, -1.3), 12.0, 481, 1e-2),
}


@pytest.mark.parametrize("name", sorted(DENSITIES_2D))
@pytest.mark.slow
def test_every_2d_density_integrates_to_one(name):
    make, context, half, n, tol = DENSITIES_2D[name]
    model = make()
    v = torch.linspace(-half, half, n, dtype=torch.float64)  # wide: random weights give heavy tails
    g1, g2 = torch.meshgrid(v, v, indexing="ij")
    pts = torch.stack([g1.flatten(), g2.flatten()], 1)
    args = () if context is None else (torch.tensor([context], dtype=torch.float64).expand(len(pts), 2),)
    with torch.no_grad():
        p = model.log_prob(pts, *args).exp().reshape(n, n)
    assert torch.trapezoid(torch.trapezoid(p, v), v).item() == pytest.approx(1.0, abs=tol)


def _image_loss(model, channels):
    def loss():
        x = L.quantize(torch.rand(2, channels, 8, 8, dtype=torch.float64) * 2 - 1)
        if isinstance(model, PixelCNNpp):
            return -L.image_log_prob(x, model(x), 2, discretized=True).mean()
        if model.kind == "smoothed":
            return model.loss(x, torch.randn_like(x))
        x_tilde = x + 0.3 * torch.randn_like(x)
        return {"baseline": lambda: model.loss(x), "stage1": lambda: model.loss(x_tilde),
                "stage2": lambda: model.loss(x, context=x_tilde)}[model.kind]()
    return loss


def _image(kind, channels=1, **kw):
    torch.manual_seed(1)
    learn = kw.pop("learn_sigma", False)
    m = ModelSettings(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout=0.5, **kw)
    size = dict(channels=channels, image_size=(8, 8))
    if kind == "smoothed":
        return SmoothedImageModel(m, SmoothingSettings(sigma=0.3, learn_sigma=learn), **size).double()
    return ImageModel(kind, m, **size).double()


def _gradient_cases():
    made = MADE(dim=3, hidden=(16,), n_mix=2)
    yield "MADE", made, lambda: made.log_prob(torch.randn(8, 3)).mean()
    stacked = StackedMADE(dim=2, hidden=(16,), n_mix=2)
    yield "smoothed MADE", stacked, lambda: -sum(lp.mean() for lp in stacked.log_prob_pair(torch.randn(8, 2),
                                                                                             torch.randn(8, 2)))
    for context_dim, embed in ((0, 0), (3, 0), (3, 2)):
        flow = _realnvp(3, context_dim, n_hidden_layers=2, context_embed=embed)
        c = torch.randn(32, context_dim, dtype=torch.float64) if context_dim else None
        yield f"RealNVP (context {context_dim}, embedding {embed})", flow, \
            (lambda f=flow, c=c: f.log_prob(torch.randn(32, 3, dtype=torch.float64), c).mean())
    for channels in (1, 3):
        torch.manual_seed(1)
        net = PixelCNNpp(channels, ModelSettings(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout=0.5),
                         spatial_condition=False).double()
        yield f"PixelCNN++ ({channels} channel)", net.train(), _image_loss(net, channels)
    for kind, kw in (("baseline", {}), ("stage1", {}), ("stage2", {}), ("stage2", {"stage2_conditioning": "spatial"}),
                     ("smoothed", {"learn_sigma": True, "stage2_conditioning": "spatial"})):
        model = _image(kind, **kw).train()
        yield f"image model {kind} {kw}", model, _image_loss(model, 1)


@pytest.mark.parametrize("case", list(range(12)))
def test_every_parameter_of_every_model_gets_a_gradient(case):
    cases = list(_gradient_cases())
    assert len(cases) == 12  # a new model joins this list, and the count above
    name, model, loss = cases[case]
    loss().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname} got no gradient"
