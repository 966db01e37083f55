"""Checkpoints: round trips, atomic writes, safe loading, clear errors on any bytes (property-based)."""

import io
import os
import pickle
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arsmooth.errors import ArsmoothError, WriteFailed
from arsmooth.runtime import checkpoint as C


def _save(path, kind="stage1", config=None, **kw):
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    C.save_checkpoint(path, kind=kind, model_state=m.state_dict(), config=config or {"a": {"b": 1, "c": [1.5, "x", None]}},
                      sigma=0.5, step=7, optimizer_state=opt.state_dict(), scheduler_state=sched.state_dict(),
                      rng_state=C.capture_rng(), extra={"image_shape": [1, 8, 8]}, **kw)
    return m, opt, sched


@pytest.mark.slow
def test_round_trip(tmp_path):
    m, opt, sched = _save(tmp_path / "c.pt")
    ck = C.load_checkpoint(tmp_path / "c.pt", expect_kind=("stage1", "stage2"))
    assert ck["kind"] == "stage1" and ck["sigma"] == 0.5 and ck["step"] == 7
    assert ck["config"] == {"a": {"b": 1, "c": [1.5, "x", None]}}
    assert all(torch.equal(ck["model"][k], v) for k, v in m.state_dict().items())
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(ck["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert ck["scheduler"]["last_epoch"] == sched.state_dict()["last_epoch"]


def test_rng_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(C.capture_rng(), tmp_path / "r.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    C.restore_rng(torch.load(tmp_path / "r.pt", weights_only=True))
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_a_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    _save(path)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C.torch, "save", broken_save)
    with pytest.raises(WriteFailed, match="No space left on device.*the previous c.pt is intact"):
        _save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary file left behind


def test_errors_are_one_line(tmp_path):
    path = tmp_path / "c.pt"
    _save(path, kind="stage2")
    cases = {"stage2 checkpoint but a stage1": lambda: C.load_checkpoint(path, expect_kind="stage1"),
             "no checkpoint at": lambda: C.load_checkpoint(tmp_path / "missing.pt"),
             "is a folder": lambda: C.load_checkpoint(tmp_path)}
    half = tmp_path / "half.pt"
    half.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    cases["truncated or corrupt"] = lambda: C.load_checkpoint(half)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    cases["corrupt: not a zip archive"] = lambda: C.load_checkpoint(junk)
    newer = tmp_path / "newer.pt"
    ck = torch.load(path, weights_only=True)
    ck["format_version"] = 99
    torch.save(ck, newer)
    cases["format 99; this arsmooth reads format 1"] = lambda: C.load_checkpoint(newer)
    for msg, fn in cases.items():
        with pytest.raises(ArsmoothError) as e:
            fn()
        assert msg in str(e.value) and "\n" not in str(e.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"model": _Payload(marker)}, buf, pickle_protocol=2)
    evil.write_bytes(buf.getvalue())
    with pytest.raises(ArsmoothError, match="not a readable arsmooth checkpoint"):
        C.load_checkpoint(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ArsmoothError):
        C.load_checkpoint(raw)
    assert not marker.exists()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_random_bytes_load_or_fail_cleanly(tmp_path, data):
    path = tmp_path / "rand.pt"
    path.write_bytes(data)
    try:
        ck = C.load_checkpoint(path)
    except ArsmoothError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(ck, dict)


_prim = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
_bad = st.sampled_from([object(), {1, 2}, b"bytes", torch.zeros(1), complex(1, 2)])
_config = st.recursive(_prim | _bad, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                       max_leaves=8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=st.dictionaries(st.text(max_size=4), _config, max_size=4))
def test_random_configs_round_trip_or_fail_cleanly(tmp_path, cfg):
    path = tmp_path / "c.pt"
    try:
        C.save_checkpoint(path, kind="baseline", model_state={"w": torch.ones(2)}, config=cfg, sigma=None, step=0)
    except ArsmoothError as e:
        assert "\n" not in str(e)
        return
    assert C.load_checkpoint(path)["config"] == cfg


def test_safetensors_round_trip_and_garbage(tmp_path):
    _save(tmp_path / "c.pt", kind="baseline")
    ck = C.load_checkpoint(tmp_path / "c.pt")
    C.export_safetensors(ck, tmp_path / "w.safetensors")
    back = C.import_safetensors(tmp_path / "w.safetensors", expect_kind="baseline")
    assert back["kind"] == "baseline" and back["sigma"] == 0.5 and back["config"] == ck["config"]
    assert all(torch.equal(back["model"][k], v) for k, v in ck["model"].items())
    with pytest.raises(ArsmoothError, match="stage1"):
        C.import_safetensors(tmp_path / "w.safetensors", expect_kind="stage1")
    (tmp_path / "g.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ArsmoothError, match="not a readable"):
        C.import_safetensors(tmp_path / "g.safetensors")


def test_check_same_sigma():
    C.check_same_sigma({"sigma": 0.3}, {"sigma": 0.3})
    with pytest.raises(ArsmoothError, match="sigma 0.3 and stage 2 with sigma 0.5"):
        C.check_same_sigma({"sigma": 0.3}, {"sigma": 0.5})


@pytest.mark.slow
def test_export_command_and_model_from_safetensors(tmp_path):
    import subprocess
    import sys

    from arsmooth.models.build import model_from_checkpoint
    from arsmooth.runtime.config import load_config
    from arsmooth.training.trainer import train

    train(load_config("digits-stage1", ["train.max_steps=2", "train.eval_images=4"]), tmp_path / "r", progress=False)
    cli = [sys.executable, "-m", "arsmooth.cli", "export", str(tmp_path / "r" / "last.pt"), str(tmp_path / "w.safetensors")]
    assert subprocess.run(cli, capture_output=True, timeout=120).returncode == 0
    p = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "already exists" in p.stderr  # nothing overwritten
    a = model_from_checkpoint(C.load_checkpoint(tmp_path / "r" / "last.pt"))
    b = model_from_checkpoint(C.import_safetensors(tmp_path / "w.safetensors", expect_kind="stage1"))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(a.log_prob(x), b.log_prob(x))
