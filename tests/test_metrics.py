"""Classifier features and sample metrics: orderings that must hold, exact neighbours, safe loading."""

import pytest
import torch

from arsmooth.data.image_sets import load_dataset, to_uint8
from arsmooth.errors import ArsmoothError
from arsmooth.evaluation import classifier as K
from arsmooth.evaluation import metrics as MT
from conftest import ENABLE, digits28, real_data_root


@pytest.fixture(scope="module", params=["digits28", "mnist"])
def mnist_small(request):
    """A quick LeNet and uint8 images: on real MNIST from $ARSMOOTH_DATA, and always on the bundled
    digits enlarged to 28x28, so no check is lost on a machine without the files."""
    if request.param == "mnist":
        if real_data_root() is None:
            pytest.skip(ENABLE)
        tr, ytr = load_dataset("mnist", "train", real_data_root(), download=False)
        te, yte = load_dataset("mnist", "test", real_data_root(), download=False)
        tr, te = to_uint8(tr[:2000]), to_uint8(te[:1000])
        ytr, yte = ytr[:2000], yte[:1000]
    else:
        (tr, ytr), (te, yte) = digits28("train"), digits28("test")
    torch.set_num_threads(2)
    net, info = K.fit((tr, ytr), (te, yte), epochs=3, batch_size=64, lr=2e-3, progress=False)
    torch.set_num_threads(1)
    return net, info, tr, te[:400] if len(te) >= 400 else te


@pytest.mark.slow
def test_quick_classifier_learns(mnist_small):
    _, info, _, _ = mnist_small
    assert info["test_accuracy"] > 0.8  # 2000 images, three epochs: far above chance (0.1)


@pytest.mark.slow
def test_metric_orderings(mnist_small):
    net, _, train, test = mnist_small
    same = MT.sample_metrics(test, test, net)
    n = len(test)  # 400 MNIST images, or the 297 test digits
    other = MT.sample_metrics(train[:n], test, net)
    g = torch.Generator().manual_seed(0)
    noisy = to_uint8(((test.float() / 127.5 - 1) + 1.5 * torch.randn(test.shape, generator=g)))
    bad = MT.sample_metrics(noisy, test, net)
    halves = MT.sample_metrics(test[: n // 2], test[n // 2 :], net)  # two independent draws of the same law
    assert abs(same["fid"]) < 1e-3  # (KID's unbiased estimate is not 0 on one set twice: pairs repeat)
    assert same["fid"] < other["fid"] < bad["fid"] / 5
    assert abs(halves["kid"]) < bad["kid"] / 20 and other["kid"] < bad["kid"] / 5
    assert bad["is"] < other["is"]
    assert other["n_samples"] == n and other["kid_subset_size"] == n // 2


@pytest.mark.slow
def test_real_baseline_is_cached(mnist_small, tmp_path):
    net, _, train, test = mnist_small
    a = MT.real_baseline(test, train, 200, net, "abc", tmp_path)
    assert list(tmp_path.iterdir())
    assert MT.real_baseline(test, train, 200, net, "abc", tmp_path) == a


def test_nearest_neighbours_are_exact(mnist_small):
    net, _, train, _ = mnist_small
    idx = torch.tensor([5, 17, 400])
    assert torch.equal(MT.nearest(train[idx], train, k=1)[:, 0], idx)
    d = torch.cdist(train[:1].float().flatten(1), train.float().flatten(1))[0]
    assert torch.equal(MT.nearest(train[:1], train, k=3)[0], d.topk(3, largest=False).indices)
    assert MT.nearest(train[idx], train, k=1, embed=net.features)[:, 0].tolist() == idx.tolist()


def test_classifier_save_load_and_damage(mnist_small, tmp_path):
    net, info, _, test = mnist_small
    p = tmp_path / "c.pt"
    sha = K.save(net, info, p)
    net2, info2 = K.load(p)
    assert info2["weights_sha256"] == sha and torch.equal(net2(test[:5]), net(test[:5]))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ArsmoothError, match="not a classifier"):
        K.load(p)
    with pytest.raises(ArsmoothError, match="fit-classifier"):
        K.load(tmp_path / "missing.pt")


def test_linear_probe_finds_linear_information():
    from arsmooth.evaluation.probes import linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (600,), generator=g)
    informative = torch.nn.functional.one_hot(y, 4).float() + 0.3 * torch.randn(600, 4, generator=g)
    noise = torch.randn(600, 4, generator=g)
    assert linear_probe(informative[:400], y[:400], informative[400:], y[400:]) > 0.95
    assert linear_probe(noise[:400], y[:400], noise[400:], y[400:]) < 0.45


def test_block_features_one_per_ul_block():
    from arsmooth.evaluation.probes import block_features
    from arsmooth.maths.kernels import Gaussian
    from arsmooth.models.image_model import ImageModel
    from arsmooth.runtime.config import ModelSettings

    m = ImageModel("stage2", ModelSettings(nr_resnet=2, nr_filters=4, nr_logistic_mix=2), channels=1, image_size=(8, 8))
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    f = block_features(m, x, Gaussian(0.3), torch.Generator().manual_seed(0), grids=(1, 2))
    assert len(f[1]) == 3 * 2 + (2 + 3 + 3) and all(t.shape == (5, 4) for t in f[1])
    assert len(f[2]) == len(f[1]) and all(t.shape == (5, 4 * 2 * 2) for t in f[2])
    # the 2x2 cells average to the position average (every block here keeps an even-sized map)
    assert all(torch.allclose(b.view(5, 4, 4).mean(2), a, atol=1e-6) for a, b in zip(f[1], f[2]))


