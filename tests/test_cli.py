"""The command line: every experiment's quick path, exact JSON keys, and one-line errors on bad input."""

import json
import subprocess
import sys

import pytest

from arsmooth.cli import main

KEYS = {
    "fig3": {"raw": {"nll", "tv"}, "smoothed": {"nll", "tv"}},
    "fig4": {"baseline_mol_8": None, "smoothed_2": None, "sweep": {"gaussian", "laplace", "uniform"}},
    "denoise1d": {"single_step_exact_max_err": None,
                  "between_modes_mass": {"data", "single_step", "one_component", "two_components"}},
    "table1": {d: {"made_3", "made_6", "smoothed_3", "smoothed_3_iw"} for d in ("rings", "olympics")},
    "realnvp": {d: {"realnvp", "smoothed_realnvp"} for d in ("checkerboard", "olympics")},
    "learned-sigma": {d: {"fixed", "learned", "learned_high_start", "data_sample_nll_true_density"}
                      for d in ("rings", "olympics")},
    "learned-sigma-mnist": {arm: {"sigma", "neg_elbo_bpd", "neg_iw_bpd", "metrics", "steps", "train_seconds",
                                  "sigma_path"} for arm in ("fixed", "learned")},
}


def _check_keys(result, spec):
    assert set(result) == set(spec)
    for k, sub in spec.items():
        if sub is None:
            assert isinstance(result[k], float)
        else:
            assert set(result[k]) == sub


@pytest.mark.parametrize("name", list(KEYS))
@pytest.mark.slow
def test_quick_reproduce_writes_exact_keys(name, tmp_path, capsys):
    assert main(["reproduce", name, "--out", str(tmp_path), "--quick", "--no-progress", "--threads", "1"]) == 0
    res = json.loads((tmp_path / f"{name}.json").read_text())
    _check_keys(res, KEYS[name])
    rec = json.loads((tmp_path / f"{name}.run.json").read_text())
    assert rec["seed"] == 0 and rec["quick"] is True and rec["wall_time_s"] > 0
    md = (tmp_path / f"{name}.md").read_text()
    for png in tmp_path.glob("*.png"):
        assert png.name in md and png.stat().st_size > 1000
    assert list(tmp_path.glob("*.png"))
    if name == "denoise1d":  # exact maths, even on the quick path
        assert res["single_step_exact_max_err"] < 1e-3
    if name == "learned-sigma":  # the fixed arm keeps its sigma; the learned one moves and records where it went
        for d in ("rings", "olympics"):
            fixed, learned = res[d]["fixed"], res[d]["learned"]
            assert fixed["sigma"] == 0.3 and fixed["trajectory"] == [] and learned["sigma"] != 0.3
            assert learned["trajectory"][0] == [0, 0.3] and learned["trajectory"][-1][1] == learned["sigma"]
            assert res[d]["learned_high_start"]["trajectory"][0] == [0, pytest.approx(0.9)]
    if name == "learned-sigma-mnist":  # the joint checkpoints record the sigma they were evaluated with
        assert res["fixed"]["sigma"] == 0.5 and res["learned"]["sigma"] != 0.5
        assert res["learned"]["sigma_path"][0] == [0, 0.5] and len(res["learned"]["sigma_path"]) > 1
        assert all(set(m) == {"smoothed", "single-step", "two-step"} for m in (res[a]["metrics"] for a in res))
    if name == "fig4":
        assert all(len(v) == 2 and all(len(p) == 2 for p in v) for v in res["sweep"].values())
    if name == "realnvp":  # the reported values are means over distinct training seeds
        per_seed = rec["settings"]["per_seed"]
        for ds, r in res.items():
            for key, value in r.items():
                runs = per_seed[ds][key]
                assert len(runs) == len(rec["settings"]["training_seeds"]) >= 2 and len(set(runs)) == len(runs)
                assert value == pytest.approx(sum(runs) / len(runs), abs=1e-12)


@pytest.mark.slow
def test_second_run_does_not_overwrite_without_force(tmp_path, capsys):
    args = ["reproduce", "fig3", "--out", str(tmp_path), "--quick", "--no-progress"]
    assert main(args) == 0
    before = (tmp_path / "fig3.json").read_text()
    (tmp_path / "fig3.json").write_text("mine")
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "fig3.json").read_text() == "mine"
    assert main(args + ["--force"]) == 0
    assert json.loads((tmp_path / "fig3.json").read_text()) == json.loads(before)  # same seed, same numbers


def _cli(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "arsmooth.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["reproduce", "table9", "--out", "o"], "unknown experiment 'table9'"),
        (["reproduce", "fig3", "--out", "o", "--sigma", "-0.5"], "positive"),
        (["reproduce", "fig3", "--out", "o", "--sigma", "0"], "positive"),
        (["reproduce", "fig3", "--out", "o", "--sigma", "abc"], "expected a number"),
        (["demo", "--out", "o", "--sigma", "0"], "positive"),
        (["demo", "--out", "o", "--steps", "0"], "must be >= 1, got 0"),
        (["demo", "--out", "o", "--steps", "-5"], "must be >= 1, got -5"),
        (["reproduce", "fig3", "--out", "o", "--seed", "-1"], "must be >= 0, got -1"),
        (["reproduce", "fig3", "--out", "afile/sub", "--quick"], "cannot create output folder"),
        (["reproduce", "fig3", "--out", "afile", "--quick"], "not a folder"),
        (["reproduce", "fig3"], "--out"),
        (["frobnicate"], "invalid choice"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_nonzero(args, message, tmp_path):
    (tmp_path / "afile").write_text("x")
    p = _cli(*args, tmp_path=tmp_path)
    assert p.returncode != 0
    err = p.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert message in err
    assert (tmp_path / "afile").read_text() == "x"


def test_unwritable_folder(tmp_path, monkeypatch):
    import os

    from arsmooth.errors import ArsmoothError
    from arsmooth.runtime.fileio import prepare_out_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # running as root: permissions are not enforced, simulate the check
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ArsmoothError, match="not writable"):
        prepare_out_dir(ro, ["fig3.json"])


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path):
    from arsmooth.experiments.demo import run_demo

    path = run_demo(tmp_path / "demo", steps=30, hidden=16, progress=False)
    text = path.read_text()
    assert "| MADE, 3 logistics |" in text and "-ELBO" in text
    assert (tmp_path / "demo" / "samples.png").stat().st_size > 1000
    assert "## Images: the pretrained MNIST models" in text and (tmp_path / "demo" / "digits.png").stat().st_size > 1000
