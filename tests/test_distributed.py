"""torchrun + DDP (gloo, CPU): N=2 with global batch B trains exactly as N=1 with batch B."""

import os
import subprocess
import sys

import pytest
import torch

from arsmooth.runtime.checkpoint import load_checkpoint

SETTINGS = ["--set", "train.batch_size=8", "--set", "train.eval_images=4", "--set", "data.limit=64",
            "--max-steps", "4", "--no-progress", "--threads", "1"]


def _run(nproc: int, out, extra=(), preset="digits-stage1"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "arsmooth", "train", preset, "--out", str(out), *SETTINGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _same_params(a: dict, b: dict) -> None:
    """Equal up to float summation order: Adam (lr 1e-3) can turn a rounding difference in a near-zero
    gradient into up to ~1e-5 for a rare weight; a wrong batch or noise would move most weights by ~1e-3."""
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if a[k].dtype.is_floating_point])
    assert diffs.max() < 1e-4 and diffs.median() < 1e-7 and (diffs > 1e-6).float().mean() < 0.01


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    one, two = _run(1, tmp_path / "one"), _run(2, tmp_path / "two")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]  # no abort at exit
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["step"] == b["step"] == 4
    _same_params(a["model"], b["model"])
    changed = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    assert any(not torch.equal(changed[k], torch.zeros_like(changed[k])) for k in changed)
    # one checkpoint, one metrics file, written by rank 0 only
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["config.yaml", "last.pt", "metrics.jsonl",
                                                                     "summary.json"]
    assert "4 steps on 2 processes" in two.stdout and two.stdout.count("run folder") == 1


@pytest.mark.slow
def test_resume_with_another_number_of_processes(tmp_path):
    whole = _run(1, tmp_path / "whole")
    first = _run(2, tmp_path / "split", ["--set", "train.max_steps=2"])
    assert whole.returncode == 0 and first.returncode == 0, first.stderr[-2000:]
    rest = subprocess.run([sys.executable, "-m", "arsmooth", "train", "--out", str(tmp_path / "split"), "--resume",
                           "--max-steps", "4", "--no-progress", "--threads", "1"], capture_output=True, text=True,
                          timeout=300)
    assert rest.returncode == 0, rest.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    _same_params(a["model"], b["model"])


