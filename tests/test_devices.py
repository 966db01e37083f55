"""Device hygiene without a GPU, and --device through every command.

Every tensor the library makes must say where it lives (the models' or the data's device). Under
``torch.set_default_device("meta")`` with the models and inputs on the CPU, a tensor made without an explicit
device is a meta tensor, and the first operation that mixes it with a CPU tensor fails: so sampling (both
samplers, every method), the bounds, inpainting, denoising, probes and the LeNet metrics run here exactly as
they would with the models on a GPU. (Before this test, ``clean_model_single_step`` drew its noise on the
default device and failed it.)"""

import json
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from arsmooth.evaluation import tasks as I
from arsmooth.maths import likelihoods as L
from arsmooth.maths import smoothing as S
from arsmooth.maths.kernels import make_kernel
from arsmooth.models.image_model import ImageModel
from arsmooth.runtime.config import ModelSettings

NETS = {"pixelcnnpp": dict(nr_resnet=1, nr_filters=4), "transformer": dict(network="transformer", tf_width=8,
                                                                           tf_layers=1, tf_heads=2, tf_encoder_blocks=1)}


@contextmanager
def meta_default():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def _models(net):
    def mk(kind):
        torch.manual_seed(0)
        m = ModelSettings(**NETS[net], nr_logistic_mix=2, dropout=0.0, stage2_conditioning="spatial")
        return ImageModel(kind, m, channels=1, image_size=(4, 4)).eval()

    return mk("baseline"), S.SmoothedPair(mk("stage1"), mk("stage2")), make_kernel("gaussian", 0.3)


def test_the_trick_catches_a_tensor_made_without_a_device():
    x = torch.zeros(2)
    with meta_default(), pytest.raises((RuntimeError, NotImplementedError)):
        x + torch.randn(2)  # what clean_model_single_step did
    with meta_default():
        assert (x + L.draw("normal", (2,), torch.Generator().manual_seed(0), x)).device.type == "cpu"


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.slow
def test_everything_after_training_makes_its_tensors_where_its_inputs_are(net):
    base, pair, kernel = _models(net)
    x = L.quantize(torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    g = torch.Generator().manual_seed(0)
    with meta_default():
        for fast in (True, False):
            for method in I.IMAGE_METHODS:
                out = I.sample_seeded(method, 2, 0, baseline=base, pair=pair, kernel=kernel, fast=fast)
                assert out.device.type == "cpu" and torch.isfinite(out).all()
        I.likelihood(x, baseline=base, pair=pair, kernel=kernel, k_iw=2, generator=g)
        I.inpaint(pair, kernel, x, g)
        I.denoise(pair, kernel, x, g)
        I.clean_model_single_step(base, x, generator=g)
        I.fig6_columns(base, pair, kernel, 2, 0, batch_size=2)
        from arsmooth.evaluation.probes import block_features

        block_features(pair.reverse, x, kernel, g)


@pytest.mark.slow
def test_the_lenet_metrics_make_their_tensors_where_the_classifier_is():
    from arsmooth.evaluation.classifier import LeNet
    from arsmooth.evaluation.metrics import nearest, sample_metrics

    torch.manual_seed(0)
    net = LeNet(channels=1, size=8)
    u8 = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with meta_default():
        r = sample_metrics(u8, u8.flip(0), net, score=True)
        idx = nearest(u8[:2], u8, k=2, embed=net.features)
    assert r["fid"] > -1e-4 and idx.device.type == "cpu"


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "arsmooth", *args], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible here")
@pytest.mark.parametrize("args", [
    ["sample", "--pretrained", "mnist", "--method", "smoothed", "--out", "{d}"],
    ["evaluate", "--pretrained", "mnist"],
    ["metrics", "x.npz", "--dataset", "mnist", "--classifier", "c.pt"],
    ["fit-classifier", "--dataset", "digits", "--out", "{d}/c.pt"],
    ["sensitivity", "x.pt"],
    ["reproduce", "fig3", "--quick", "--out", "{d}"],
    ["bench", "sample", "--preset", "digits-stage1", "--out", "{d}/b.jsonl"],
    ["demo", "--out", "{d}"],
])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.slow
def test_a_gpu_asked_for_where_none_is_visible_is_refused_before_any_folder(tmp_path, args, device):
    d = tmp_path / "new"
    p = _cli(*[a.format(d=d) for a in args], "--device", device)
    assert p.returncode == 2 and "no CUDA GPU is visible" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not d.exists()


@pytest.mark.slow
def test_device_cpu_explicitly_through_every_command(tmp_path):
    cpu = ["--device", "cpu"]
    assert _cli("sample", "--pretrained", "mnist", "--method", "smoothed", "-n", "2", "--out", str(tmp_path / "s"),
                "--no-progress", *cpu).returncode == 0
    clf = tmp_path / "c.pt"
    p = _cli("fit-classifier", "--dataset", "digits", "--epochs", "1", "--out", str(clf), "--no-progress", *cpu)
    assert p.returncode == 0, p.stderr
    assert _cli("reproduce", "fig3", "--quick", "--out", str(tmp_path / "r"), "--no-progress", *cpu).returncode == 0
    p = _cli("bench", "sample", "--preset", "digits-stage1", "--batch-size", "2", "--ref-pixels", "2", *cpu)
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[0])["device"] == "cpu"
    u8 = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8).numpy()
    import numpy as np

    np.savez(tmp_path / "s.npz", uint8=u8)
    p = _cli("metrics", str(tmp_path / "s.npz"), "--dataset", "digits", "--classifier", str(clf), *cpu)
    assert p.returncode == 0, p.stderr
    p = _cli("train", "digits-stage2-spatial", "--out", str(tmp_path / "t"), "--max-steps", "1", "--no-progress",
             "--set", "device=cpu", "--set", "train.eval_images=4")
    assert p.returncode == 0, p.stderr
    p = _cli("sensitivity", str(tmp_path / "t" / "last.pt"), "--n-images", "2", *cpu)
    assert p.returncode == 0, p.stderr
    p = _cli("evaluate", "--baseline", str(tmp_path / "t" / "last.pt"), *cpu)  # a stage 2 is no baseline: refused
    assert p.returncode == 2
    p = _cli("demo", "--out", str(tmp_path / "demo"), "--steps", "20", "--no-progress", *cpu)
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_reproduce_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    p = _cli("reproduce", "cifar10", "--quick", "--dry-run", "--out", str(tmp_path / "out"), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    assert "baseline: preset digits-baseline" in p.stdout and "Cost estimate on cpu" in p.stdout
    assert "Fig. 6 columns" in p.stdout and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bench_train_prints_an_honest_cost_estimate(tmp_path):
    p = _cli("bench", "train", "--preset", "digits-stage1", "--device", "cpu", "--steps", "1", "--batch-size", "2")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.splitlines()[0])
    e = r["estimate"]
    # the step budget at the measured speed: steps x the preset's batch / images per second
    assert e["train_hours_for_step_budget"] == pytest.approx(20 * 32 / r["fast_images_per_s"] / 3600)
    assert "hours for" in p.stderr and "images/s" in p.stderr
