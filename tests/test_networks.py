"""One contract, run over every autoregressive image network arsmooth ships (PixelCNN++, the causal pixel
transformer) and the user's network of ``docs/own_network.md``, unconditioned and as a stage 2 that sees
x~: causality by exact Jacobian zeros, stage 2's dependence on x~ around each position, each pixel's
distribution sums to one, every parameter gets a gradient, and the fast sampler equals the obvious one."""

import pytest
import torch

from arsmooth.maths import likelihoods as L
from arsmooth.models.image_model import ImageModel
from arsmooth.runtime.config import ModelSettings
from conftest import own_network, perturb, rgb_total_probability

H, W = 4, 5  # small and not square: rows and columns cannot be confused

# name: the ModelSettings of a small network of that family (H and W above; PixelCNN++ needs multiples of 4)
FAMILIES = {
    "pixelcnnpp": (dict(nr_resnet=1, nr_filters=6, nr_logistic_mix=2, dropout=0.5), (4, 8)),
    "transformer": (dict(network="transformer", tf_width=16, tf_layers=2, tf_heads=2, tf_encoder_blocks=1,
                         nr_logistic_mix=2, dropout=0.5), (H, W)),
    "masked-cnn": (dict(network="masked-cnn", nr_resnet=2, nr_filters=6, nr_logistic_mix=2), (H, W)),  # the docs'
}


def _model(family: str, kind: str, channels: int, seed: int = 0) -> ImageModel:
    kw, size = FAMILIES[family]
    if family == "masked-cnn":
        own_network()  # registers it, as a user's module would
    torch.manual_seed(seed)
    m = ImageModel(kind, ModelSettings(**kw, stage2_conditioning="spatial"), channels=channels, image_size=size)
    return perturb(m.double(), 0.1, seed).eval()


def _images(b, channels, size, seed):
    g = torch.Generator().manual_seed(seed)
    return L.quantize(torch.rand(b, channels, *size, generator=g, dtype=torch.double) * 2 - 1)


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return request.param


