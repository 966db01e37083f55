"""What a newcomer and two fault probes hit (one test per item): own folders scored anywhere, stored absolute
paths, true progress under a time budget, NaN advice that holds, report over a glob, oversized batches,
non-npz files, no empty folders from refused commands, evaluation progress, FID for a folder, a full disk,
and a locked run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from arsmooth.cli import main
from arsmooth.runtime import checkpoint as C
from arsmooth.runtime.run_folder import read_metrics

CLI = [sys.executable, "-m", "arsmooth"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
QUICK = ["--set", "train.eval_images=4", "--set", "train.batch_size=8", "--no-progress", "--threads", "1"]


def _folder(path: Path, n: int = 24, size: int = 8, seed: int = 0, mode: str = "RGB") -> Path:
    """Own RGB (or grey) images, not the test fixtures': blobs of colour on a dark background."""
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        a = np.zeros((size, size, 3), np.uint8)
        r0, c0 = rng.randint(0, size // 2, 2)
        a[r0 : r0 + size // 2, c0 : c0 + size // 2] = rng.randint(60, 255, 3)
        img = Image.fromarray(a, "RGB")
        (img if mode == "RGB" else img.convert("L")).save(path / f"im{i:03d}.png")
    return path


def _run(args, cwd=None, timeout=300):
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV)


def _train(out, folder, *extra, cwd=None, preset="digits-baseline", steps=3):
    return _run(["train", preset, "--out", str(out), "--set", f"data.dataset=folder:{folder}", "--set", "data.size=8",
                 "--set", "data.channels=3", "--max-steps", str(steps), *QUICK, *extra], cwd=cwd)


# 1 and 2: a model scored on another folder, from another directory; relative folder paths stored absolute
@pytest.mark.slow
def test_relative_folder_is_stored_absolute_and_scored_from_anywhere_and_on_another_folder(tmp_path):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    _folder(here / "shapes")
    _folder(tmp_path / "other", seed=1)
    elsewhere.mkdir()
    p = _train(here / "run", "shapes", cwd=here)  # a relative path, as a user types it
    assert p.returncode == 0, p.stderr
    saved = C.settings_of(C.load_checkpoint(here / "run" / "last.pt")).data.dataset
    assert saved == f"folder:{here / 'shapes'}"
    ev = ["evaluate", "--baseline", str(here / "run" / "last.pt"), "--n-images", "2", "--no-progress"]
    p = _run(ev, cwd=elsewhere)  # from another directory: the stored absolute path
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["dataset"] == saved
    p = _run([*ev, "--dataset", "folder:../other"], cwd=elsewhere)  # another folder: size and channels from the run
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["dataset"] == f"folder:{tmp_path / 'other'}"
    p = _run(["train", "--out", str(here / "run"), "--resume", "--max-steps", "4", *QUICK[-3:]], cwd=elsewhere)
    assert p.returncode == 0, p.stderr
    (here / "shapes").rename(here / "moved")  # a moved folder: one line naming the stored path and the way out
    p = _run(ev, cwd=elsewhere)
    assert p.returncode == 2 and str(here / "shapes") in p.stderr and "--dataset folder:" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_pair_from_two_folders_is_not_scored_silently_on_one(tmp_path):
    _folder(tmp_path / "a")
    _folder(tmp_path / "b", seed=2)
    assert _train(tmp_path / "s1", tmp_path / "a", preset="digits-stage1").returncode == 0
    assert _train(tmp_path / "s2", tmp_path / "b", preset="digits-stage2-spatial").returncode == 0
    p = _run(["evaluate", "--stage1", str(tmp_path / "s1" / "last.pt"), "--stage2", str(tmp_path / "s2" / "last.pt"),
              "--n-images", "2", "--iw", "0", "--no-progress"])
    assert p.returncode == 2 and "different datasets" in p.stderr


# 3: the progress bar under a time budget
@pytest.mark.slow
def test_a_time_budget_shows_minutes_and_steps_not_a_billion_steps(tmp_path):
    _folder(tmp_path / "f")
    p = _run(["train", "digits-baseline", "--out", str(tmp_path / "r"), "--set", f"data.dataset=folder:{tmp_path / 'f'}",
              "--set", "data.size=8", "--set", "data.channels=3", "--set", "train.batch_size=8", "--max-minutes",
              "0.05", "--threads", "1"])
    assert p.returncode == 0, p.stderr
    assert "1000000000" not in p.stderr and "/0.1 min" in p.stderr and "steps=" in p.stderr


# 4: NaN advice names a checkpoint that exists, or says there is none; --resume --set train.lr is allowed
@pytest.mark.slow
def test_nan_advice_is_true_and_resume_with_a_lower_rate_is_recorded(tmp_path):
    _folder(tmp_path / "f")
    p = _train(tmp_path / "r", tmp_path / "f", "--set", "train.lr=1e6", steps=20)
    assert p.returncode == 2 and "No checkpoint was written yet" in p.stderr and "--overwrite" in p.stderr
    assert not (tmp_path / "r" / "last.pt").exists()
    run = tmp_path / "r2"
    assert _train(run, tmp_path / "f", "--set", "train.checkpoint_every=2", steps=4).returncode == 0
    lr = C.settings_of(C.load_checkpoint(run / "last.pt")).train.lr
    resume = ["train", "--out", str(run), "--resume", *QUICK[-3:]]
    p = _run([*resume, "--set", "train.lr=1e6", "--max-steps", "40"])  # too high a rate: the loss blows up
    assert p.returncode == 2
    line = p.stderr.strip()
    assert C.load_checkpoint(run / "last.pt")["step"] == 4  # the checkpoint the advice names exists
    assert f"step 4, is {run / 'last.pt'}" in line and "--resume --set train.lr=" in line
    assert C.settings_of(C.load_checkpoint(run / "last.pt")).train.lr == lr  # and config.yaml still says so
    assert f"lr: {lr}" in (run / "config.yaml").read_text()
    p = _run([*resume, "--set", "train.lr=1e-4", "--max-steps", "6"])  # --resume --set train.lr is allowed
    assert p.returncode == 0, p.stderr
    changes = [r["resumed_with"] for r in read_metrics(run) if "resumed_with" in r]
    assert changes[-1] == {"train.lr": [lr, 1e-4], "train.max_steps": [4, 6]}
    assert C.settings_of(C.load_checkpoint(run / "last.pt")).train.lr == 1e-4
    assert "lr: 0.0001" in (run / "config.yaml").read_text()
    p = _run([*resume, "--set", "model.nr_filters=3"])
    assert p.returncode == 2 and "model.nr_filters would change" in p.stderr


# 5: report over a glob that matches the report itself, twice
@pytest.mark.slow
def test_report_skips_files_that_a_glob_matched(tmp_path):
    _folder(tmp_path / "f")
    assert _train(tmp_path / "mine" / "a", tmp_path / "f").returncode == 0
    report = tmp_path / "mine" / "report.md"
    for force in ([], ["--force"]):
        runs = [str(p) for p in sorted((tmp_path / "mine").iterdir())]  # what runs/mine/* expands to
        p = _run(["report", *runs, "--out", str(report), *force])
        assert p.returncode == 0, p.stderr
    assert "skipped 2 path(s) that are not folders" in p.stderr and "report.md" in p.stderr and report.is_file()


# 6: an oversized batch is refused, not shrunk and recorded wrongly
@pytest.mark.slow
def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    _folder(tmp_path / "f")
    p = _train(tmp_path / "r", tmp_path / "f", "--set", "train.batch_size=100000")
    assert p.returncode == 2 and "larger than the 22 training images" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# 7: metrics on a file that is not an npz
@pytest.mark.slow
def test_metrics_on_a_text_file_says_so_without_pickle_advice(tmp_path):
    (tmp_path / "s.npz").write_text("not samples\n")
    p = _run(["metrics", str(tmp_path / "s.npz"), "--dataset", "digits", "--classifier", "x.pt"])
    assert p.returncode == 2 and "is not an .npz file" in p.stderr and "pickle" not in p.stderr


# 8: refused commands leave no folder they created
@pytest.mark.parametrize("case", ["missing", "truncated", "wrong-kind"])
@pytest.mark.slow
def test_a_refused_sample_leaves_no_folder(tmp_path, case):
    _folder(tmp_path / "f")
    assert _train(tmp_path / "b", tmp_path / "f").returncode == 0
    ck = {"missing": tmp_path / "nope.pt", "wrong-kind": tmp_path / "b" / "last.pt", "truncated": tmp_path / "t.pt"}[case]
    (tmp_path / "t.pt").write_bytes((tmp_path / "b" / "last.pt").read_bytes()[:500])
    out = tmp_path / "new" / "samples"
    assert main(["sample", "--method", "smoothed", "--stage1", str(ck), "--out", str(out), "--no-progress"]) == 2
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("case", ["corrupt image", "two images", "not square", "cuda"])
@pytest.mark.slow
def test_a_refused_train_leaves_no_folder(tmp_path, case):
    f = _folder(tmp_path / "f", n=2 if case == "two images" else 24)
    if case == "corrupt image":
        (f / "im005.png").write_bytes(b"\x89PNG broken")
    if case == "not square":
        from PIL import Image

        Image.new("RGB", (8, 6)).save(f / "im999.png")
    extra = ["--set", "device=cuda"] if case == "cuda" else []
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    p = _train(tmp_path / "deep" / "run", f, *extra)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "deep").exists()
    if case == "two images":
        assert "needs at least" in p.stderr