@pytest.mark.slow
def test_resume_under_torchrun_takes_the_device_of_the_saved_run(tmp_path):
    """A run saved with device: cpu, resumed by torchrun with --resume alone: the group comes up on gloo from
    the saved settings (read before the process group starts) and the run goes on on 2 processes."""
    first = subprocess.run([sys.executable, "-m", "arsmooth", "train", "digits-stage1", "--out", str(tmp_path / "r"),
                            *SETTINGS[:6], "--set", "device=cpu", "--max-steps", "2", "--no-progress", "--threads", "1"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rest = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "arsmooth", "train", "--out", str(tmp_path / "r"), "--resume", "--max-steps", "4",
                           "--no-progress", "--threads", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert "4 steps on 2 processes" in rest.stdout
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ck["step"] == 4 and ck["config"]["device"] == "cpu"


@pytest.mark.slow
def test_a_failed_config_check_leaves_nothing_behind(tmp_path):
    """3 processes cannot share a global batch of 8: one line, no config.yaml, and the folder stays usable."""
    p = _run(3, tmp_path / "r")
    assert p.returncode != 0 and "divisible by the number of processes (3)" in p.stderr
    assert "Grad strides" not in p.stderr
    assert not (tmp_path / "r" / "config.yaml").exists()
    ok = _run(2, tmp_path / "r")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "Grad strides do not match" not in ok.stderr


@pytest.mark.slow
def test_spatial_stage2_two_processes_match_one(tmp_path):
    one = _run(1, tmp_path / "one", preset="digits-stage2-spatial")
    two = _run(2, tmp_path / "two", preset="digits-stage2-spatial")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert any(k.startswith("net.encoder.") for k in a["model"])  # the encoder is trained under DDP too
    _same_params(a["model"], b["model"])


@pytest.mark.slow
def test_smoothed_kind_with_learned_sigma_two_processes_match_one(tmp_path):
    extra = ("--set", "smoothing.learn_sigma=true")
    one = _run(1, tmp_path / "one", extra, preset="digits-smoothed")
    two = _run(2, tmp_path / "two", extra, preset="digits-smoothed")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["sigma"] != 0.5 and abs(a["sigma"] - b["sigma"]) < 1e-6  # sigma is learned, the same on 2 processes
    _same_params(a["model"], b["model"])


@pytest.mark.slow
def test_sampling_is_split_across_processes_and_independent_of_their_number(tmp_path):
    """torchrun -m arsmooth sample: batches dealt across 2 ranks, gathered on rank 0: the 1-process images."""
    import numpy as np

    assert _run(1, tmp_path / "s1").returncode == 0  # a tiny stage 1 to sample from
    ckpt = str(tmp_path / "s1" / "last.pt")
    outs = {}
    for nproc in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "arsmooth", "sample", "--method", "smoothed", "--stage1", ckpt, "-n", "7", "--batch-size", "2",
               "--seed", "3", "--out", str(tmp_path / f"out{nproc}"), "--no-progress", "--threads", "1"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.count("wrote 7 samples") == 1  # rank 0 alone writes
        outs[nproc] = np.load(tmp_path / f"out{nproc}" / "samples_smoothed.npz")["raw"]
    assert outs[1].shape == (7, 1, 8, 8)
    assert np.array_equal(outs[1], outs[2])
    assert not np.array_equal(outs[1][:2], outs[1][2:4])  # batches differ: each has its own seed


@pytest.mark.slow
def test_a_killed_rank_restarts_the_group_and_training_resumes_by_itself(tmp_path):
    """torchrun --max-restarts=1: rank 1 SIGKILLs itself at step 8 (checkpoint at 5); the restarted group finds
    this run's checkpoint, resumes without --resume and ends with the parameters of an uninterrupted run."""
    whole = _run(2, tmp_path / "whole", ("--set", "train.checkpoint_every=5", "--max-steps", "12"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARSMOOTH_KILL_AT_STEP": "8", "ARSMOOTH_KILL_RANK": "1",
           "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # as the README says for --max-restarts
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
           "-m", "arsmooth", "train", "digits-stage1", "--out", str(tmp_path / "killed"), *SETTINGS,
           "--set", "train.checkpoint_every=5", "--max-steps", "12"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "exitcode: -9" in p.stderr  # rank 1 really was killed, and the group restarted
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["step"] == b["step"] == 12
    _same_params(a["model"], b["model"])
    steps = [__import__("json").loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the lines the killed attempt logged after its checkpoint were dropped


@pytest.mark.slow
def test_reproduce_under_torchrun_trains_and_samples_as_one_process(tmp_path):
    """torchrun -m arsmooth reproduce mnist --quick on 2 processes: the three models trained with DDP, the
    Fig. 6 batches dealt across the ranks, rank 0 alone scores and writes; the samples are those one process
    draws from the same models."""
    import numpy as np

    from arsmooth.experiments import reproduce

    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "arsmooth", "reproduce", "mnist", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("wrote") == 1 and (out / "mnist.json").is_file()
    import json

    assert all(json.loads((out / "runs" / k / "summary.json").read_text())["processes"] == 2
               for k in ("baseline", "stage1", "stage2"))
    assert not list(out.glob("samples.partial*"))  # every rank dropped its partial file
    with np.load(out / "samples.npz") as z:
        two = {k: z[k] for k in z.files}
    (out / "samples.npz").unlink()
    reproduce("mnist", out, quick=True, force=True, progress=False)  # one process, the same trained models
    with np.load(out / "samples.npz") as z:
        assert sorted(z.files) == sorted(two) and all(np.array_equal(z[k], two[k]) for k in z.files)
        assert not np.array_equal(z["two-step.uint8"][:2], z["two-step.uint8"][2:4])  # 4 batches, 4 seeds


@pytest.mark.slow
def test_transformer_two_processes_match_one(tmp_path):
    """The second network family under DDP: a transformer stage 2 (x~ encoder included) trains to the same
    parameters on 2 processes as on 1."""
    tf = ["--set", "model.network=transformer", "--set", "model.tf_width=16", "--set", "model.tf_layers=1",
          "--set", "model.tf_heads=2", "--set", "model.tf_encoder_blocks=1"]
    one = _run(1, tmp_path / "one", tf, preset="digits-stage2-spatial")
    two = _run(2, tmp_path / "two", tf, preset="digits-stage2-spatial")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert any(k.startswith("net.encoder.") for k in a["model"]) and any(k.startswith("net.blocks.") for k in a["model"])
    _same_params(a["model"], b["model"])
