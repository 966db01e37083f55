"""Pinned numbers: seeded losses of the quick presets and of a smoothed MADE, so that a change that moves
any number (initialisation, likelihood, noise, data order) fails here, not silently in a results table.

The values were computed with torch 2.13.0 on CPU (float32); a real change of behaviour moves them by
far more than the tolerance. If a change is meant to move them, say so in the commit and pin anew.
"""

import pytest
import torch

from arsmooth.data.image_sets import load_dataset
from arsmooth.data.synthetic import train_test
from arsmooth.maths import smoothing as S
from arsmooth.maths.kernels import make_kernel
from arsmooth.models.build import build_model
from arsmooth.models.made import StackedMADE
from arsmooth.runtime.config import load_config
from arsmooth.training.trainer import loss_given_noise

PINNED = {"digits-baseline": 215.441162109375, "digits-stage1": 107.05117797851562,
          "digits-stage2-spatial": 218.16961669921875}


@pytest.mark.parametrize("preset", sorted(PINNED))
def test_seeded_initial_loss_of_each_quick_preset(preset):
    torch.set_num_threads(1)
    x = load_dataset("digits", "train")[0][:16]
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg, tuple(x.shape[1:])).eval()
    kernel = make_kernel(cfg.smoothing.kernel, cfg.smoothing.sigma)
    x_tilde = None if model.kind == "baseline" else kernel.sample(x, torch.Generator().manual_seed(1))
    assert loss_given_noise(model, x, x_tilde).item() == pytest.approx(PINNED[preset], rel=1e-5)


def test_seeded_bound_of_a_smoothed_made():
    torch.manual_seed(0)
    model = StackedMADE(dim=2, hidden=(32, 32), n_mix=3)
    test = train_test("olympics", 100, 100, 0)[1]
    bound = -S.elbo(model, make_kernel("gaussian", 0.3), test, n_draws=1, generator=torch.Generator().manual_seed(2))
    assert float(bound.mean().detach()) == pytest.approx(6.6929731369018555, rel=1e-5)


def test_seeded_short_runs_of_the_training_loop(tmp_path):
    """The one loop (fit.Loop) in both its forms: a smoothed MADE fit in memory, a digits stage 1 trained in a
    run folder. Pinned from the code before the loop was shared (the same values to the last bit)."""
    from arsmooth.training.loop import fit
    from arsmooth.training.trainer import train

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = StackedMADE(dim=2, hidden=(16, 16), n_mix=3)
    data = train_test("olympics", 512, 10, 0)[0]
    kernel, g = make_kernel("gaussian", 0.3), torch.Generator().manual_seed(1)
    r = fit(model, lambda b: S.smoothed_nll_loss(model, kernel, b, g), data, steps=30, batch_size=64, lr=1e-3,
            lr_decay=0.999, seed=0, progress=False, log_every=10)
    assert r.losses == pytest.approx([6.828726179222799, 6.837005778354585, 6.850830265108441], rel=1e-5)
    s = train(load_config("digits-stage1", ["train.max_steps=3", "train.eval_images=16"]), tmp_path / "r", progress=False)
    assert s["test_bpd"] == pytest.approx(2.2739461825581637, rel=1e-5)
