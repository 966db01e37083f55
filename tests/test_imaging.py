"""Image models and tasks on tiny random-weight models (8x8 images): samplers, bounds, inpainting, the quick path."""

import json

import numpy as np
import pytest
import torch

from arsmooth.cli import IMAGE_METHODS
from arsmooth.errors import ArsmoothError
from arsmooth.evaluation import tasks as I
from arsmooth.maths import smoothing as S
from arsmooth.maths.kernels import Gaussian
from arsmooth.models.image_model import ImageModel
from arsmooth.runtime.config import ModelSettings


def _pair(seed=0, channels=1):
    torch.manual_seed(seed)
    m, kw = ModelSettings(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout=0.0), dict(channels=channels, image_size=(8, 8))
    return S.SmoothedPair(ImageModel("stage1", m, **kw).double(), ImageModel("stage2", m, **kw).double()), Gaussian(0.5)


def _images(n=4, channels=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, 8, 8), generator=g).double() / 127.5 - 1


def test_cli_method_list_matches_library():
    assert IMAGE_METHODS == I.IMAGE_METHODS


@pytest.mark.parametrize("channels", [1, 3])
def test_stage2_sampler_draws_from_its_own_conditionals(channels):
    """A sampled x must be one the model finds likely: compare log p of samples vs of random images."""
    pair, k = _pair(channels=channels)
    xt = k.sample(_images(6, channels), torch.Generator().manual_seed(0))
    x = pair.reverse.sample(context=xt, generator=torch.Generator().manual_seed(1))
    assert x.shape == xt.shape
    # discretized: every value is an 8-bit bin centre in [-1, 1]
    assert torch.allclose((x + 1) * 127.5, ((x + 1) * 127.5).round(), atol=1e-6) and x.abs().max() <= 1
    lp_samples = pair.reverse.log_prob(x, context=xt).mean()
    lp_random = pair.reverse.log_prob(_images(6, channels, 5), context=xt).mean()
    assert lp_samples > lp_random


def test_inpainting_keeps_the_observed_half():
    pair, k = _pair()
    x = _images(3)
    out = I.inpaint(pair, k, x, torch.Generator().manual_seed(0))
    assert torch.equal(out["completed"][..., :4, :], x[..., :4, :])
    assert not torch.equal(out["completed"][..., 4:, :], x[..., 4:, :])
    assert (out["observed"][..., 4:, :] == 0).all()


@pytest.mark.slow
def test_bounds_order_and_units():
    pair, k = _pair()
    x = _images(4)
    g = torch.Generator().manual_seed(0)
    res = I.likelihood(x, pair=pair, kernel=k, n_draws=64, k_iw=64, generator=g)
    assert res["two_step_iw"] < res["two_step_elbo"]  # IW(64) is the tighter bound: fewer bits
    with pytest.raises(ArsmoothError, match="K"):
        I.likelihood(x, pair=pair, kernel=k, k_iw=-1)


def test_denoise_reports_psnr_and_single_step_is_the_tweedie_step():
    pair, k = _pair()
    x = _images(2)
    g = torch.Generator().manual_seed(0)
    res = I.denoise(pair, k, x, g)
    assert set(res["psnr"]) == {"noisy", "single_step", "two_step"}
    noisy = res["images"]["noisy"]
    expected = noisy + 0.25 * S.score(lambda t: pair.prior.log_prob(t), noisy)
    assert torch.allclose(res["images"]["single_step"], expected)
    assert I.psnr(x, x) > 90


def test_nonfinite_sampler_output_is_refused():
    pair, k = _pair()
    with torch.no_grad():
        for p in pair.prior.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ArsmoothError, match="non-finite"):
        I.sample_images("smoothed", 2, pair=pair, kernel=k)