def test_ctrl_c_during_sample_leaves_no_folder(tmp_path, monkeypatch):
    import arsmooth.evaluation.tasks as I

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(I, "sample_seeded", interrupted)
    assert main(["sample", "--pretrained", "mnist", "--method", "smoothed", "--out", str(tmp_path / "s")]) == 130
    assert not (tmp_path / "s").exists()


# 9: long evaluations show progress, and --no-progress silences it
@pytest.mark.slow
def test_evaluate_shows_progress_unless_told_not_to(tmp_path):
    _folder(tmp_path / "f")
    assert _train(tmp_path / "b", tmp_path / "f").returncode == 0
    ev = ["evaluate", "--baseline", str(tmp_path / "b" / "last.pt"), "--n-images", "2"]
    assert "scoring: baseline" in _run(ev).stderr
    p = _run([*ev, "--no-progress"])
    assert p.returncode == 0 and p.stderr == ""


# 10: FID / KID for own images: the folder's rotation LeNet; sample --help says what raw holds
@pytest.mark.slow
def test_own_folder_gets_a_rotation_lenet_and_its_samples_are_scored(tmp_path):
    f = _folder(tmp_path / "f", n=40)
    clf = tmp_path / "clf.pt"
    p = _run(["fit-classifier", "--dataset", "folder:f", "--set", "data.size=8", "--set", "data.channels=3",
              "--epochs", "1", "--out", str(clf), "--no-progress"], cwd=tmp_path)  # a relative folder, as typed
    assert p.returncode == 0, p.stderr
    assert "rotations" in p.stdout
    from PIL import Image

    u8 = np.stack([np.asarray(Image.open(q)).transpose(2, 0, 1) for q in sorted(f.iterdir())[:8]])
    np.savez(tmp_path / "s.npz", uint8=u8)
    p = _run(["metrics", str(tmp_path / "s.npz"), "--dataset", f"folder:{f}", "--classifier", str(clf)])
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["fid"] >= 0 and res["is"] is None  # rotation logits give no Inception-style score
    assert "raw" in _run(["sample", "--help"]).stdout and "unclamped" in _run(["sample", "--help"]).stdout


