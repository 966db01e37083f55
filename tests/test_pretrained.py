"""The pretrained models that ship inside the package: exact export, SHA-256 checks, the CLI paths."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from arsmooth.cli import main
from arsmooth.errors import ArsmoothError
from arsmooth.models import pretrained as P
from arsmooth.runtime import checkpoint as C


def test_every_shipped_file_matches_its_manifest_and_loads():
    m = P.manifest()
    assert {"mnist", "fashion"} <= set(m), "the package ships the pretrained MNIST and Fashion-MNIST models"
    for name, models in m.items():
        assert set(models) <= set(P.KINDS)
        sigmas = set()
        for kind, e in models.items():
            assert P.sha256_of(P.WEIGHTS_DIR / e["file"]) == e["sha256"]
            ck = P.checkpoint(name, kind)
            assert ck["kind"] == kind and ck["config"]["kind"] == kind
            assert ck["config"]["data"]["data_root"] is None  # no path of the machine that trained it
            if kind != "baseline":
                sigmas.add(ck["sigma"])
        assert len(sigmas) <= 1, "stage 1 and stage 2 must share sigma"


def _tiny_run(tmp_path, preset="digits-stage1"):
    from arsmooth.runtime.config import load_config
    from arsmooth.training.trainer import train

    run = tmp_path / "runs" / preset.split("-")[1]
    train(load_config(preset, ["train.max_steps=2", "train.eval_images=4"]), run, progress=False)
    return run


def test_ship_is_exact_and_a_damaged_file_is_refused(tmp_path):
    from arsmooth.models.build import model_from_checkpoint

    run = _tiny_run(tmp_path)
    root = tmp_path / "weights"
    e = P.ship("tiny", {"stage1": run}, root)["stage1"]
    assert e["step"] == 2 and e["images_seen"] == 2 * C.load_checkpoint(run / "last.pt")["config"]["train"]["batch_size"]
    a = model_from_checkpoint(C.load_checkpoint(run / "last.pt"))
    b = model_from_checkpoint(P.checkpoint("tiny", "stage1", root))
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert torch.equal(a.log_prob(x), b.log_prob(x))
    with pytest.raises(ArsmoothError, match="no stage2"):
        P.checkpoint("tiny", "stage2", root)
    with pytest.raises(ArsmoothError, match="no pretrained models named 'nope'; shipped: tiny"):
        P.checkpoint("nope", "stage1", root)
    f = root / e["file"]
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in a weight
    f.write_bytes(bytes(data))
    with pytest.raises(ArsmoothError, match="damaged or replaced") as err:
        P.checkpoint("tiny", "stage1", root)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "fashion"])
@pytest.mark.slow
def test_sample_pretrained_from_the_cli(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARSMOOTH_DATA", raising=False)
    for method in ("baseline", "two-step"):
        assert main(["sample", "--pretrained", name, "--method", method, "-n", "2", "--out", "s",
                     "--no-progress", "--threads", "1"]) == 0
        u8 = np.load(tmp_path / "s" / f"samples_{method.replace('-', '_')}.npz")["uint8"]
        assert u8.shape == (2, 1, 28, 28) and u8.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # nothing downloaded, no ./data


def test_cli_refuses_a_damaged_weights_file_in_one_line(tmp_path, monkeypatch, capsys):
    root = tmp_path / "weights"
    shutil.copytree(P.WEIGHTS_DIR, root)
    entry = json.loads((root / "manifest.json").read_text())["mnist"]["stage2"]
    f = root / entry["file"]
    f.write_bytes(f.read_bytes()[:-100])  # truncated
    monkeypatch.setattr(P, "WEIGHTS_DIR", root)
    rc = main(["sample", "--pretrained", "mnist", "--method", "two-step", "-n", "1", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "damaged or replaced" in err
    assert not (tmp_path / "s").exists()
    assert main(["sample", "--pretrained", "mnist", "--stage1", "x", "--out", str(tmp_path / "s")]) == 2
    assert "give one or the other" in capsys.readouterr().err
