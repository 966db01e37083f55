"""Run every ``arsmooth reproduce`` name with ``--quick`` (seed 0, one thread) into OUT: the check that a
refactor changes no number. CIFAR-10 and CelebA get the small fake archives the tests make.

    PYTHONPATH=OLD_CHECKOUT/src python scripts/quick_all.py /tmp/before
    PYTHONPATH=NEW_CHECKOUT/src python scripts/quick_all.py /tmp/after
    python scripts/compare_runs.py /tmp/before /tmp/after

Run from the repository root (it borrows the fake-data helper of ``tests/``); about 3 minutes.
"""

import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("ARSMOOTH_DATA", None)  # mnist / fashion --quick run on the bundled digits

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import arsmooth.data.image_sets as im  # noqa: E402
from arsmooth.experiments import EXPERIMENTS, reproduce  # noqa: E402
from test_image_data import _fake_cifar  # noqa: E402

out = Path(sys.argv[1])
data = out / "data"
data.mkdir(parents=True, exist_ok=True)
_fake_cifar(data, 16, as_archive=True)
folder = data / "celeba" / "img_align_celeba"
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.RandomState(0)
for i in range(80):
    Image.fromarray(rng.randint(0, 256, (218, 178, 3)).astype(np.uint8)).save(folder / f"{i:06d}.jpg")
table = dict(im.CIFAR_MD5)  # the fake archive's own checksum, as the tests trust it
for name in table:
    for p in (data / name, data / im.CIFAR_FOLDER / name):
        if p.is_file():
            table[name] = (p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest())
im.CIFAR_MD5 = table
torch.set_num_threads(1)
for name in EXPERIMENTS:
    t = time.time()
    kw = {"data_root": str(data)} if name in ("cifar10", "celeba") else {}
    reproduce(name, out / name, quick=True, progress=False, force=True, **kw)
    print(name, "ok", round(time.time() - t), "s", flush=True)
