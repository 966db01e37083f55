"""Image training: presets and overrides, run folders, exact resume after SIGKILL, numerical faults."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from arsmooth.errors import ArsmoothError
from arsmooth.runtime import checkpoint as C
from arsmooth.runtime.config import Settings, load_config, preset_names
from arsmooth.training.trainer import train


def _cfg(kind="stage1", *sets):
    return load_config(f"digits-{kind}", ["train.max_steps=12", "train.checkpoint_every=5", "train.eval_images=16",
                                          *sets])


def test_presets_and_overrides():
    assert {"mnist-cpu-stage1", "mnist-stage2", "fashion-cpu-baseline", "digits-stage2"} <= set(preset_names())
    cfg = load_config("fashion-cpu-stage1", ["smoothing.sigma=0.3", "train.batch_size=8", "train.ema=0.99"])
    assert cfg.data.dataset == "fashion" and cfg.smoothing.sigma == 0.3
    assert cfg.train.batch_size == 8 and cfg.train.ema == 0.99
    for bad, msg in [("smoothing.sigma=0", "sigma"), ("smoothing.sigma=-1", "sigma"), ("train.batch_size=0", "batch_size"),
                     ("train.nope=1", "unknown config key 'train.nope'"), ("kind=stage3", "kind"), ("train=3", "section"),
                     ("model.dropout=1.5", "dropout"), ("nonsense", "section.key=value")]:
        with pytest.raises(ArsmoothError, match=msg):
            load_config("digits-stage1", [bad])
    with pytest.raises(ArsmoothError, match="unknown preset"):
        load_config("cifar-huge")


def test_cifar10_and_celeba_presets_carry_the_papers_settings():
    from arsmooth.models.build import build_model

    names = set(preset_names())
    for kind in ("baseline", "stage1", "stage2", "stage2-spatial"):
        for size in ("", "small-"):
            c, a = load_config(f"cifar10-{size}{kind}"), load_config(f"celeba-{size}{kind}")
            assert c.data.dataset == "cifar10" and a.data.dataset == "celeba"
            assert dataclasses.replace(a, data=c.data) == c and f"celeba-{size}{kind}" in names
            assert c.smoothing.sigma == 0.3 and c.model.nr_logistic_mix == 10
            assert (c.train.lr, c.train.lr_decay, c.model.dropout) == (2e-4, 0.999995, 0.5)
            assert c.train.batch_size == (50 if kind.startswith("stage2") else 80)
    paper = load_config("cifar10-stage1").model
    assert (paper.nr_resnet, paper.nr_filters) == (5, 160)
    n = lambda cfg: sum(p.numel() for p in build_model(cfg, (3, 32, 32)).parameters())  # noqa: E731
    stacked, spatial = n(load_config("cifar10-small-stage2")), n(load_config("cifar10-small-stage2-spatial"))
    assert abs(spatial - stacked) < 0.02 * stacked  # the two designs at about equal parameters


@pytest.mark.slow
def test_training_writes_run_and_refuses_to_clobber(tmp_path):
    s = train(_cfg("stage2"), tmp_path / "r", progress=False)
    assert s["steps"] == 12 and s["stopped"] == "max_steps" and s["test_bpd"] > 0
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("train_bpd" in x for x in lines) and any(x.get("checkpoint") for x in lines)
    ck = C.load_checkpoint(tmp_path / "r" / "last.pt", expect_kind="stage2")
    assert ck["step"] == 12 and ck["sigma"] == 0.5 and ck["config"]["kind"] == "stage2"
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(ArsmoothError, match="already holds a run"):
        train(_cfg("stage2"), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    with pytest.raises(ArsmoothError, match="stage2 checkpoint but a stage1"):
        C.load_checkpoint(tmp_path / "r" / "last.pt", expect_kind="stage1")


def _params(path):
    return C.load_checkpoint(path)["model"]


@pytest.mark.parametrize("kind,sets", [("stage1", ()), ("smoothed", ("smoothing.learn_sigma=true",))])
@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, kind, sets):
    """Kill a run with SIGKILL at step 8 (checkpoint every 5), resume, compare with a clean run."""
    cfg = _cfg(kind, "model.dropout=0.3", "train.ema=0.9", *sets)  # dropout and EMA exercise RNG and extra state
    ref = tmp_path / "ref"
    train(cfg, ref, progress=False)
    crashed = tmp_path / "crashed"
    code = ("import sys, yaml; from arsmooth.training.trainer import train; "
            "train(yaml.safe_load(open(sys.argv[1])), sys.argv[2], progress=False)")
    (tmp_path / "cfg.yaml").write_text(__import__("yaml").safe_dump(cfg.to_dict()))
    env = {**os.environ, "ARSMOOTH_KILL_AT_STEP": "8", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg.yaml"), str(crashed)], env=env,
                       capture_output=True, timeout=300)
    assert p.returncode == -9, p.stderr.decode()[-500:]
    # nothing older than the last checkpoint interval is lost
    ck = C.load_checkpoint(crashed / "last.pt")
    assert ck["step"] == 5 and 8 - ck["step"] < cfg.train.checkpoint_every
    assert not (crashed / "summary.json").exists()
    s = train(None, crashed, resume=True, progress=False)
    assert s["steps"] == 12
    a, b = _params(ref / "last.pt"), _params(crashed / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea, eb = C.load_checkpoint(ref / "last.pt")["ema"], C.load_checkpoint(crashed / "last.pt")["ema"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    steps = [json.loads(x)["step"] for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # lines logged after the checkpoint were dropped, then logged again


@pytest.mark.slow
def test_resume_refuses_a_different_config(tmp_path):
    train(_cfg("stage1"), tmp_path / "r", progress=False)
    with pytest.raises(ArsmoothError, match="smoothing.sigma"):
        train(_cfg("stage1", "smoothing.sigma=0.2"), tmp_path / "r", resume=True, progress=False)
    s = train(_cfg("stage1", "train.max_steps=14"), tmp_path / "r", resume=True, progress=False)  # a bigger budget is fine
    assert s["steps"] == 14


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import arsmooth.training.trainer as T

    real = T.loss_given_noise
    calls = {"n": 0}

    def flaky(model, x, x_tilde):
        calls["n"] += 1
        loss = real(model, x, x_tilde)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(T, "loss_given_noise", flaky)
    with pytest.raises(ArsmoothError, match="became nan at step 7.*step 5"):
        train(_cfg("baseline"), tmp_path / "r", progress=False)
    ck = C.load_checkpoint(tmp_path / "r" / "last.pt")
    assert ck["step"] == 5
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.dtype.is_floating_point)


@pytest.mark.slow
def test_cli_train_and_errors(tmp_path):
    run = [sys.executable, "-m", "arsmooth.cli", "train"]
    p = subprocess.run(run + ["digits-stage1", "--out", str(tmp_path / "r"), "--max-steps", "3", "--no-progress",
                              "--set", "train.eval_images=8"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for args, msg in [(["digits-stage1", "--out", str(tmp_path / "r")], "already holds a run"),
                      (["digits-stage1", "--out", str(tmp_path / "x"), "--set", "smoothing.sigma=0"], "sigma"),
                      (["digits-stage1", "--out", str(tmp_path / "x"), "--set", "train.batch_size=0"], "batch_size"),
                      (["nope", "--out", str(tmp_path / "x")], "unknown preset"),
                      (["--resume", "--out", str(tmp_path / "y")], "nothing to resume")]:
        p = subprocess.run(run + args, capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.slow
def test_wrong_image_size_is_refused_before_anything_is_written(tmp_path):
    imgs = torch.zeros(40, 1, 10, 10)
    with pytest.raises(ArsmoothError, match="divisible by 4"):
        train(_cfg("baseline"), tmp_path / "r", train_images=imgs, progress=False)
    assert not (tmp_path / "r" / "config.yaml").exists()
    train(_cfg("baseline"), tmp_path / "r", progress=False)  # the folder is still usable
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(ArsmoothError, match=r"trained on images \(1, 8, 8\), these are \(3, 8, 8\)"):
        train(None, tmp_path / "r", resume=True, train_images=torch.zeros(40, 3, 8, 8), progress=False)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_cli_refuses_mixed_up_checkpoints(tmp_path):
    train(_cfg("stage1"), tmp_path / "s1", progress=False)
    train(_cfg("stage2", "smoothing.sigma=0.3"), tmp_path / "s2", progress=False)
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    s1, s2 = str(tmp_path / "s1" / "last.pt"), str(tmp_path / "s2" / "last.pt")
    cli = [sys.executable, "-m", "arsmooth.cli"]
    for args, msg in [(["sample", "--stage1", s2, "--stage2", s1], "stage2 checkpoint but a stage1"),
                      (["sample", "--stage1", s1, "--stage2", s2], "sigma 0.5 and stage 2 with sigma 0.3"),
                      (["sample", "--method", "baseline", "--baseline", s1], "stage1 checkpoint but a baseline"),
                      (["sample", "--method", "baseline", "--baseline", str(tmp_path / "junk.pt")], "truncated or corrupt"),
                      (["evaluate", "--stage1", s1, "--stage2", s2, "--iw", "-1"], "must be >= 0")]:
        p = subprocess.run(cli + args + (["--out", str(tmp_path / "o")] if args[0] == "sample" else []),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.slow
def test_gpu_options_do_not_change_cpu_runs(tmp_path):
    a = train(_cfg("stage2", "train.max_steps=3", "device=cpu"), tmp_path / "a", progress=False)
    b = train(_cfg("stage2", "train.max_steps=3", "device=cpu", "gpu.bf16=true", "gpu.channels_last=true"),
              tmp_path / "b", progress=False)
    assert a["steps"] == b["steps"] == 3
    ma, mb = C.load_checkpoint(tmp_path / "a" / "last.pt")["model"], C.load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    with pytest.raises(ArsmoothError, match="gpu.bf16 must be true or false"):
        _cfg("stage2", "gpu.bf16=3")



@pytest.mark.slow
def test_init_from_copies_the_weights_exactly_and_refuses_other_shapes(tmp_path):
    train(_cfg("baseline"), tmp_path / "base", progress=False)
    base = C.load_checkpoint(tmp_path / "base" / "last.pt")
    s1 = _cfg("stage1", "train.max_steps=0")
    train(s1, tmp_path / "warm", progress=False, init_from=tmp_path / "base" / "last.pt")
    warm = C.load_checkpoint(tmp_path / "warm" / "last.pt")
    assert all(torch.equal(warm["model"][k], base["model"][k]) for k in base["model"])  # exact copies
    assert warm["extra"]["init_from"]["kind"] == "baseline" and warm["extra"]["init_from"]["step"] == 12
    assert warm["optimizer"]["state"] == {}  # the optimizer starts fresh
    # a few steps on: the record stays, the weights move
    train(load_config(str(tmp_path / "warm" / "config.yaml"), ["train.max_steps=2"]), tmp_path / "warm",
          resume=True, progress=False)
    moved = C.load_checkpoint(tmp_path / "warm" / "last.pt")
    assert moved["extra"]["init_from"]["path"].endswith("last.pt")
    assert any(not torch.equal(moved["model"][k], base["model"][k]) for k in base["model"])
    # a spatial stage 2 takes the body and keeps its own encoder at its initial values
    sp = load_config("digits-stage2-spatial", ["train.max_steps=0", "model.nr_filters=8", "train.eval_images=8"])
    train(sp, tmp_path / "sp", progress=False, init_from=tmp_path / "base" / "last.pt")
    ck = C.load_checkpoint(tmp_path / "sp" / "last.pt")
    assert ck["extra"]["init_from"]["kept_initial"] > 0
    assert all(torch.equal(ck["model"][k], base["model"][k]) for k in base["model"])
    for sets, msg in [(["model.nr_filters=9"], "model.nr_filters=8, this run model.nr_filters=9"),
                      (["model.nr_resnet=2"], "model.nr_resnet=1, this run model.nr_resnet=2")]:
        with pytest.raises(ArsmoothError, match=msg):
            train(_cfg("stage1", *sets), tmp_path / "bad", progress=False, overwrite=True,
                  init_from=tmp_path / "base" / "last.pt")
        assert not (tmp_path / "bad" / "config.yaml").exists()
    with pytest.raises(ArsmoothError, match="no place"):  # a spatial stage 2 cannot start a baseline
        train(_cfg("baseline", "model.nr_filters=8"), tmp_path / "bad2", progress=False,
              init_from=tmp_path / "sp" / "last.pt")
    with pytest.raises(ArsmoothError, match="starts a new run"):
        train(None, tmp_path / "warm", resume=True, progress=False, init_from=tmp_path / "base" / "last.pt")


@pytest.mark.slow
def test_smoothed_kind_trains_both_stages_on_the_elbo_and_learns_sigma(tmp_path):
    """kind smoothed: loss = -ELBO of the pair (the library's S.elbo, entropy included), sigma learned and
    recorded, and the checkpoint serves as stage 1 and stage 2 for every tool."""
    from arsmooth.evaluation import tasks as I
    from arsmooth.maths import smoothing as S
    from arsmooth.maths.kernels import Gaussian
    from arsmooth.models.build import build_model

    cfg = _cfg("smoothed", "smoothing.learn_sigma=true")
    model = build_model(cfg, (1, 8, 8)).double().eval()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pair = S.SmoothedPair(model.prior, model.reverse)
    ref = S.elbo(pair, Gaussian(0.5), x, 1, torch.Generator().manual_seed(3))
    assert torch.allclose(model.elbo(x, eps), ref, atol=1e-9)
    (g,) = torch.autograd.grad(model.loss(x, eps), model.log_sigma)
    assert g != 0
    s = train(cfg, tmp_path / "l", progress=False)
    ck = C.load_checkpoint(tmp_path / "l" / "last.pt")
    assert s["steps"] == 12 and ck["kind"] == "smoothed" and ck["sigma"] != 0.5
    assert abs(ck["sigma"] - float(ck["model"]["log_sigma"].exp())) < 1e-12  # the learned value is what is recorded
    sig = [json.loads(x)["sigma"] for x in (tmp_path / "l" / "metrics.jsonl").read_text().splitlines() if "sigma" in x]
    assert len(sig) == 2 and sig[0] != 0.5 and sig[1] != sig[0]  # logged at steps 5 and 10, moving
    fixed = train(_cfg("smoothed"), tmp_path / "f", progress=False)
    assert fixed["steps"] == 12 and C.load_checkpoint(tmp_path / "f" / "last.pt")["sigma"] == 0.5
    # stage 1 and stage 2 of the joint checkpoint, for sample / evaluate / inpaint
    pair, kernel = I.load_pair(tmp_path / "l" / "last.pt", tmp_path / "l" / "last.pt")
    assert kernel.std == ck["sigma"] and pair.prior.kind == "stage1" and pair.reverse.kind == "stage2"
    for name, part in (("prior", pair.prior), ("reverse", pair.reverse)):
        assert all(torch.equal(v, ck["model"][f"{name}.{k}"]) for k, v in part.state_dict().items())
    x = I.sample_images("two-step", 2, pair=pair, kernel=kernel, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8)
    with pytest.raises(ArsmoothError, match="baseline"):
        I.load_model(tmp_path / "l" / "last.pt", "baseline")
    for bad, msg in [(["smoothing.learn_sigma=true"], "needs kind=smoothed"), (["smoothing.kernel=laplace"], "Gaussian")]:
        with pytest.raises(ArsmoothError, match=msg):
            load_config("digits-smoothed" if "kernel" in bad[0] else "digits-stage1", bad)


@pytest.mark.slow
def test_resume_takes_the_process_group_backend_from_the_saved_config(tmp_path, monkeypatch):
    """--resume without a preset: the saved run's device picks gloo vs nccl, even where CUDA is visible."""
    from arsmooth.runtime import distributed as D

    train(_cfg("stage1"), tmp_path / "r", progress=False)  # saved with device: auto
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    seen = []

    def fake_setup(device_type):
        seen.append(device_type)
        raise KeyboardInterrupt  # stop here: only the choice is under test

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(D, "setup", fake_setup)
    for device, backend in (("cpu", "cpu"), ("auto", "cuda")):
        (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump({**cfg, "device": device}))
        with pytest.raises(KeyboardInterrupt):
            train(None, tmp_path / "r", resume=True, progress=False)
        assert seen[-1] == backend


def test_hooks_run_after_every_step_after_its_checkpoint(tmp_path):
    seen = []
    train(_cfg("baseline"), tmp_path / "r", progress=False,
          hooks=[lambda t: seen.append((t.step, (tmp_path / "r" / "last.pt").is_file()))])
    assert [step for step, _ in seen] == list(range(1, 13))
    assert [has for _, has in seen[:5]] == [False] * 4 + [True]  # checkpoint_every=5: written before the hook


def test_dropout_mode_setting_reaches_the_network_and_is_checked():
    from arsmooth.models.build import build_model

    with pytest.raises(ArsmoothError, match="model.dropout_mode must be one of element, channel, got 'pixel'"):
        load_config("digits-baseline", ["model.dropout_mode=pixel"])
    for mode, module in (("element", torch.nn.Dropout), ("channel", torch.nn.Dropout2d)):
        model = build_model(load_config("digits-baseline", [f"model.dropout_mode={mode}"]), (1, 8, 8))
        drops = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        assert drops and all(type(m) is module for m in drops)
    old = load_config("digits-baseline").to_dict()
    del old["model"]["dropout_mode"]  # a config saved before the setting existed: element, as then
    assert all(type(m) is torch.nn.Dropout for m in build_model(Settings.from_dict(old), (1, 8, 8)).modules()
               if isinstance(m, torch.nn.modules.dropout._DropoutNd))


def test_typed_values_reach_the_config_without_a_text_round_trip():
    cfg = load_config("digits-stage1", ["train.seed=3"], values={"smoothing.sigma": 1e-5, "train.max_minutes": None,
                                                                  "smoothing.learn_sigma": False})
    assert cfg.smoothing.sigma == 1e-5 and cfg.train.max_minutes is None and cfg.train.seed == 3
    with pytest.raises(ArsmoothError, match="smoothing.sigma must be a positive number"):
        load_config("digits-stage1", values={"smoothing.sigma": -1.0})


def test_dropout_masks_setting_reaches_every_block_and_old_configs_keep_bernoulli():
    from arsmooth.models.build import build_model

    with pytest.raises(ArsmoothError, match="model.dropout_masks must be one of bits, bernoulli, got 'coin'"):
        load_config("digits-baseline", ["model.dropout_masks=coin"])

    def sources(cfg):
        return {m.mask_source for m in build_model(cfg, (1, 8, 8)).modules() if hasattr(m, "mask_source")}

    assert sources(load_config("digits-baseline")) == {"bits"}  # the default for new runs
    assert sources(load_config("digits-baseline", ["model.dropout_masks=bernoulli"])) == {"bernoulli"}
    old = load_config("digits-baseline").to_dict()
    del old["model"]["dropout_masks"]  # a config saved before the setting existed: F.dropout's masks, as then
    assert sources(Settings.from_dict(old)) == {"bernoulli"}


def test_a_transformer_trains_resumes_with_ema_and_warm_starts_stage1_and_stage2(tmp_path):
    """The second family through the same trainer: EMA, exact resume, and --init-from (a baseline's weights
    start stage 1, and a spatial stage 2 takes every weight it shares, keeping its encoder's own)."""
    tf = ["model.network=transformer", "model.tf_width=16", "model.tf_layers=1", "model.tf_heads=2",
          "model.tf_encoder_blocks=1", "train.ema=0.9"]
    whole = train(_cfg("baseline", *tf), tmp_path / "whole", progress=False)
    train(_cfg("baseline", *tf, "train.max_steps=5"), tmp_path / "part", progress=False)
    train(_cfg("baseline", *tf), tmp_path / "part", resume=True, progress=False)
    a, b = C.load_checkpoint(tmp_path / "whole" / "last.pt"), C.load_checkpoint(tmp_path / "part" / "last.pt")
    assert whole["steps"] == 12 and a["ema"] is not None
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    for kind in ("stage1", "stage2-spatial"):
        train(_cfg(kind, *tf, "train.max_steps=0"), tmp_path / kind, progress=False, init_from=tmp_path / "whole" / "last.pt")
        warm = C.load_checkpoint(tmp_path / kind / "last.pt")
        for k, v in a["model"].items():
            torch.testing.assert_close(warm["model"][k], v, rtol=0, atol=0)
        assert warm["extra"]["init_from"]["kept_initial"] == (0 if kind == "stage1" else
                                                              len([k for k in warm["model"] if k not in a["model"]]))
    with pytest.raises(ArsmoothError, match="model.tf_width"):
        train(_cfg("stage1", *tf, "model.tf_width=8", "train.max_steps=0"), tmp_path / "bad", progress=False,
              init_from=tmp_path / "whole" / "last.pt")