def test_inception_metrics_say_what_is_missing():
    rgb = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ArsmoothError, match="RGB"):
        MT.inception_metrics(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), rgb)
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        with pytest.raises(ArsmoothError, match=r"pip install 'arsmooth\[inception\]'"):
            MT.inception_metrics(rgb, rgb)


@pytest.mark.slow
def test_metrics_command_scores_sample_files(tmp_path, idx_root, capsys):
    """arsmooth metrics: test images scored against themselves give FID ~ 0; noise scores far worse."""
    import json

    import numpy as np

    from arsmooth.cli import main
    from arsmooth.data.image_sets import load_dataset, to_uint8
    from arsmooth.evaluation import classifier as K

    torch.manual_seed(0)
    K.save(K.LeNet(), {"test_accuracy": 0.1, "dataset": "mnist"}, tmp_path / "lenet.pt")
    real = to_uint8(load_dataset("mnist", "test", idx_root)[0][:200]).numpy()
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    np.savez(tmp_path / "same.npz", uint8=real)
    np.savez(tmp_path / "cols.npz", **{"noise.uint8": noise, "copy.uint8": real})
    args = ["--dataset", "mnist", "--classifier", str(tmp_path / "lenet.pt"), "--data-root", str(idx_root), "--threads", "1"]
    assert main(["metrics", str(tmp_path / "same.npz"), str(tmp_path / "cols.npz"), *args]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by = {r["samples"].split("/")[-1]: r for r in rows}
    assert set(by) == {"same.npz", "cols.npz:noise", "cols.npz:copy"} and by["same.npz"]["n_samples"] == 200
    assert abs(by["same.npz"]["fid"]) < 1e-2 and by["cols.npz:copy"]["fid"] == by["same.npz"]["fid"]
    assert by["cols.npz:noise"]["fid"] > 100 * max(abs(by["same.npz"]["fid"]), 1e-3)
    np.savez(tmp_path / "empty.npz", raw=np.zeros(3))
    assert main(["metrics", str(tmp_path / "empty.npz"), *args]) == 2
    assert "holds no uint8 images" in capsys.readouterr().err


def test_rotations_are_quarter_turns_labelled_by_their_count():
    x = torch.arange(2 * 3 * 4 * 4).view(2, 3, 4, 4)
    k = torch.tensor([3, 1])
    r = K.rotate(x, k)
    assert torch.equal(r[0], torch.rot90(x[0], 3, (-2, -1))) and torch.equal(r[1], torch.rot90(x[1], 1, (-2, -1)))
    xs, ks = K.all_rotations(x)
    assert ks.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(torch.equal(xs[i], torch.rot90(x[i % 2], int(ks[i]), (-2, -1))) for i in range(8))


def test_rotation_task_learns_without_labels(tmp_path):
    """Unlabelled images (labels None) train the LeNet on rotations: far above chance (0.25) on held-out
    images turned all four ways, saved with four outputs and reloaded the same."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((360, 3, 32, 32), -1.0)
    x[:, :, :8] = 1.0  # a bright band at the top: its side says how the image was turned
    x += 0.3 * torch.randn(x.shape, generator=g)
    net, info = K.fit((x[:300].clamp(-1, 1), None), (x[300:].clamp(-1, 1), None), epochs=2, batch_size=32,
                      lr=2e-3, progress=False)
    assert info["task"] == "rotation" and info["test_accuracy"] > 0.9 and net.fc2.out_features == 4
    K.save(net, info, tmp_path / "rot.pt")
    back, info2 = K.load(tmp_path / "rot.pt")
    assert info2["task"] == "rotation" and torch.equal(back(x[:4]), net(x[:4]))


def test_missing_inception_weights_stop_before_any_work(tmp_path, capsys):
    from arsmooth.cli import main

    missing = tmp_path / "nowhere.pth"
    rc = main(["reproduce", "cifar10", "--quick", "--out", str(tmp_path / "out"), "--inception-weights", str(missing)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(missing) in err and MT.INCEPTION_FILE in err
    assert not (tmp_path / "out").exists()  # refused before the output folder or any training
    rc = main(["reproduce", "mnist", "--quick", "--out", str(tmp_path / "out"), "--inception-weights", str(missing)])
    assert rc == 2 and "RGB" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_block_features_are_the_blocks_outputs_whatever_the_batch_size():
    """Features written batch by batch into one tensor per block equal each block's output pooled at once."""
    from arsmooth.evaluation.probes import block_features
    from arsmooth.models.image_model import ImageModel
    from arsmooth.runtime.config import ModelSettings

    m = ImageModel("baseline", ModelSettings(nr_resnet=1, nr_filters=4, nr_logistic_mix=2), channels=1,
                   image_size=(8, 8)).eval()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    outs = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: outs.append(out)) for b in m.net.probe_layers()]
    with torch.no_grad():
        m.params(x, None)
    for h in hooks:
        h.remove()
    for batch in (2, 5):
        f = block_features(m, x, batch_size=batch, grids=(1, 2))
        assert len(f[1]) == len(outs)
        for want, got1, got2 in zip(outs, f[1], f[2]):
            torch.testing.assert_close(got1, want.mean((2, 3)), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(got2, torch.nn.functional.adaptive_avg_pool2d(want, 2).flatten(1))
