"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10, CelebA, a folder of images, sklearn's 8x8 digits.

Every loader returns 8-bit images ``uint8 (N, C, H, W)``; ``load_dataset`` is the single entry point
and returns them in [-1, 1] (the units of the paper's sigmas) with ``x = u8 / 127.5 - 1``, the centres of the
8-bit bins. Nothing is downloaded at import time. Only MNIST and Fashion-MNIST are ever downloaded,
and only when their files are missing; CIFAR-10 and CelebA must be supplied by the user.
"""

from __future__ import annotations

import codecs
import gzip
import io
import math
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ArsmoothError
from ..runtime.config import DataSettings
from ..runtime.fileio import digest

SPLITS = ("train", "test")
DATASETS = ("mnist", "fashion", "cifar10", "digits", "celeba", "celeba:<folder>", "folder:<folder>")

# ---------------------------------------------------------------------------------------------
# data root


def resolve_data_root(data_root: str | Path | None) -> Path:
    """The data folder: the argument, else ``$ARSMOOTH_DATA``, else ``./data``."""
    if data_root is None:
        data_root = os.environ.get("ARSMOOTH_DATA") or "data"
    return Path(data_root).expanduser()


def _check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ArsmoothError(f"unknown split {split!r}: expected one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (official IDX .gz files, torchvision layout <root>/<folder>/raw/)

_IDX_FOLDER = {"mnist": "MNIST", "fashion": "FashionMNIST"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_COUNT = {"train": 60000, "test": 10000}
# (folder, file) -> (bytes, md5) of the official archives
_IDX_MD5 = {
    ("MNIST", "train-images-idx3-ubyte.gz"): (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("MNIST", "train-labels-idx1-ubyte.gz"): (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
    ("MNIST", "t10k-images-idx3-ubyte.gz"): (1648877, "9fb629c4189551a2d022fa330f9573f3"),
    ("MNIST", "t10k-labels-idx1-ubyte.gz"): (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
    ("FashionMNIST", "train-images-idx3-ubyte.gz"): (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("FashionMNIST", "train-labels-idx1-ubyte.gz"): (29515, "25c81989df183df01b3e8a0aad5dffbe"),
    ("FashionMNIST", "t10k-images-idx3-ubyte.gz"): (4422102, "bef4ecab320f06d8554ea6380940ec79"),
    ("FashionMNIST", "t10k-labels-idx1-ubyte.gz"): (5148, "bb300cfdad3c16e7a12a480ee83cd310"),
}
_MIRRORS = {
    "MNIST": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "FashionMNIST": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
DOWNLOAD_TIMEOUT_S = 20.0

# (resolved path, size, mtime_ns) of files whose md5 already matched in this process
_VERIFIED: set[tuple[str, int, int]] = set()


def _verify(path: Path, size: int | None, md5: str) -> None:
    """Check a file's size (when known) and md5 against the published values, once per file version."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    if size is not None and st.st_size != size:
        raise ArsmoothError(
            f"{path} has {st.st_size} bytes, expected {size} (md5 {md5}): the file is truncated "
            "or wrong; delete it and download it again"
        )
    got = digest(path, "md5")
    if got != md5:
        raise ArsmoothError(
            f"{path} has md5 {got}, expected {md5}: the file is corrupt or wrong; "
            "delete it and download it again"
        )
    _VERIFIED.add(key)


def _download_file(url: str, dest: Path, timeout: float) -> None:
    """Write the body of ``url`` to ``dest`` (tests replace this function to stay offline)."""
    with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)


