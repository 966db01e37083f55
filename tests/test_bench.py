"""``arsmooth bench``: each benchmark runs its fast path and its reference on the same input and says so."""

import json
import subprocess
import sys

import pytest


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arsmooth.cli", "bench", *args, "--threads", "1"],
                          capture_output=True, text=True, timeout=300)


def test_bench_sample_reports_both_samplers(tmp_path):
    out = tmp_path / "b.jsonl"
    args = ("sample", "--preset", "digits-stage1", "--batch-size", "2", "--ref-pixels", "0", "--out", str(out))
    p = _bench(*args)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text().splitlines()[0])
    assert r["same_samples_on_timed_pixels"] and r["obvious_pixels_timed"] == r["pixels_per_image"] == 64
    assert r["speedup"] == pytest.approx(r["fast_images_per_s"] / r["obvious_images_per_s"])
    again = _bench(*args)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_bench_train_times_both_networks_on_the_same_step(tmp_path):
    out = tmp_path / "t.jsonl"
    p = _bench("train", "--preset", "digits-stage2", "--batch-size", "4", "--steps", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text().splitlines()[0])
    assert r["bench"] == "train" and r["kind"] == "stage2" and r["batch"] == 4
    assert r["same_loss_and_grads"] and r["first_step_grad_max_rel_err"] < 1e-4
    assert r["speedup"] == pytest.approx(r["fast_images_per_s"] / r["reference_images_per_s"])