# 11: a full disk while writing a checkpoint: one line, the previous checkpoint intact, a resume works
@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    import arsmooth.runtime.checkpoint as CK

    _folder(tmp_path / "f")
    real, calls = torch.save, {"n": 0}

    def full_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # torch's own error for a short write, as seen on a full disk
            Path(f).write_bytes(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 103616 vs 103536")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(CK.torch, "save", full_disk)
    run = tmp_path / "r"
    rc = main(["train", "digits-baseline", "--out", str(run), "--set", f"data.dataset=folder:{tmp_path / 'f'}",
               "--set", "data.size=8", "--set", "data.channels=3", "--max-steps", "6", "--set",
               "train.checkpoint_every=2", *QUICK])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "could not write" in err and "is intact" in err and "--resume" in err
    assert C.load_checkpoint(run / "last.pt")["step"] == 2  # the previous one
    assert not [p for p in run.iterdir() if p.name.startswith(".last.pt")]  # no temporary file left
    monkeypatch.setattr(CK.torch, "save", real)
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert C.load_checkpoint(run / "last.pt")["step"] == 6


def test_a_failed_summary_or_sample_write_is_one_line(tmp_path, monkeypatch, capsys):
    import arsmooth.runtime.fileio as F

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(F.tempfile, "mkstemp", no_space)
    rc = main(["sample", "--pretrained", "mnist", "--method", "smoothed", "-n", "1", "--out", str(tmp_path / "s"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "could not write" in err and "No space left on device" in err and len(err.splitlines()) == 1


# 12: one writer per run; a lock left by a killed process does not block
@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    _folder(tmp_path / "f")
    run = tmp_path / "r"
    assert _train(run, tmp_path / "f", steps=2).returncode == 0
    holder = subprocess.Popen(CLI + ["train", "--out", str(run), "--resume", "--max-steps", "100000", *QUICK[-3:]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        lock = run / ".arsmooth.lock"
        for _ in range(600):
            if lock.is_file() and lock.read_text().strip():
                break
            time.sleep(0.1)
        assert lock.read_text().split()[0] == str(holder.pid)
        for args in (["--resume"], ["--overwrite"]):
            p = _run(["train", *(["digits-baseline"] if args == ["--overwrite"] else []), "--out", str(run), *args,
                      "--max-steps", "3", *QUICK[-3:]])
            assert p.returncode == 2 and f"pid {holder.pid}" in p.stderr, p.stderr
            assert len(p.stderr.strip().splitlines()) == 1
        r = _run(["reproduce", "fig3", "--quick", "--out", str(run)])  # reproduce into a live run folder
        assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.is_file()  # left behind by the killed holder, and no obstacle
    p = _run(["train", "--out", str(run), "--resume", "--max-steps", str(C.load_checkpoint(run / "last.pt")["step"] + 1),
              *QUICK[-3:]])
    assert p.returncode == 0, p.stderr
    assert not lock.exists()
