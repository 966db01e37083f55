"""The spatially conditioned stage 2: causal in x, non-causal in x~, exact fast sampling, normalised."""

import pytest
import torch

from arsmooth.errors import ArsmoothError
from arsmooth.maths import likelihoods as L
from arsmooth.models.image_model import ImageModel
from arsmooth.networks.sampling import _Graph
from arsmooth.runtime.config import ModelSettings
from conftest import rgb_total_probability


def _model(channels=1, nr_resnet=1, fused=False, dropout=0.0, seed=0, size=(8, 8)):
    torch.manual_seed(seed)
    m = ImageModel("stage2", ModelSettings(nr_resnet=nr_resnet, nr_filters=6, nr_logistic_mix=3, dropout=dropout,
                                           fused=fused, stage2_conditioning="spatial"),
                   channels=channels, image_size=size).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # weights further from init, so every path matters
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.eval()


def _pair(b, channels, h=8, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = L.quantize(torch.rand(b, channels, h, w, generator=g, dtype=torch.double) * 2 - 1)
    xt = x + 0.5 * torch.randn(x.shape, generator=g, dtype=torch.double)
    return x, xt


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_outputs_see_only_the_past_of_x_and_x_tilde_around_them(channels, fused):
    m = _model(channels, nr_resnet=2, fused=fused)
    h = w = 8
    n = h * w
    x, xt = _pair(1, channels)
    xs = x.expand(n, -1, -1, -1).clone().requires_grad_()
    xts = xt.expand(n, -1, -1, -1).clone().requires_grad_()
    params = m.params(xs, context=xts)  # (n, P, H, W), one output position per batch element
    pos = torch.arange(n)
    gx, gxt = torch.autograd.grad(params[pos, :, pos // w, pos % w].sum(), (xs, xts))
    dep_x = gx.abs().sum(1).reshape(n, n) > 0
    dep_xt = gxt.abs().sum(1).reshape(n, h, w) > 0
    strict_past = torch.ones(n, n, dtype=torch.bool).tril(-1)
    assert not (dep_x & ~strict_past).any(), "an output depends on x at its own position or later (must be exact zeros)"
    assert torch.equal(dep_x, strict_past), "with 2 resnets per stage every earlier pixel of x is seen"
    for p in range(n):  # x~ at the same position and all around it
        i, j = divmod(p, w)
        window = dep_xt[p, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
        assert window.all(), f"output {i, j} does not see x~ in its 3x3 neighbourhood"


def test_x_tilde_later_in_raster_order_is_seen():
    # the point of the design: x~ below and right of a pixel (after it in raster order) informs it
    m = _model(1)
    x, xt = _pair(1, 1)
    xt = xt.clone().requires_grad_()
    params = m.params(x, context=xt)
    (g,) = torch.autograd.grad(params[0, :, 0, 0].sum(), xt)
    assert g[0, 0, 1, 1].abs() > 0 and g[0, 0, 0, 0].abs() > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_cached_graph_equals_network_with_conditioning(channels):
    m = _model(channels, nr_resnet=1)
    x, xt = _pair(3, channels, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(_Graph(m.net, 8, 12).forward(x, xt), m.net(x, cond=xt), rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_sampler_gives_the_obvious_samples(channels, batch):
    m = _model(channels, seed=2)
    _, xt = _pair(batch, channels, seed=3)
    out = [m.sample(context=xt, generator=torch.Generator().manual_seed(7), fast=f) for f in (False, True)]
    assert out[0].abs().sum() > 0
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_sampler_with_known_rows(channels, batch):
    m = _model(channels, seed=4)
    known, xt = _pair(batch, channels, seed=5)
    out = [m.sample(context=xt, known=known, start_row=5, generator=torch.Generator().manual_seed(9), fast=f)
           for f in (False, True)]
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-12)
    assert torch.equal(out[1][:, :, :5], known[:, :, :5])


@pytest.mark.parametrize("p", [0, 13, 63])
def test_grey_pixel_probabilities_sum_to_one(p):
    m = _model(1, seed=6)
    x, xt = _pair(1, 1, seed=7)
    i, j = divmod(p, 8)
    xs = x.repeat(256, 1, 1, 1)
    xs[:, 0, i, j] = torch.linspace(-1, 1, 256, dtype=torch.double)  # every 8-bit value at pixel p
    with torch.no_grad():
        lp = m.pixel_log_prob(xs, context=xt.expand(256, -1, -1, -1))[:, i, j]
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_rgb_pixel_probabilities_sum_to_one_over_all_colours():
    m = _model(3, seed=8)
    x, xt = _pair(1, 3, seed=9)
    x = x.repeat(2, 1, 1, 1)
    x[1, :, 2, 3] = -x[0, :, 2, 3] - 0.1  # another colour at the pixel itself: its parameters must not move
    with torch.no_grad():
        params = m.params(x, context=xt.expand(2, -1, -1, -1))[:, :, 2:3, 3:4]  # (2, P, 1, 1)
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)
    assert rgb_total_probability(params[:1], 3) == pytest.approx(1.0, abs=1e-6)


def test_stage2_needs_its_context_and_other_kinds_have_no_encoder():
    m = _model(1)
    x, _ = _pair(1, 1)
    with pytest.raises(ArsmoothError, match="x~"):
        m.log_prob(x)
    for kind in ("baseline", "stage1"):
        m = ModelSettings(stage2_conditioning="spatial", nr_resnet=0, nr_filters=4)
        assert ImageModel(kind, m, channels=1, image_size=(8, 8)).net.encoder is None
    with pytest.raises(ArsmoothError, match="model.stage2_conditioning must be one of stacked, spatial"):
        ModelSettings(stage2_conditioning="diagonal")


@pytest.mark.slow
def test_checkpoints_record_the_design_and_refuse_the_other(tmp_path):
    from arsmooth.models.build import model_from_checkpoint
    from arsmooth.runtime import checkpoint as C
    from arsmooth.runtime.config import load_config
    from arsmooth.training.trainer import train

    cfg = load_config("digits-stage2-spatial", ["train.max_steps=2", "train.eval_images=8"])
    train(cfg, tmp_path / "r", progress=False)
    ck = C.load_checkpoint(tmp_path / "r" / "last.pt", expect_kind="stage2")
    assert ck["config"]["model"]["stage2_conditioning"] == "spatial"
    assert model_from_checkpoint(ck).conditioning == "spatial"
    ck["config"]["model"]["stage2_conditioning"] = "stacked"
    with pytest.raises(ArsmoothError, match="holds a spatial stage 2 but its config says model.stage2_conditioning=stacked"):
        model_from_checkpoint(ck)
    other = load_config(str(tmp_path / "r" / "config.yaml"), ["model.stage2_conditioning=stacked"])
    with pytest.raises(ArsmoothError, match="model.stage2_conditioning"):
        train(other, tmp_path / "r", resume=True, progress=False)


@pytest.mark.slow
def test_quick_design_comparison_and_spatial_reproduce(tmp_path):
    import json

    from arsmooth.experiments import reproduce

    reproduce("stage2-mnist", tmp_path / "d", quick=True, progress=False)
    res = json.loads((tmp_path / "d" / "stage2-mnist.json").read_text())
    for d in ("stacked", "spatial"):
        r = res[d]
        assert {"params", "stage2_term_bpd", "two_step_elbo", "two_step_iw", "psnr", "metrics", "sensitivity",
                "train_images_per_s"} <= set(r)
        assert 0 < r["stage2_term_bpd"] < r["two_step_elbo"] and r["two_step_iw"] > 0
    assert res["stacked"]["psnr"]["noisy"] == res["spatial"]["psnr"]["noisy"]  # the same noisy images
    # the stacked design barely listens to x~ at the pixel itself; the spatial one does
    assert res["stacked"]["sensitivity"]["ratio_min"] > 10 * res["spatial"]["sensitivity"]["ratio_max"]
    from arsmooth.experiments.report import write_report

    rep = write_report([tmp_path / "d"], tmp_path / "rep.md").read_text()
    assert "| stacked |" in rep and "| spatial |" in rep and "denoising_designs.png" in rep
    rec = reproduce("mnist", tmp_path / "m", quick=True, progress=False, stage2="spatial")
    assert rec["settings"]["stage2"] == "spatial"
    res = json.loads((tmp_path / "m" / "mnist.json").read_text())
    assert res["config"]["stage2"]["model"]["stage2_conditioning"] == "spatial"
    with pytest.raises(ArsmoothError, match="--stage2 applies to"):
        reproduce("fig3", tmp_path / "f", quick=True, progress=False, stage2="spatial")
