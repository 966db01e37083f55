"""The fast sampler (arsmooth.networks.sampling) against the network and the obvious sampler."""

import pytest
import torch

from arsmooth.models.image_model import ImageModel
from arsmooth.networks.pixelcnnpp import PixelCNNpp
from arsmooth.networks.sampling import _Graph
from arsmooth.runtime.config import ModelSettings


def _perturb(m: torch.nn.Module, seed: int) -> None:
    """Random weights further from init, so every path of the network matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("channels,h,w,nr_resnet", [(1, 8, 8, 1), (3, 8, 12, 2), (1, 16, 4, 0), (3, 4, 4, 1)])
def test_cached_graph_equals_network(channels, h, w, nr_resnet):
    net = PixelCNNpp(channels, ModelSettings(nr_resnet=nr_resnet, nr_filters=6, nr_logistic_mix=2, dropout=0.0),
                     spatial_condition=False)
    net = net.double().eval()
    _perturb(net, 0)
    x = torch.rand(3, channels, h, w, dtype=torch.double) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(_Graph(net, h, w).forward(x), net(x), rtol=0, atol=1e-12)


def _model(kind, channels, seed=0):
    m = ImageModel(kind, ModelSettings(nr_resnet=1, nr_filters=6, nr_logistic_mix=3, dropout=0.0), channels=channels,
                   image_size=(8, 8)).double()
    _perturb(m, seed)
    return m


def _both(m, **kw):
    out = []
    for fast in (False, True):
        out.append(m.sample(generator=torch.Generator().manual_seed(7), fast=fast, **kw))
    return out


@pytest.mark.parametrize("kind", ["baseline", "stage1", "stage2"])
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_sampler_gives_the_obvious_samples(kind, channels):
    m = _model(kind, channels)
    if kind == "stage2":
        ctx = torch.rand(3, channels, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.double) * 2 - 1
        slow, fast = _both(m, context=ctx)
    else:
        slow, fast = _both(m, n=3)
    assert slow.abs().sum() > 0
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["stage1", "stage2"])
def test_fast_sampler_with_known_rows(kind):
    m = _model(kind, 1, seed=3)
    gen = torch.Generator().manual_seed(2)
    known = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.double) * 2 - 1
    ctx = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.double) * 2 - 1 if kind == "stage2" else None
    slow, fast = _both(m, known=known, start_row=5, context=ctx)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    assert torch.equal(fast[:, :, :5], known[:, :, :5])


@pytest.mark.slow
def test_fast_sampler_float32_matches():
    m = ImageModel("stage1", ModelSettings(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, dropout=0.0), channels=3,
                   image_size=(8, 8))
    slow, fast = _both(m, n=2)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_the_fast_sampler_walks_the_networks_public_graph_with_its_own_maths():
    """The cached graph is built by PixelCNNpp.walk over the typed GraphOps, and the gated block's maths (concat-ELU,
    gate) is the network's own functions: the sampler writes none of it again."""
    from pathlib import Path

    from arsmooth.networks import pixelcnnpp as P
    from arsmooth.networks import sampling
    from arsmooth.runtime.config import ModelSettings

    net = P.PixelCNNpp(1, ModelSettings(nr_resnet=1, nr_filters=4, nr_logistic_mix=1), spatial_condition=False)
    graph = sampling._Graph(net, 4, 4)
    assert isinstance(graph, P.GraphOps) and isinstance(P._TensorOps(None, None), P.GraphOps)
    src = Path(sampling.__file__).read_text()
    assert "sigmoid" not in src and "[x, -x]" not in src, "the sampler re-derives the block's maths"
    assert not hasattr(P.PixelCNNpp, "_walk") and all(hasattr(m, "geometry") for m in (net.u_init, net.ul_init_left))