@pytest.mark.slow
def test_quick_mnist_path_end_to_end(tmp_path):
    from arsmooth.experiments import reproduce

    torch.set_num_threads(1)
    rec = reproduce("mnist", tmp_path, quick=True, progress=False)
    res = json.loads((tmp_path / "mnist.json").read_text())
    assert set(res) == {"config", "train_seconds", "params", "training", "bpd", "denoise_psnr", "figures", "metrics",
                        "probe_accuracy", "ablation_c6"}
    for kind, t in res["training"].items():  # the budget behind each model, from its own run
        summary = json.loads((tmp_path / "runs" / kind / "summary.json").read_text())
        assert t["steps"] == summary["steps"] > 0 and t["images_seen"] == t["steps"] * t["batch_size"]
        assert t["batch_size"] == res["config"][kind]["train"]["batch_size"] and t["threads"] == 1
        assert t["cpu_hours"] == round(summary["train_seconds"] / 3600, 3)
    assert set(res["ablation_c6"]) == {"0.01", "0.05", "0.1"}
    cols = {"baseline", "smoothed", "single_step", "two_step", "real"}
    assert set(res["metrics"]) == cols | {"n_samples"} and res["metrics"]["n_samples"] == 8
    assert all(set(res["metrics"][c]) == {"fid", "kid", "kid_std", "is"} for c in cols)
    assert all(1 <= res["metrics"][c]["is"] <= 10 for c in cols)  # a score over 10 classes
    assert set(res["probe_accuracy"]) == {f"{m}{g}" for m in ("baseline", "stage1", "stage2") for g in ("", ", 4x4 cells")}
    assert all(0 <= a <= 1 for v in res["probe_accuracy"].values() for a in v)
    from arsmooth.experiments.report import write_report

    rep = write_report([tmp_path], tmp_path / "rep" / "report.md").read_text()
    assert rep.count("| two-step (ours) |") == 1 and "FID (LeNet features)" in rep
    links = [line[line.index("(") + 1 : -1] for line in rep.splitlines() if line.startswith("![")]
    assert links and all((tmp_path / "rep" / link).is_file() for link in links)
    # a rerun reuses the samples (sampling is the slow part) and reproduces every number
    again = reproduce("mnist", tmp_path, quick=True, progress=False, force=True)
    assert json.loads((tmp_path / "mnist.json").read_text()) == res and again["wall_time_s"] < rec["wall_time_s"] * 2
    # --classifier: the same LeNet from another file gives the same numbers and writes no OUT/classifier.pt
    import shutil

    from arsmooth.evaluation import classifier as K

    shutil.copytree(tmp_path / "runs", tmp_path / "b" / "runs")
    lenet = tmp_path / "lenet.pt"
    shutil.copy(tmp_path / "classifier.pt", lenet)
    reproduce("mnist", tmp_path / "b", quick=True, progress=False, classifier=str(lenet))
    assert json.loads((tmp_path / "b" / "mnist.json").read_text())["metrics"] == res["metrics"]
    assert not (tmp_path / "b" / "classifier.pt").exists()
    clf, info = K.load(lenet)
    K.save(clf, {**info, "dataset": "fashion"}, tmp_path / "other.pt")
    with pytest.raises(ArsmoothError, match="was fit on fashion, this experiment's data is digits"):
        reproduce("mnist", tmp_path / "b", quick=True, progress=False, force=True, classifier=str(tmp_path / "other.pt"))
    with pytest.raises(ArsmoothError, match="--classifier applies to"):
        reproduce("fig3", tmp_path / "c", quick=True, progress=False, classifier=str(lenet))
    assert set(res["params"]) == {"baseline", "stage1", "stage2"}
    bounds = ("baseline", "two_step_elbo", "two_step_iw", "two_step_elbo_on_iw_images")
    assert set(res["bpd"]) == {*bounds, "n_images", "iw_k", "iw_images"}
    assert (res["bpd"]["n_images"], res["bpd"]["iw_k"], res["bpd"]["iw_images"]) == (32, 2, 16)
    assert set(res["denoise_psnr"]) == {"noisy", "single_step", "two_step"}
    assert all(0 < res["bpd"][k] < 16 for k in bounds)
    for f in res["figures"].values():
        assert (tmp_path / f).stat().st_size > 100
    assert rec["wall_time_s"] < 120


