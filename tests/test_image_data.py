"""Image datasets: official MNIST / Fashion-MNIST archives, fake CIFAR-10 archives, image folders,
sklearn digits and the 8-bit <-> [-1, 1] conversion. No test touches the network."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from arsmooth.data import image_sets as im
from arsmooth.errors import ArsmoothError
from conftest import ENABLE, real_data_root, real_fashion_root

needs_mnist = pytest.mark.skipif(real_data_root() is None, reason=ENABLE)
needs_fashion = pytest.mark.skipif(real_fashion_root() is None, reason=ENABLE)
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _on_grid(x: torch.Tensor) -> bool:
    k = (x + 1) * 127.5
    return bool(((k - k.round()).abs() < 1e-4).all()) and x.min() >= -1 and x.max() <= 1


def _copy_mnist_test(src: Path, root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in TEST_FILES:
        shutil.copy(src / "MNIST" / "raw" / f, raw / f)
    return raw


def _offline(monkeypatch):
    def fail(url, dest, timeout):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(im, "_download_file", fail)


# ---------------------------------------------------------------------------------------------


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ARSMOOTH_DATA", str(tmp_path))
    assert im.resolve_data_root("/some/where") == Path("/some/where")
    assert im.resolve_data_root(None) == tmp_path
    monkeypatch.delenv("ARSMOOTH_DATA")
    assert im.resolve_data_root(None) == Path("data")


@pytest.mark.slow
def test_idx_test_split_shapes_and_units(idx_root):
    x, y = im.load_dataset("mnist", "test", idx_root, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
    assert _on_grid(x) and x.min() == -1 and x.max() == 1
    u8, _ = im.load_idx_dataset("fashion", "test", idx_root, download=False)
    assert u8.dtype == torch.uint8 and torch.equal(u8.float() / 127.5 - 1, im.load_dataset("fashion", "test", idx_root)[0])


@needs_mnist
def test_mnist_test_split():
    x, y = im.load_dataset("mnist", "test", real_data_root(), download=False)
    assert x.shape == (10000, 1, 28, 28)
    assert y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_fashion
def test_fashion_test_split():
    u8, y = im.load_idx_dataset("fashion", "test", real_fashion_root(), download=False)
    assert u8.shape == (10000, 1, 28, 28) and u8.dtype == torch.uint8
    assert y.bincount().tolist() == [1000] * 10


@pytest.mark.slow
def test_md5_is_verified_once_per_file(monkeypatch, tmp_path, idx_root):
    raw = _copy_mnist_test(idx_root, tmp_path)
    calls = []
    real = im.digest
    monkeypatch.setattr(im, "digest", lambda p, algorithm: calls.append(p) or real(p, algorithm))
    im.load_idx_dataset("mnist", "test", tmp_path, download=False)
    assert len(calls) == 2
    im.load_idx_dataset("mnist", "test", tmp_path, download=False)
    assert len(calls) == 2  # cached by path, size and mtime
    labels = raw / TEST_FILES[1]
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    im.load_idx_dataset("mnist", "test", tmp_path, download=False)
    assert len(calls) == 3 and calls[-1] == labels


def test_corrupt_file_reports_md5(tmp_path, idx_root):
    raw = _copy_mnist_test(idx_root, tmp_path)
    path = raw / TEST_FILES[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArsmoothError, match="md5") as e:
        im.load_idx_dataset("mnist", "test", tmp_path, download=False)
    assert TEST_FILES[0] in str(e.value) and im._IDX_MD5[("MNIST", TEST_FILES[0])][1] in str(e.value)


def test_official_md5_is_the_published_one():
    assert im._IDX_MD5[("MNIST", TEST_FILES[0])][1] == "9fb629c4189551a2d022fa330f9573f3"


def test_truncated_file_is_refused(tmp_path, idx_root):
    raw = _copy_mnist_test(idx_root, tmp_path)
    path = raw / TEST_FILES[1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArsmoothError, match="truncated") as e:
        im.load_idx_dataset("mnist", "test", tmp_path, download=False)
    assert TEST_FILES[1] in str(e.value) and "download" in str(e.value)


def test_idx_parser_checks_magic_and_sizes():
    header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4))
    x = im._parse_idx(header + bytes(range(24)), Path("ok"), 3)
    assert x.shape == (2, 3, 4) and x[1, 2, 3] == 23  # row-major, big-endian dims
    with pytest.raises(ArsmoothError, match="magic"):
        im._parse_idx(header + bytes(24), Path("f"), 1)
    with pytest.raises(ArsmoothError, match="header"):
        im._parse_idx(header + bytes(23), Path("f"), 3)
    with pytest.raises(ArsmoothError, match="too short"):
        im._parse_idx(header[:8], Path("f"), 3)


def test_missing_files_without_network(monkeypatch, tmp_path):
    _offline(monkeypatch)
    with pytest.raises(ArsmoothError) as e:
        im.load_idx_dataset("fashion", "test", tmp_path)
    msg = str(e.value)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert all(f in msg for f in TEST_FILES) and str(raw) in msg and "download failed" in msg
    assert not raw.exists() and not raw.parent.exists()  # no partial downloads, no empty folders left behind
    with pytest.raises(ArsmoothError, match="download=False"):
        im.load_idx_dataset("mnist", "train", tmp_path, download=False)


def test_download_is_verified_and_atomic(monkeypatch, tmp_path, idx_root):
    seen = []

    def from_shared(url, dest, timeout):  # a stand-in for the mirror
        seen.append(url)
        assert dest.parent == tmp_path / "MNIST" / "raw" and dest.name.endswith(".part")
        shutil.copy(idx_root / "MNIST" / "raw" / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(im, "_download_file", from_shared)
    x, y = im.load_idx_dataset("mnist", "test", tmp_path)
    assert x.shape == (10000, 1, 28, 28) and len(seen) == 2
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(TEST_FILES)

    monkeypatch.setattr(im, "_download_file", lambda url, dest, timeout: dest.write_bytes(b"garbage"))
    with pytest.raises(ArsmoothError, match="truncated or wrong"):
        im.load_idx_dataset("mnist", "test", tmp_path / "other")
    assert not (tmp_path / "other" / "MNIST").exists()


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def _cifar_value(i, c, r, col):
    return (i * 37 + c * 80 + r * 3 + col * 5) % 256


def _fake_cifar(root: Path, n: int = 3, as_archive: bool = False, protocol: int = 2) -> None:
    i, c, r, col = np.meshgrid(*(np.arange(k) for k in (6 * n, 3, 32, 32)), indexing="ij")
    pixels = _cifar_value(i, c, r, col).astype(np.uint8).reshape(6 * n, 3072)  # R, G, B planes
    blobs = {}
    for b, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        d = {b"data": pixels[b * n : (b + 1) * n], b"labels": [b] * n, b"batch_label": b"x"}
        blobs[name] = pickle.dumps(d, protocol=protocol)
    if as_archive:
        with tarfile.open(root / im.CIFAR_ARCHIVE, "w:gz") as tar:
            for name, data in blobs.items():
                info = tarfile.TarInfo(f"{im.CIFAR_FOLDER}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (root / im.CIFAR_FOLDER).mkdir()
        for name, data in blobs.items():
            (root / im.CIFAR_FOLDER / name).write_bytes(data)


def _trust_cifar(monkeypatch, root: Path) -> None:
    """Put the md5s of the fake CIFAR-10 files under ``root`` in place of the published ones."""
    table = dict(im.CIFAR_MD5)
    for name in table:
        for p in (root / name, root / im.CIFAR_FOLDER / name):
            if p.is_file():
                table[name] = (p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest())
    monkeypatch.setattr(im, "CIFAR_MD5", table)


@pytest.mark.parametrize("as_archive,protocol", [(False, 2), (True, 2), (True, pickle.HIGHEST_PROTOCOL)])
def test_cifar_fake_archive_layout(tmp_path, monkeypatch, as_archive, protocol):
    n = 3
    _fake_cifar(tmp_path, n, as_archive, protocol)
    _trust_cifar(monkeypatch, tmp_path)
    x, y = im.load_cifar10("train", tmp_path)
    assert x.shape == (5 * n, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [b for b in range(5) for _ in range(n)]  # batches 1..5 in order
    for i, c, r, col in [(0, 0, 0, 0), (1, 0, 0, 1), (2, 1, 0, 0), (4, 2, 31, 0), (14, 2, 5, 31), (7, 1, 17, 9)]:
        assert x[i, c, r, col] == _cifar_value(i, c, r, col)
    xt, yt = im.load_dataset("cifar10", "test", tmp_path)
    assert xt.shape == (n, 3, 32, 32) and yt.tolist() == [5] * n and _on_grid(xt)
    assert im.to_uint8(xt[1, 2, 3, 4]) == _cifar_value(5 * n + 1, 2, 3, 4)


def test_cifar_files_are_checked_against_the_published_md5(tmp_path, monkeypatch):
    assert im.CIFAR_MD5[im.CIFAR_ARCHIVE] == (170_498_071, "c58f30108f718f92721af3b95e74349a")
    _fake_cifar(tmp_path, 2, as_archive=True)
    with pytest.raises(ArsmoothError, match="bytes, expected 170498071") as e:  # not the real archive
        im.load_cifar10("train", tmp_path)
    assert "\n" not in str(e.value)
    _trust_cifar(monkeypatch, tmp_path)
    assert im.load_cifar10("test", tmp_path)[0].shape == (2, 3, 32, 32)
    arch = tmp_path / im.CIFAR_ARCHIVE
    data = bytearray(arch.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    arch.write_bytes(bytes(data))
    with pytest.raises(ArsmoothError, match="md5 .*expected"):
        im.load_cifar10("test", tmp_path)
    folder = tmp_path / "x"
    folder.mkdir()
    _fake_cifar(folder, 2)
    _trust_cifar(monkeypatch, folder)
    (folder / im.CIFAR_FOLDER / "test_batch").write_bytes((folder / im.CIFAR_FOLDER / "test_batch").read_bytes()[:-10])
    with pytest.raises(ArsmoothError, match="test_batch has .*expected"):
        im.load_cifar10("test", folder)


def test_cifar_missing_and_unsafe(tmp_path, monkeypatch):
    with pytest.raises(ArsmoothError, match=im.CIFAR_ARCHIVE) as e:
        im.load_cifar10("train", tmp_path)
    assert str(tmp_path) in str(e.value)

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    (tmp_path / im.CIFAR_FOLDER).mkdir()
    (tmp_path / im.CIFAR_FOLDER / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    _trust_cifar(monkeypatch, tmp_path)  # even a file whose md5 matched is unpickled safely
    with pytest.raises(ArsmoothError, match="refusing"):
        im.load_cifar10("test", tmp_path)
    with pytest.raises(ArsmoothError, match="data_batch_1 is missing"):
        im.load_cifar10("train", tmp_path)


# ---------------------------------------------------------------------------------------------
# image folders and CelebA


def _save(path: Path, arr: np.ndarray, mode: str) -> None:
    from PIL import Image

    img = Image.fromarray(arr.astype(np.uint8))
    assert img.mode == mode
    img.save(path)


def test_image_folder_crop_resize_and_modes(tmp_path):
    h, w = 30, 40
    yy, xx = np.mgrid[:h, :w]
    grey = (3 * yy + 5 * xx) % 256
    (tmp_path / "g").mkdir()
    _save(tmp_path / "g" / "a.png", grey, "L")
    _save(tmp_path / "g" / "b.png", 255 - grey, "L")
    x = im.load_image_folder(tmp_path / "g", size=20, channels=1, center_crop=20)
    assert x.shape == (2, 1, 20, 20) and x.dtype == torch.uint8
    assert np.array_equal(x[0, 0].numpy(), grey[5:25, 10:30])  # centred crop: top 5, left 10
    assert np.array_equal(x[1, 0].numpy(), 255 - grey[5:25, 10:30])  # files in sorted order

    block = np.zeros((h, w))
    block[5:25, 10:30] = 200  # only the crop window is bright
    _save(tmp_path / "g" / "c.png", block, "L")
    x = im.load_image_folder(tmp_path / "g", size=8, channels=1, center_crop=20)
    assert x.shape == (3, 1, 8, 8) and (x[2] == 200).all()

    rgb = np.zeros((16, 16, 3))
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "rgb.png", rgb, "RGB")
    x = im.load_image_folder(tmp_path / "c", size=4, channels=3)
    assert x.shape == (1, 3, 4, 4) and x[0, :, 0, 0].tolist() == [10, 20, 30]

    with pytest.raises(ArsmoothError, match=r"rgb\.png.*'RGB'.*'L'"):
        im.load_image_folder(tmp_path / "c", size=4, channels=1)
    with pytest.raises(ArsmoothError, match=r"a\.png.*'L'.*'RGB'"):
        im.load_image_folder(tmp_path / "g", size=4, channels=3, center_crop=20)
    _save(tmp_path / "c" / "z.png", np.zeros((16, 16, 4)), "RGBA")
    with pytest.raises(ArsmoothError, match=r"z\.png.*'RGBA'"):
        im.load_image_folder(tmp_path / "c", size=4, channels=3)
    with pytest.raises(ArsmoothError, match="not square"):
        im.load_image_folder(tmp_path / "g", size=4, channels=1)
    with pytest.raises(ArsmoothError, match="smaller than center_crop"):
        im.load_image_folder(tmp_path / "g", size=4, channels=1, center_crop=31)
    with pytest.raises(ArsmoothError, match="channels=2"):
        im.load_image_folder(tmp_path / "g", size=4, channels=2, center_crop=20)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArsmoothError, match="no images"):
        im.load_image_folder(tmp_path / "empty", size=4, channels=1)


def test_celeba_split(tmp_path):
    n = 20
    for i in range(n):  # CelebA's aligned size, one flat colour per image to identify it
        _save(tmp_path / f"{i:06d}.png", np.full((218, 178, 3), 10 * i), "RGB")
    order = np.random.RandomState(2020).permutation(n)
    train = im.load_celeba(tmp_path, "train")
    test = im.load_celeba(tmp_path, "test")
    assert train.shape == (14, 3, 32, 32) and test.shape == (2, 3, 32, 32)
    assert (train[:, :, 0, 0] // 10).tolist() == [[i] * 3 for i in order[:14]]
    assert (test[:, :, 0, 0] // 10).tolist() == [[i] * 3 for i in order[14:16]]
    assert torch.equal(im.load_celeba(tmp_path, "train"), train)
    x, y = im.load_dataset(f"celeba:{tmp_path}", "test")
    assert y is None and torch.equal(im.to_uint8(x), test)
    with pytest.raises(ArsmoothError, match="no CelebA images in .*celeba/img_align_celeba.*--data-root"):
        im.load_dataset("celeba", "test", tmp_path / "elsewhere")


# ---------------------------------------------------------------------------------------------
# digits, units, entry point


def test_digits():
    from sklearn.datasets import load_digits

    xtr, ytr = im.load_digits("train")
    xte, yte = im.load_digits("test")
    assert xtr.shape == (1500, 1, 8, 8) and xte.shape == (297, 1, 8, 8) and xtr.dtype == torch.uint8
    assert int(xtr.max()) == 255 and int(xtr.min()) == 0
    ref = load_digits()
    levels = set(np.rint(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(torch.cat([xtr, xte]).unique().tolist()) <= levels
    assert (torch.cat([ytr, yte]).bincount().numpy() == np.bincount(ref.target)).all()
    x2, y2 = im.load_digits("train")
    assert torch.equal(x2, xtr) and torch.equal(y2, ytr)
    x3, _ = im.load_digits("train", seed=1)
    assert not torch.equal(x3, xtr)
    xf, yf = im.load_dataset("digits", "test")
    assert _on_grid(xf) and torch.equal(im.to_uint8(xf), xte) and torch.equal(yf, yte)


def test_unit_range_round_trip():
    u8 = torch.arange(256, dtype=torch.uint8)
    x = im.to_unit_range(u8)
    assert x.dtype == torch.float32 and x[0] == -1 and x[-1] == 1
    assert torch.allclose(x, 2 * torch.arange(256.0) / 255 - 1, atol=1e-6)
    assert torch.equal(im.to_uint8(x), u8)
    half_bin = 1 / 255
    assert torch.equal(im.to_uint8(x[1:-1] + 0.9 * half_bin), u8[1:-1])
    assert torch.equal(im.to_uint8(x[1:-1] - 0.9 * half_bin), u8[1:-1])
    assert im.to_uint8(torch.tensor([-3.0, 2.5])).tolist() == [0, 255]  # smoothed x~ may leave [-1, 1]
    with pytest.raises(ArsmoothError, match="uint8"):
        im.to_unit_range(torch.zeros(3))


def test_load_dataset_errors(tmp_path):
    with pytest.raises(ArsmoothError, match="unknown dataset 'svhn'.*mnist.*cifar10.*folder:"):
        im.load_dataset("svhn", "train")
    with pytest.raises(ArsmoothError, match="split 'valid'"):
        im.load_dataset("digits", "valid")
    with pytest.raises(ArsmoothError, match="no option.*size"):
        im.load_dataset("digits", "train", size=8)
    with pytest.raises(ArsmoothError, match="needs data.channels"):
        im.load_dataset(f"folder:{tmp_path}", "all", size=8)
    for i in range(10):
        _save(tmp_path / f"{i}.png", np.full((8, 8), i), "L")
    x, y = im.load_dataset(f"folder:{tmp_path}", "all", size=8, channels=1)
    assert x.shape == (10, 1, 8, 8) and y is None and _on_grid(x)
    x, _ = im.load_dataset(f"folder:{tmp_path}", "train", size=4, channels=1)
    assert x.shape == (9, 1, 4, 4)  # every file is used: 10% test, the rest train


@pytest.mark.parametrize("fraction,n_test", [(None, 1), (0.3, 3), (0.5, 5)])
def test_folder_splits_use_every_file_once(tmp_path, fraction, n_test):
    for i in range(10):
        _save(tmp_path / f"{i}.png", np.full((8, 8), 20 * i), "L")
    kw = {"size": 8, "channels": 1, **({"test_fraction": fraction} if fraction else {})}
    values = {s: sorted(im.to_uint8(im.load_dataset(f"folder:{tmp_path}", s, **kw)[0])[:, 0, 0, 0].tolist())
              for s in ("train", "test")}
    assert len(values["test"]) == n_test and len(values["train"]) == 10 - n_test
    assert sorted(values["train"] + values["test"]) == [20 * i for i in range(10)]  # disjoint, all files


def test_truncated_png_is_named(tmp_path):
    _save(tmp_path / "good.png", np.full((8, 8), 3), "L")
    _save(tmp_path / "bad.png", np.random.RandomState(0).randint(0, 255, (64, 64)), "L")
    data = (tmp_path / "bad.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArsmoothError, match=r"bad\.png is not a readable image"):
        im.load_dataset(f"folder:{tmp_path}", "all", size=8, channels=1)


def test_cifar10_classifier_fits_on_the_fake_archive(tmp_path, monkeypatch):
    from arsmooth.evaluation import classifier as K

    _fake_cifar(tmp_path, 8, as_archive=True)
    _trust_cifar(monkeypatch, tmp_path)
    net, info = K.fit_dataset("cifar10", tmp_path, epochs=1, progress=False)
    assert (net.channels, net.size) == (3, 32) and info["dataset"] == "cifar10" and info["train_images"] == 40
    assert net.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, net.num_features)