def _fetch(folder: str, name: str, dest: Path) -> str | None:
    """Download one official file into ``dest`` atomically; ``None`` on success, else the reason."""
    size, md5 = _IDX_MD5[(folder, name)]
    made = [p for p in reversed(dest.parents) if not p.exists()]  # folders we create; removed if nothing comes
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = None
    for base in _MIRRORS[folder]:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _download_file(base + name, tmp, DOWNLOAD_TIMEOUT_S)
            _verify(tmp, size, md5)
            os.replace(tmp, dest)  # atomic: a half-written file never has the final name
            return None
        except (OSError, ArsmoothError) as e:  # URLError and timeouts are OSErrors
            reason = f"{base + name}: {e}"
        finally:
            tmp.unlink(missing_ok=True)
    for p in reversed(made):  # no empty folders left behind by a failed download
        try:
            p.rmdir()
        except OSError:
            pass
    return reason


def _parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes: big-endian magic 0x0000 08 <ndim>, dims."""
    bad = f"{path} is not a valid IDX file"
    if len(data) < 4 + 4 * ndim:
        raise ArsmoothError(f"{bad} (too short); delete it and download it again")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise ArsmoothError(
            f"{bad} (magic {magic:#010x}, expected {0x0800 + ndim:#010x}); delete it and download it again"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(data) - start != int(np.prod(dims)):
        raise ArsmoothError(
            f"{bad} (header says {dims}, {int(np.prod(dims))} bytes of data, found {len(data) - start}); "
            "delete it and download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        msg = f"{path} is not a readable gzip file ({e}); delete it and download it again"
        raise ArsmoothError(msg) from e
    return _parse_idx(data, path, ndim)


def load_idx_dataset(
    name: str, split: str, data_root: str | Path | None = None, download: bool = True
) -> tuple[Tensor, Tensor]:
    """MNIST (``"mnist"``) or Fashion-MNIST (``"fashion"``): ``uint8 (N, 1, 28, 28)``, ``int64 (N,)``.

    Files live in ``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/`` and are checked against the
    official md5s; missing ones are downloaded when ``download`` is true.
    """
    if name not in _IDX_FOLDER:
        raise ArsmoothError(f"unknown IDX dataset {name!r}: expected 'mnist' or 'fashion'")
    _check_split(split)
    folder = _IDX_FOLDER[name]
    raw = resolve_data_root(data_root) / folder / "raw"
    files = _IDX_FILES[split]
    missing = [f for f in files if not (raw / f).is_file()]
    reasons = [r for f in missing if download and (r := _fetch(folder, f, raw / f)) is not None]
    missing = [f for f in files if not (raw / f).is_file()]
    if missing:
        why = f"download failed ({reasons[0]})" if reasons else "download=False"
        raise ArsmoothError(
            f"{folder} files missing: put {', '.join(missing)} in {raw} (official files, md5s in "
            f"arsmooth.data.image_sets._IDX_MD5), or point ARSMOOTH_DATA / data_root at a folder with them; {why}"
        )
    for f in files:
        _verify(raw / f, *_IDX_MD5[(folder, f)])
    images = _read_idx(raw / files[0], 3)
    labels = _read_idx(raw / files[1], 1)
    n = _IDX_COUNT[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,) or labels.max() > 9:
        raise ArsmoothError(
            f"{raw} holds images {images.shape} and labels {labels.shape}, expected ({n}, 28, 28) and ({n},) "
            "with labels 0..9; replace the files with the official ones"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle archive, user supplied)

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# the published md5s (https://www.cs.toronto.edu/~kriz/cifar.html; the same values torchvision checks) and the
# archive's size; each file is checked once per version (path, size, mtime) in a process
CIFAR_MD5: dict[str, tuple[int | None, str]] = {
    CIFAR_ARCHIVE: (170_498_071, "c58f30108f718f92721af3b95e74349a"),
    "data_batch_1": (None, "c99cafc152244af753f735de768cd75f"),
    "data_batch_2": (None, "d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3": (None, "54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4": (None, "634d18415352ddfa80567beed471001a"),
    "data_batch_5": (None, "482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch": (None, "40351d587109b95175f43aff81a1287e"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle cannot run arbitrary code here."""

    # looked up through the objects themselves: numpy 1 and 2 name their modules differently
    _NUMPY = {
        "_reconstruct": np.zeros(1).__reduce__()[0],
        "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],  # pickle protocol 5
        "scalar": np.uint8(0).__reduce__()[0],
        "ndarray": np.ndarray,
        "dtype": np.dtype,
    }

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in self._NUMPY:
            return self._NUMPY[name]
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles store bytes through it
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as e:
        msg = f"{where} is not a CIFAR-10 python batch ({e}); re-download {CIFAR_ARCHIVE}"
        raise ArsmoothError(msg) from e
    if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
        raise ArsmoothError(
            f"{where} holds data {x.shape} and labels {y.shape}, expected (n, 3072) and (n,); "
            f"re-download {CIFAR_ARCHIVE}"
        )
    return x, y