@pytest.mark.slow
def test_fig6_columns_resume_exactly_and_depend_on_batch_index_only(tmp_path, monkeypatch):
    pair, k = _pair()
    base = ImageModel("baseline", ModelSettings(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout=0.0),
                      channels=1, image_size=(8, 8)).double()
    whole = I.fig6_columns(base, pair, k, 5, seed=3, batch_size=2)
    assert list(whole) == list(I.FIG6_COLUMNS) and all(v.shape == (5, 1, 8, 8) for v in whole.values())
    assert not torch.equal(whole["smoothed"][:2], whole["smoothed"][2:4])  # batches are not repeats
    # interrupted after two batches, then resumed from the partial file: the same images
    real, calls = I.two_step_columns, []

    def dying(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(I, "two_step_columns", dying)
    part = tmp_path / "partial.npz"
    with pytest.raises(KeyboardInterrupt):
        I.fig6_columns(base, pair, k, 5, seed=3, batch_size=2, partial=part)
    monkeypatch.setattr(I, "two_step_columns", real)
    resumed = I.fig6_columns(base, pair, k, 5, seed=3, batch_size=2, partial=part)
    assert all(torch.equal(resumed[c], whole[c]) for c in I.FIG6_COLUMNS)
    # batch i depends on (seed, i) only: a longer run starts with the same images
    longer = I.fig6_columns(base, pair, k, 6, seed=3, batch_size=2)
    assert all(torch.equal(longer[c][:4], whole[c][:4]) for c in I.FIG6_COLUMNS)
    other = I.fig6_columns(base, pair, k, 2, seed=4, batch_size=2)
    assert not torch.equal(other["baseline"], whole["baseline"][:2])


@pytest.mark.slow
def test_quick_cifar10_path_end_to_end(tmp_path, monkeypatch):
    """reproduce cifar10 --quick: the full path (three models, the Fig. 6 columns, bounds, tasks, LeNet metrics
    fit on CIFAR-10) on a small fake archive, RGB throughout."""
    from arsmooth.experiments import reproduce
    from test_image_data import _fake_cifar, _trust_cifar

    data = tmp_path / "data"
    data.mkdir()
    _fake_cifar(data, 16, as_archive=True)
    _trust_cifar(monkeypatch, data)
    monkeypatch.setenv("ARSMOOTH_DATA", str(data))
    reproduce("cifar10", tmp_path / "out", quick=True, progress=False)
    res = json.loads((tmp_path / "out" / "cifar10.json").read_text())
    assert res["config"]["stage1"]["data"]["dataset"] == "cifar10" and res["params"]["stage1"] > 0
    assert all(0 < res["bpd"][k] < 16 for k in ("baseline", "two_step_elbo", "two_step_iw"))
    assert res["metrics"]["n_samples"] == 8 and set(res["metrics"]) >= {"baseline", "two_step", "real"}
    with np.load(tmp_path / "out" / "samples.npz") as z:
        assert z["two-step.uint8"].shape == (8, 3, 32, 32)
    assert (tmp_path / "out" / "runs" / "stage2" / "last.pt").is_file()
    from arsmooth.experiments.report import PAPER_TABLE2, write_report

    text = write_report([tmp_path / "out"], tmp_path / "report.md").read_text()
    assert "Table 2 layout" in text and f"| {PAPER_TABLE2['two_step'][1]:.2f} |" in text
    assert f"| two-step (ours) | n/a | n/a | n/a | ≤ {res['bpd']['two_step_elbo']:.2f} |" in text


@pytest.mark.slow
def test_quick_celeba_path_on_a_fake_folder(tmp_path, monkeypatch):
    """reproduce celeba --quick --data-root: CelebA's crop and split from DATA_ROOT/celeba/img_align_celeba,
    FID / KID on a LeNet trained on rotations (no labels: no score, no probes), nothing else read."""
    from PIL import Image

    from arsmooth.experiments import reproduce
    from arsmooth.experiments.report import write_report

    folder = tmp_path / "data" / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(80):  # CelebA's aligned size
        Image.fromarray(rng.randint(0, 256, (218, 178, 3)).astype(np.uint8)).save(folder / f"{i:06d}.jpg")
    monkeypatch.delenv("ARSMOOTH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # a stray ./data would be found here: there is none besides ours
    reproduce("celeba", tmp_path / "out", quick=True, progress=False, data_root=str(tmp_path / "data"))
    res = json.loads((tmp_path / "out" / "celeba.json").read_text())
    assert res["config"]["baseline"]["data"]["dataset"] == "celeba"
    assert all(0 < res["bpd"][k] < 16 for k in ("baseline", "two_step_elbo", "two_step_iw"))
    m = res["metrics"]
    assert m["two_step"]["is"] is None and m["two_step"]["fid"] >= 0 and res["probe_accuracy"] == {}
    with np.load(tmp_path / "out" / "samples.npz") as z:
        assert z["two-step.uint8"].shape == (8, 3, 32, 32)
    assert not (tmp_path / "out" / "probes.png").exists()
    text = write_report([tmp_path / "out"], tmp_path / "report.md").read_text()
    assert "four rotations" in text and "n/a" in text
