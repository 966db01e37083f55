"""What a new user meets: their own image folder end to end, signals, presets, evaluate, sample, report."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from arsmooth.cli import main
from arsmooth.errors import ArsmoothError
from arsmooth.runtime import checkpoint as C
from arsmooth.runtime.config import Settings, load_config
from arsmooth.training.trainer import train

CLI = [sys.executable, "-m", "arsmooth.cli"]


def _folder(path, n=20, size=12, mode="L"):
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.randint(0, 255, shape).astype(np.uint8), mode).save(path / f"img{i:02d}.png")
    return path


def _run(args, **kw):
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_own_folder_trains_samples_evaluates_and_reports(tmp_path):
    imgs = _folder(tmp_path / "imgs")
    common = ["--set", f"data.dataset=folder:{imgs}", "--set", "data.size=8", "--set", "data.channels=1",
              "--set", "train.batch_size=8",
              "--max-steps", "4", "--no-progress", "--threads", "1"]
    runs = {}
    for kind in ("baseline", "stage1", "stage2"):
        runs[kind] = tmp_path / kind
        p = _run(["train", f"digits-{kind}", "--out", str(runs[kind]), *common])
        assert p.returncode == 0, p.stderr
    ck = C.load_checkpoint(runs["stage2"] / "last.pt")
    assert ck["extra"]["image_shape"] == [1, 8, 8] and ck["config"]["data"]["size"] == 8
    p = _run(["sample", "--method", "two-step", "--stage1", str(runs["stage1"] / "last.pt"), "--stage2",
              str(runs["stage2"] / "last.pt"), "-n", "3", "--out", str(tmp_path / "s"), "--no-progress"])
    assert p.returncode == 0, p.stderr
    assert np.load(tmp_path / "s" / "samples_two_step.npz")["uint8"].shape == (3, 1, 8, 8)
    # evaluate reads the folder, size and channels from the checkpoints; nothing is created in ./data
    p = _run(["evaluate", "--baseline", str(runs["baseline"] / "last.pt"), "--stage1", str(runs["stage1"] / "last.pt"),
              "--stage2", str(runs["stage2"] / "last.pt"), "--iw", "2"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["dataset"] == f"folder:{imgs}" and res["n_images"] == 2  # 10% of 20 files
    assert all(0 < res[k] < 20 for k in ("baseline", "two_step_elbo", "two_step_iw"))  # 8-bit bits/dim
    assert not (tmp_path / "data").exists()
    p = _run(["report", *(str(r) for r in runs.values()), "--out", str(tmp_path / "rep" / "report.md")])
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert all(str(r) in md for r in runs.values()) and (tmp_path / "rep" / "report_curves.png").stat().st_size > 1000


def test_folder_needs_size_and_channels_in_one_line():
    with pytest.raises(ArsmoothError, match="needs data.size and data.channels"):
        load_config("digits-baseline", ["data.dataset=folder:/x"])
    with pytest.raises(ArsmoothError, match="divisible by 4"):
        load_config("digits-baseline", ["data.dataset=folder:/x", "data.size=10", "data.channels=1"])
    with pytest.raises(ArsmoothError, match="channels must be 1 or 3"):
        load_config("digits-baseline", ["data.dataset=folder:/x", "data.size=8", "data.channels=2"])


def test_a_broken_file_in_either_split_is_named(tmp_path):
    imgs = _folder(tmp_path / "imgs")
    for f in sorted(imgs.iterdir()):  # break every file in turn: each is read by train or by test
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 3])
        cfg = load_config("digits-baseline", [f"data.dataset=folder:{imgs}", "data.size=8", "data.channels=1",
                                              "train.max_steps=1"])
        with pytest.raises(ArsmoothError, match=f"{f.name} is not a readable image"):
            train(cfg, tmp_path / "r", progress=False, overwrite=True)
        f.write_bytes(data)


def test_scientific_notation_is_a_float(tmp_path):
    assert load_config("digits-baseline", ["train.lr=1e-3"]).train.lr == 1e-3
    y = tmp_path / "c.yaml"
    y.write_text("kind: stage1\ndata: {dataset: digits}\ntrain: {lr: 2e-4, lr_decay: 1.0}\nsmoothing: {sigma: 5E-1}\n")
    cfg = load_config(str(y))
    assert cfg.train.lr == 2e-4 and cfg.smoothing.sigma == 0.5
    assert load_config("digits-baseline", ["data.dataset=1e3x"]).data.dataset == "1e3x"  # not a number


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow
def test_a_signal_stops_with_a_checkpoint_and_the_resume_command(tmp_path, sig, code):
    out = tmp_path / "r"
    p = subprocess.Popen(CLI + ["train", "digits-baseline", "--out", str(out), "--max-steps", "100000", "--no-progress",
                                "--threads", "1", "--set", "train.checkpoint_every=100000",
                                "--set", "train.checkpoint_minutes=1000", "--set", "train.log_every=1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 600  # a loaded machine can take long to start
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.2)
    assert metrics.exists(), "the run did not start"
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == code, stderr
    assert f"arsmooth train --out {out} --resume" in stderr
    ck = C.load_checkpoint(out / "last.pt")
    assert ck["step"] >= 3 and not (out / "summary.json").exists()  # not finished: reproduce and --resume go on
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert lines[-1]["checkpoint"] and lines[-1]["step"] == ck["step"]
    last_running = [x["train_bpd"] for x in lines if "train_bpd" in x][-1]
    assert ck["extra"]["running_bpd"] == pytest.approx(last_running)
    # the resumed run carries the running average on instead of restarting it
    steps = ck["step"] + 1
    s = train(load_config(str(out / "config.yaml"), [f"train.max_steps={steps}"]), out,
              resume=True, progress=False)
    assert s["stopped"] == "max_steps"
    first_new = [json.loads(x) for x in metrics.read_text().splitlines() if "train_bpd" in x][-1]
    assert abs(first_new["train_bpd"] - last_running) < 0.05 * last_running


@pytest.mark.slow
def test_resuming_a_finished_run_writes_nothing_new(tmp_path):
    cfg = load_config("digits-baseline", ["train.max_steps=3", "train.eval_images=8"])
    train(cfg, tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    train(None, tmp_path / "r", resume=True, progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    # a finished run resumed with a larger budget and killed on the way holds no stale summary
    p = subprocess.run(CLI + ["train", "--out", str(tmp_path / "r"), "--resume", "--max-steps", "10", "--no-progress"],
                       env={**os.environ, "ARSMOOTH_KILL_AT_STEP": "6"}, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path / "r" / "summary.json").exists()


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(load_config("digits-baseline", ["train.max_steps=2", "train.eval_images=8"]), tmp_path / "r", progress=False)
    finally:
        os.umask(old)
    for f in ("last.pt", "config.yaml", "metrics.jsonl", "summary.json"):
        assert stat.S_IMODE((tmp_path / "r" / f).stat().st_mode) == 0o644, f


def test_presets_show_merged_settings_and_keys(capsys):
    assert main(["presets", "mnist-cpu-stage2-spatial", "--set", "train.lr=5e-4"]) == 0
    import yaml

    shown = yaml.safe_load(capsys.readouterr().out)
    assert Settings.from_dict(shown) == load_config("mnist-cpu-stage2-spatial", ["train.lr=5e-4"])
    assert main(["presets", "--keys"]) == 0
    keys = capsys.readouterr().out
    assert "data.size" in keys and "model.stage2_conditioning" in keys and "train.lr " in keys


@pytest.mark.slow
def test_max_minutes_alone_is_a_time_budget(tmp_path):
    p = _run(["train", "digits-baseline", "--out", str(tmp_path / "r"), "--max-minutes", "0.05", "--no-progress",
              "--threads", "1"])
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["stopped"] == "max_minutes"  # not the preset's max_steps (20)
    from arsmooth.runtime.config import UNLIMITED_STEPS

    assert load_config(str(tmp_path / "r" / "config.yaml")).train.max_steps == UNLIMITED_STEPS


@pytest.mark.slow
def test_sample_methods_need_only_what_they_use(tmp_path):
    s1 = tmp_path / "s1"
    train(load_config("digits-stage1", ["train.max_steps=2", "train.eval_images=8"]), s1, progress=False)
    for method in ("smoothed", "single-step", "single-step-detached"):
        p = _run(["sample", "--method", method, "--stage1", str(s1 / "last.pt"), "-n", "2",
                  "--out", str(tmp_path / method), "--no-progress"])
        assert p.returncode == 0, p.stderr
    p = _run(["sample", "--method", "two-step", "--stage1", str(s1 / "last.pt"), "-n", "2", "--out", str(tmp_path / "t")])
    assert p.returncode == 2 and "--stage2" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_evaluate_refuses_images_of_another_size(tmp_path):
    base = tmp_path / "b"
    train(load_config("digits-baseline", ["train.max_steps=2", "train.eval_images=8"]), base, progress=False)
    p = _run(["evaluate", "--baseline", str(base / "last.pt"), "--dataset", "mnist", "--data-root",
              str(tmp_path / "none")], cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()  # a failed download leaves no folders behind


def test_reproduce_prints_where_its_summary_is(tmp_path, capsys):
    assert main(["reproduce", "fig3", "--out", str(tmp_path), "--quick", "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "fig3.md" in out and len(out) < 300


@pytest.mark.slow
def test_sensitivity_command_on_both_designs(tmp_path):
    for preset in ("digits-stage2", "digits-stage2-spatial"):
        train(load_config(preset, ["train.max_steps=1", "train.eval_images=8"]), tmp_path / preset, progress=False)
        p = _run(["sensitivity", str(tmp_path / preset / "last.pt"), "--n-images", "2", "--threads", "1"])
        assert p.returncode == 0, p.stderr
        res = json.loads(p.stdout)
        assert res["design"] == ("spatial" if preset.endswith("spatial") else "stacked") and len(res["positions"]) == 4
        assert all(r["grad_x_tilde_here"] > 0 and r["ratio"] > 0 for r in res["positions"])
    p = _run(["sensitivity", str(tmp_path / "digits-stage2" / "nope.pt")])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_sigma_command_matches_the_heuristic(capsys):
    from arsmooth.data.image_sets import load_dataset
    from arsmooth.maths.kernels import sigma_heuristic

    assert main(["sigma", "--dataset", "digits", "-n", "300", "--subsets", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    x = load_dataset("digits", "train")[0]
    expect = [sigma_heuristic(x, 300, s) for s in range(3)]
    assert res["sigma"] == pytest.approx(sum(expect) / 3, abs=1e-4) and res["sd_over_subsets"] > 0
    assert main(["sigma", "--dataset", "nope"]) == 2