def load_cifar10(split: str, data_root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` or ``<root>/cifar-10-python.tar.gz``.

    Returns ``uint8 (N, 3, 32, 32)`` and ``int64 (N,)``. Never downloads; the pickles are read with
    an unpickler that accepts numpy arrays and plain containers only.
    """
    _check_split(split)
    root = resolve_data_root(data_root)
    names = _CIFAR_BATCHES[split]
    if (root / CIFAR_FOLDER).is_dir():
        blobs = {}
        for n in names:
            p = root / CIFAR_FOLDER / n
            if not p.is_file():
                raise ArsmoothError(f"{p} is missing: extract {CIFAR_ARCHIVE} again into {root}")
            _verify(p, *CIFAR_MD5[n])
            blobs[n] = (p.read_bytes(), str(p))
    elif (root / CIFAR_ARCHIVE).is_file():
        arch = root / CIFAR_ARCHIVE
        _verify(arch, *CIFAR_MD5[CIFAR_ARCHIVE])
        blobs = {}
        try:
            with tarfile.open(arch, "r:gz") as tar:
                for n in names:
                    f = tar.extractfile(f"{CIFAR_FOLDER}/{n}")
                    if f is None:
                        raise KeyError(n)
                    blobs[n] = (f.read(), f"{arch}:{CIFAR_FOLDER}/{n}")
        except (tarfile.TarError, KeyError, OSError, EOFError) as e:
            raise ArsmoothError(f"{arch} is unreadable or lacks {CIFAR_FOLDER}/{e}; download it again") from e
    else:
        raise ArsmoothError(
            f"CIFAR-10 not found: put {CIFAR_ARCHIVE} (https://www.cs.toronto.edu/~kriz/cifar.html) "
            f"or its extracted {CIFAR_FOLDER}/ folder in {root}, or set ARSMOOTH_DATA / data_root"
        )
    parts = [_unpickle_batch(*blobs[n]) for n in names]
    x = np.concatenate([p[0] for p in parts])  # (N, 3072): R plane, G plane, B plane, each row-major
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x).view(-1, 3, 32, 32), torch.from_numpy(y)


# ---------------------------------------------------------------------------------------------
# a folder of images, CelebA

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
CELEBA_SEED = 2020
CELEBA_CROP = 140
CELEBA_SIZE = 32


def _image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ArsmoothError(f"image folder {folder} does not exist: pass a folder of image files (if a run stored this "
                            "path and the folder moved: evaluate --dataset folder:NEWPATH, train --resume --set "
                            "data.dataset=folder:NEWPATH)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ArsmoothError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    return files


def _load_files(files: list[Path], size: int, channels: int, center_crop: int | None) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    if channels not in _MODE_FOR_CHANNELS:
        raise ArsmoothError(f"channels={channels!r}: expected 1 (greyscale, mode 'L') or 3 (mode 'RGB')")
    if size < 1 or (center_crop is not None and center_crop < 1):
        raise ArsmoothError(f"size={size}, center_crop={center_crop}: expected positive integers")
    mode = _MODE_FOR_CHANNELS[channels]
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            out[i] = _read_one(p, size, channels, center_crop, mode, bilinear)
        except (UnidentifiedImageError, OSError, ValueError) as e:  # e.g. a truncated PNG, when its pixels are read
            raise ArsmoothError(f"{p} is not a readable image ({e or type(e).__name__}); "
                                "remove or replace it") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def _read_one(p: Path, size: int, channels: int, center_crop: int | None, mode: str, bilinear) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as im:
        if im.mode != mode:
            raise ArsmoothError(
                f"{p} has mode {im.mode!r}, expected {mode!r} for channels={channels}; convert the "
                f"images (e.g. Pillow's Image.convert({mode!r})) or pass the matching channels"
            )
        w, h = im.size
        if center_crop is not None:
            if center_crop > min(w, h):
                msg = f"{p} is {w}x{h}, smaller than center_crop={center_crop}; pass a smaller crop"
                raise ArsmoothError(msg)
            left, top = round((w - center_crop) / 2), round((h - center_crop) / 2)
            im = im.crop((left, top, left + center_crop, top + center_crop))
        elif w != h:
            msg = f"{p} is {w}x{h}, not square: pass center_crop to crop it before resizing"
            raise ArsmoothError(msg)
        if im.size != (size, size):
            im = im.resize((size, size), bilinear)
        return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)


def load_image_folder(
    path: str | Path, size: int, channels: int, center_crop: int | None = None
) -> Tensor:
    """All images under ``path`` (sorted, recursive) as ``uint8 (N, channels, size, size)``.

    Each image is centre-cropped to ``center_crop`` (if given; else it must be square), then resized
    bilinearly. Modes are not converted: ``channels=1`` needs 'L' images, ``channels=3`` 'RGB'.
    """
    return _load_files(_image_files(path), size, channels, center_crop)


FOLDER_TEST_FRACTION = 0.1


def _split_files(files: list[Path], split: str, seed: int, train_fraction: float = 0.7,
                 test_fraction: float = 0.1) -> list[Path]:
    """Seeded shuffle of the sorted files, then the first ``train_fraction`` are train and the next
    ``test_fraction`` test. CelebA uses the paper's 70% / 10%; a folder every file (1 - f / f)."""
    _check_split(split)
    order = np.random.RandomState(seed).permutation(len(files))
    n_test = int(round(test_fraction * len(files)))
    n_train = len(files) - n_test if train_fraction + test_fraction >= 1 else int(train_fraction * len(files))
    picked = order[:n_train] if split == "train" else order[n_train : n_train + n_test]
    if len(picked) == 0:
        need = math.ceil(0.5 / min(test_fraction, 1 - test_fraction)) if train_fraction + test_fraction >= 1 else \
            math.ceil(1 / min(train_fraction, test_fraction))
        raise ArsmoothError(f"the {split} split of {len(files)} images is empty: the folder needs at least {need} "
                            f"images (with a test share of {test_fraction:g})")
    return [files[i] for i in picked]


def load_celeba(folder: str | Path, split: str) -> Tensor:
    """CelebA 32x32 as in the official configs: centre crop 140, resize 32, seed-2020 shuffle, 70%/10%.

    ``folder`` holds the aligned images (``img_align_celeba``, 178x218 RGB). Returns ``uint8 (N, 3, 32, 32)``.
    The shuffle is ``numpy.random.RandomState(2020).permutation`` over the sorted file names (ours).
    """
    files = _split_files(_image_files(folder), split, CELEBA_SEED)
    return _load_files(files, CELEBA_SIZE, 3, CELEBA_CROP)


# ---------------------------------------------------------------------------------------------
# scikit-learn's 8x8 digits

DIGITS_N_TRAIN = 1500


def load_digits(split: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """sklearn's 1797 8x8 digits as ``uint8 (N, 1, 8, 8)`` (``round(v * 255 / 16)``) and ``int64`` labels.

    A seeded shuffle, then the first 1500 are train and the remaining 297 test.
    """
    _check_split(split)
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ArsmoothError("the digits dataset needs scikit-learn: pip install 'arsmooth[digits]'") from e
    d = sk_load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    order = np.random.RandomState(seed).permutation(len(x))
    idx = order[:DIGITS_N_TRAIN] if split == "train" else order[DIGITS_N_TRAIN:]
    return torch.from_numpy(x[idx]).unsqueeze(1), torch.from_numpy(d.target[idx].astype(np.int64))


# ---------------------------------------------------------------------------------------------
# units and the single entry point


def to_unit_range(u8: Tensor) -> Tensor:
    """8-bit images to float32 in [-1, 1]: ``u8 / 127.5 - 1`` (bin centres ``2k/255 - 1``)."""
    if u8.dtype != torch.uint8:
        raise ArsmoothError(f"to_unit_range expects a uint8 tensor, got {u8.dtype}; load images as 8-bit")
    return u8.float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """Inverse of ``to_unit_range``: round to the nearest 8-bit level and clamp to 0..255."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load_dataset(
    name: str, split: str, data_root: str | Path | None = None, **kw
) -> tuple[Tensor, Tensor | None]:
    """Images in [-1, 1] ``float32 (N, C, H, W)`` and labels (``None`` for CelebA and folders).

    Names: ``mnist``, ``fashion`` (kw ``download``), ``cifar10``, ``digits`` (kw ``seed``), ``celeba``
    (``<root>/celeba/img_align_celeba``) or ``celeba:<folder>``, and ``folder:<folder>`` (kw ``size``,
    ``channels``, ``center_crop``; split ``all``, or ``train``/``test`` cut as for CelebA).
    """
    known = name in (*_IDX_FOLDER, "cifar10", "digits", "celeba") or name.startswith(("celeba:", "folder:"))
    if not known:
        raise ArsmoothError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    accepted: tuple[str, ...] = ()
    if name in _IDX_FOLDER:
        accepted = ("download",)
    elif name == "digits":
        accepted = ("seed",)
    elif name.startswith("folder:"):
        accepted = ("size", "channels", "center_crop", "test_fraction")
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise ArsmoothError(
            f"dataset {name!r} takes no option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )

    labels: Tensor | None = None
    if name in _IDX_FOLDER:
        images, labels = load_idx_dataset(name, split, data_root, **kw)
    elif name == "cifar10":
        images, labels = load_cifar10(split, data_root)
    elif name == "digits":
        images, labels = load_digits(split, **kw)
    elif name == "celeba" or name.startswith("celeba:"):
        default = resolve_data_root(data_root) / "celeba" / "img_align_celeba"
        folder = name[len("celeba:") :] if ":" in name else default
        if folder is default and not default.is_dir():
            raise ArsmoothError(f"no CelebA images in {default}: put the aligned images (img_align_celeba, from the "
                                "CelebA site) there, or point --data-root / $ARSMOOTH_DATA at the folder that holds "
                                "celeba/img_align_celeba")
        images = load_celeba(folder, split)
    else:  # folder:<path>
        missing = [k for k in ("size", "channels") if kw.get(k) is None]
        if missing:
            raise ArsmoothError(f"dataset {name!r} needs {' and '.join('data.' + k for k in missing)} "
                                "(e.g. --set data.size=32 --set data.channels=3)")
        files = _image_files(name[len("folder:") :])
        if split != "all":
            _check_split(split, SPLITS + ("all",))
            f = kw.get("test_fraction") or FOLDER_TEST_FRACTION
            files = _split_files(files, split, CELEBA_SEED, 1 - f, f)
        images = _load_files(files, kw["size"], kw["channels"], kw.get("center_crop"))
    return to_unit_range(images), labels


FOLDER_KEYS = ("size", "channels", "center_crop", "test_fraction")  # data.* settings of folder:<path>


def load_configured(data: DataSettings, split: str) -> tuple[Tensor, Tensor | None]:
    """The ``split`` of the dataset the ``data`` settings name, with its folder settings."""
    kw = {}
    if data.dataset.startswith("folder:"):
        kw = {k: getattr(data, k) for k in FOLDER_KEYS if getattr(data, k) is not None}
    return load_dataset(data.dataset, split, data.data_root, **kw)
