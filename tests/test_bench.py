"""``arsmooth bench``: each benchmark runs its fast path and its reference on the same input and says so."""

import json
import subprocess
import sys

import pytest


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arsmooth.cli", "bench", *args, "--threads", "1"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
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


@pytest.mark.slow
def test_bench_train_times_both_networks_on_the_same_step(tmp_path):
    out = tmp_path / "t.jsonl"
    p = _bench("train", "--preset", "digits-stage2", "--batch-size", "4", "--steps", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text().splitlines()[0])
    assert r["bench"] == "train" and r["kind"] == "stage2" and r["batch"] == 4
    assert r["same_loss_and_grads"] and r["first_step_grad_max_rel_err"] < 1e-4
    assert r["speedup"] == pytest.approx(r["fast_images_per_s"] / r["reference_images_per_s"])
    # the work of a step and the machine's ceiling, measured in the same run
    assert r["gflop_per_step"] > 0 and r["matmul_gflops_per_s"] > 0 and r["cpus_available"] >= 1
    assert r["fast_gflops_per_s"] == pytest.approx(r["gflop_per_step"] * r["fast_images_per_s"] / 4, rel=1e-9)
    assert r["fast_fraction_of_matmul"] == pytest.approx(r["fast_gflops_per_s"] / r["matmul_gflops_per_s"], rel=1e-9)


@pytest.mark.parametrize("masks,fast_threads", [("bits", 1), ("bernoulli", 2)])
@pytest.mark.slow
def test_bench_train_at_channel_dropout_counts_the_mask_thread(tmp_path, masks, fast_threads):
    out = tmp_path / "c.jsonl"
    p = _bench("train", "--preset", "digits-stage1", "--batch-size", "4", "--steps", "1", "--set", "model.dropout=0.5",
               "--set", "model.dropout_mode=channel", "--set", f"model.dropout_masks={masks}", "--out", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text().splitlines()[0])
    assert r["dropout_mode"] == "channel" and r["same_loss_and_grads"]
    assert r["dropout_masks"] == masks and r["reference_dropout_masks"] == "bernoulli"
    # one torch thread; with bernoulli masks the fused path adds its mask thread, bit masks are drawn inline
    assert r["threads_used"] == {"fast": fast_threads, "reference": 1}


@pytest.mark.slow
def test_gpu_check_script_says_no_gpu_in_one_line_and_its_dry_run_measures(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
    p = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "gpu.jsonl")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-1000:]
    lines = (tmp_path / "gpu.jsonl").read_text().splitlines()
    if lines and json.loads(lines[0]).get("gpu", "x") is None:  # this machine has no CUDA GPU
        assert len(lines) == 1 and "no CUDA GPU" in json.loads(lines[0])["note"]
    p = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "dry.jsonl"), "--cpu-dry-run"],
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-1000:]
    rows = [json.loads(x) for x in (tmp_path / "dry.jsonl").read_text().splitlines()]
    assert [r["bench"] for r in rows] == ["sample", "sample", "precision", "precision", "precision", "sample",
                                          "reproduce", "costs"]
    assert all(r["same_samples_on_timed_pixels"] and r["differing_subpixels_on_timed_pixels"] == 0
               for r in rows if r["bench"] == "sample")
    assert all(r["bf16"]["loss_rel_err"] < 1e-6 for r in rows if r["bench"] == "precision")  # fp32 on the CPU
    assert rows[6]["ok"] and set(rows[7]["models"]) == {"baseline", "stage1", "stage2", "stage2-spatial"}
    assert "Fig. 6 columns" in (tmp_path / "gpu_costs.md").read_text()
