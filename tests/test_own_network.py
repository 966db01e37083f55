"""docs/own_network.md runs as written: a network defined in the example itself, registered through the
public interface, trained as baseline, stage 1 and stage 2, sampled two-step and single-step and scored.
(Its contract, the one every network runs, is in tests/test_networks.py.)"""

import math
import subprocess
import sys

import pytest
import torch

from arsmooth.errors import ArsmoothError
from conftest import own_network, own_network_blocks


@pytest.mark.slow
def test_the_docs_network_trains_samples_and_scores(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = own_network()
    exec(compile(own_network_blocks()[1], "docs/own_network.md block 2", "exec"), ns)
    out = capsys.readouterr().out
    assert out.count("40 steps") == 3, out
    model = ns["baseline"]
    assert type(model.net).__name__ == "MaskedCNN" and type(ns["pair"].reverse.net).__name__ == "MaskedCNN"
    assert ns["pair"].reverse.net.encoder is not None and ns["pair"].prior.net.encoder is None
    assert ns["ckpt"]["config"]["model"]["network"] == "masked-cnn"
    for x in (ns["two_step"], ns["single_step"]):
        assert x.shape == (16, 1, 8, 8) and torch.isfinite(x).all()
    s = ns["scores"]
    assert all(math.isfinite(s[k]) and 0 < s[k] < 9 for k in ("baseline", "two_step_elbo", "two_step_iw"))
    assert s["two_step_iw"] <= s["two_step_elbo"] + 1e-9  # IW(K=4) is the tighter bound (paper eq. 5)


@pytest.mark.slow
def test_its_checkpoint_is_refused_in_one_line_where_the_network_is_not_registered(tmp_path):
    ns = own_network()
    from arsmooth.runtime.config import load_config
    from arsmooth.training.trainer import train

    train(load_config("digits-baseline", ["model.network=masked-cnn", "train.max_steps=2"]), tmp_path / "run",
          progress=False)
    assert ns["MaskedCNN"]  # registered here; a fresh process has not registered it:
    r = subprocess.run([sys.executable, "-m", "arsmooth", "sample", "--baseline", str(tmp_path / "run" / "last.pt"),
                        "--method", "baseline", "-n", "2", "--out", str(tmp_path / "s")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "register_network" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_registering_refuses_shipped_names_and_unknown_shape_keys():
    from arsmooth.networks import register_network

    with pytest.raises(ArsmoothError, match="shipped"):
        register_network("transformer", lambda *a: None)
    with pytest.raises(ArsmoothError, match="no model setting"):
        register_network("mine", lambda *a: None, shape_keys=("width",))


def test_a_network_lacking_the_interface_is_refused_by_name():
    from arsmooth.networks import build_network, register_network
    from arsmooth.runtime.config import ModelSettings

    register_network("bare", lambda c, m, size, cond: torch.nn.Linear(1, 1))
    with pytest.raises(ArsmoothError, match="in_channels.*ARImageNetwork"):
        build_network(1, ModelSettings(network="bare"), image_size=(4, 4), conditioned=False)