class TestNetworkContract:
    @pytest.mark.parametrize("kind", ["baseline", "stage2"])
    def test_it_declares_the_network_interface(self, family, kind):
        from arsmooth.networks.interface import ARImageNetwork, SupportsIncremental

        net = _model(family, kind, 1).net
        assert isinstance(net, ARImageNetwork)
        assert (net.encoder is not None) == (kind == "stage2")
        assert isinstance(net, SupportsIncremental) == (family == "transformer")  # PixelCNN++: the cached graph

    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("kind", ["baseline", "stage2"])
    def test_exact_jacobian_zeros_at_and_after_each_pixel(self, family, kind, channels):
        m = _model(family, kind, channels)
        size = m.image_size
        x = _images(1, channels, size, 1).requires_grad_(True)
        ctx = _images(1, channels, size, 2) if kind == "stage2" else None
        out = m.params(x, ctx)  # (1, P, H, W)
        n = size[0] * size[1]
        for p in range(n):
            i, j = divmod(p, size[1])
            (g,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
            g = g[0].flatten(1)  # (C, N)
            assert torch.all(g[:, p:] == 0), f"pixel {p} sees itself or a later pixel"
            if j > 0:
                assert g[:, p - 1].abs().sum() > 0, f"pixel {p} does not see the pixel to its left"

    @pytest.mark.parametrize("channels", [1, 3])
    def test_stage2_depends_on_x_tilde_at_and_around_each_position(self, family, channels):
        m = _model(family, "stage2", channels)
        size = m.image_size
        x = _images(1, channels, size, 3)
        ctx = _images(1, channels, size, 4).requires_grad_(True)
        out = m.params(x, ctx)
        for i, j in [(0, 0), (1, 2), (size[0] - 1, size[1] - 1)]:
            (g,) = torch.autograd.grad(out[0, :, i, j].sum(), ctx, retain_graph=True)
            g = g[0].abs().sum(0)  # (H, W)
            assert g[i, j] > 0, "x~ at the position itself is not seen"
            for di, dj in [(1, 0), (-1, 0), (0, 1), (0, -1)]:  # including x~ later in raster order
                a, b = i + di, j + dj
                if 0 <= a < size[0] and 0 <= b < size[1]:
                    assert g[a, b] > 0, f"x~ at {(a, b)} next to {(i, j)} is not seen"

    def test_unconditioned_networks_refuse_a_context_and_stage2_needs_one(self, family):
        from arsmooth.errors import ArsmoothError

        x = _images(1, 1, _model(family, "baseline", 1).image_size, 5)
        with pytest.raises(ArsmoothError):
            _model(family, "baseline", 1).net(x, cond=x)
        with pytest.raises(ArsmoothError):
            _model(family, "stage2", 1).net(x)

    @pytest.mark.parametrize("kind", ["baseline", "stage2"])
    def test_grey_pixel_distribution_sums_to_one(self, family, kind):
        m = _model(family, kind, 1, seed=6)
        size = m.image_size
        x, ctx = _images(1, 1, size, 7), (_images(256, 1, size, 8)[:1].expand(256, -1, -1, -1) if kind == "stage2" else None)
        i, j = 1, 2
        xs = x.repeat(256, 1, 1, 1)
        xs[:, 0, i, j] = torch.linspace(-1, 1, 256, dtype=torch.double)  # every 8-bit value at the pixel
        with torch.no_grad():
            lp = m.pixel_log_prob(xs, context=ctx)[:, i, j]
        assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)

    @pytest.mark.slow
    def test_rgb_pixel_distribution_sums_to_one_over_all_colours(self, family):
        m = _model(family, "baseline", 3, seed=8)
        x = _images(2, 3, m.image_size, 9)
        x[1] = x[0]
        x[1, :, 1, 2] = -x[0, :, 1, 2] - 0.1  # another colour at the pixel itself: its parameters must not move
        with torch.no_grad():
            params = m.params(x)[:, :, 1:2, 2:3]  # (2, P, 1, 1)
        torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)
        assert rgb_total_probability(params[:1], 2) == pytest.approx(1.0, abs=1e-6)

    @pytest.mark.parametrize("kind", ["baseline", "stage1", "stage2"])
    def test_every_parameter_gets_a_gradient(self, family, kind):
        m = _model(family, kind, 3).train()
        x = _images(2, 3, m.image_size, 10)
        xt = x + 0.3 * torch.randn_like(x)
        loss = {"baseline": lambda: m.loss(x), "stage1": lambda: m.loss(xt), "stage2": lambda: m.loss(x, context=xt)}
        loss[kind]().backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"

    @pytest.mark.parametrize("batch", [1, 5])
    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("kind", ["baseline", "stage2"])
    def test_fast_sampler_equals_the_obvious_one(self, family, kind, channels, batch):
        m = _model(family, kind, channels, seed=11)
        size = m.image_size
        ctx = _images(batch, channels, size, 12) if kind == "stage2" else None
        n = None if ctx is not None else batch
        out = [m.sample(n, context=ctx, generator=torch.Generator().manual_seed(7), fast=f) for f in (False, True)]
        assert out[0].abs().sum() > 0
        torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-12)

    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("kind", ["stage1", "stage2"])
    def test_fast_sampler_with_known_rows(self, family, kind, channels):
        m = _model(family, kind, channels, seed=13)
        size = m.image_size
        known = _images(2, channels, size, 14)
        ctx = _images(2, channels, size, 15) if kind == "stage2" else None
        out = [m.sample(known=known, start_row=2, context=ctx, generator=torch.Generator().manual_seed(3), fast=f)
               for f in (False, True)]
        torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-12)
        assert torch.equal(out[1][:, :, :2], known[:, :, :2])
        assert not torch.equal(out[1][:, :, 2:], known[:, :, 2:])
