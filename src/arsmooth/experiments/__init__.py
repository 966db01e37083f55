"""The paper's experiments, each runnable as ``arsmooth reproduce NAME --out DIR [--quick] [--seed S]``.

Every experiment writes ``DIR/NAME.json`` (the result, exact keys, nats per example), its figures as
PNG, ``DIR/NAME.md`` (a short summary) and ``DIR/NAME.run.json`` (command, seed, settings, wall time).
``quick`` runs the same code path on tiny budgets, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ArsmoothError


@dataclass(frozen=True)
class Experiment:
    name: str
    what: str
    figures: tuple[str, ...]
    module: str
    func: str

    def runner(self) -> Callable:
        import importlib

        return getattr(importlib.import_module(f".{self.module}", __name__), self.func)


_IMAGE_FIGURES = ("samples_fig6.png", "samples_baseline.png", "samples_smoothed.png", "samples_single_step.png",
                  "samples_two_step.png", "inpainting.png", "denoising.png", "neighbours_pixels.png",
                  "neighbours_features.png", "probes.png")

_DESIGN_FIGURES = ("denoising_designs.png", "two_step_stacked.png", "two_step_spatial.png")
STAGE2_OPTION = ("mnist", "fashion", "cifar10", "celeba")  # the experiments that take --stage2
DATA_ROOT_OPTION = (*STAGE2_OPTION, "transformer-mnist", "transformer-fashion")  # and --data-root
INCEPTION_OPTION = ("cifar10", "celeba")  # the experiments that take --inception-weights
# the experiments whose sample metrics use our LeNet, which --classifier can give
CLASSIFIER_OPTION = ("mnist", "fashion", "cifar10", "celeba", "transformer-mnist", "transformer-fashion", "stage2-mnist",
                     "stage2-fashion", "learned-sigma-mnist")

EXPERIMENTS = {
    e.name: e
    for e in (
        Experiment("fig3", "ten modes: 3 logistics on raw vs smoothed data (Fig. 3)", ("fig3.png",), "one_d", "fig3"),
        Experiment("fig4", "six modes: 8 logistics vs smoothed 2+2, kernel sweep (Fig. 4)",
                   ("fig4_sweep.png", "fig4_samples.png"), "one_d", "fig4"),
        Experiment("denoise1d", "two Gaussians: single-step vs two-step denoising (App. B.1)",
                   ("denoise1d.png",), "one_d", "denoise1d"),
        Experiment("table1", "rings and olympics: MADE 3/6 vs smoothed MADE 3 (Table 1)",
                   ("table1_rings.png", "table1_olympics.png"), "two_d", "table1"),
        Experiment("realnvp", "checkerboard and olympics: RealNVP with and without smoothing (sec. 5)",
                   ("realnvp_checkerboard.png", "realnvp_olympics.png"), "two_d", "realnvp"),
        Experiment("learned-sigma", "rings and olympics: sigma fixed vs learned by the ELBO (sec. 3.3)",
                   ("learned_sigma_rings.png", "learned_sigma_olympics.png", "learned_sigma_trajectory.png"),
                   "learned_sigma", "learned_sigma"),
        Experiment("learned-sigma-mnist", "MNIST, both stages trained together: sigma fixed vs learned (sec. 3.3)",
                   ("learned_sigma_mnist_fixed.png", "learned_sigma_mnist_learned.png",
                    "learned_sigma_mnist_trajectory.png"), "learned_sigma", "learned_sigma_mnist"),
        Experiment("mnist", "MNIST: PixelCNN++ baseline vs two-step smoothed model (Fig. 6, tasks)",
                   _IMAGE_FIGURES, "images", "mnist"),
        Experiment("fashion", "Fashion-MNIST: as mnist", _IMAGE_FIGURES, "images", "fashion"),
        Experiment("cifar10", "CIFAR-10: the paper's Table 2 models and columns (GPUs; --quick: tiny models)",
                   _IMAGE_FIGURES, "images", "cifar10"),
        Experiment("celeba", "CelebA 32x32: as cifar10 (FID / KID on rotation-trained LeNet features, no probes)",
                   _IMAGE_FIGURES, "images", "celeba"),
        Experiment("transformer-mnist", "MNIST with a causal pixel transformer: baseline vs smoothing, as mnist",
                   _IMAGE_FIGURES, "images", "transformer_mnist"),
        Experiment("transformer-fashion", "Fashion-MNIST with a causal pixel transformer: as transformer-mnist",
                   _IMAGE_FIGURES, "images", "transformer_fashion"),
        Experiment("stage2-mnist", "MNIST: the paper's stacked stage 2 against the spatially conditioned one",
                   _DESIGN_FIGURES, "images", "stage2_mnist"),
        Experiment("stage2-fashion", "Fashion-MNIST: as stage2-mnist", _DESIGN_FIGURES, "images", "stage2_fashion"),
    )
}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ArsmoothError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def reproduce(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    sigma: float | None = None,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
    stage2: str | None = None,
    data_root: str | None = None,
    inception_weights: str | None = None,
    classifier: str | None = None,
    device: str = "cpu",
    dry_run: bool = False,
) -> dict | None:
    """Run experiment ``name`` and write its outputs to ``out``; returns the run record (None on the ranks
    of a torchrun group but the first: the image experiments train and sample on every rank).

    ``stage2`` (``stacked`` or ``spatial``) picks the stage-2 design of the image experiments, ``data_root``
    their data folder; ``inception_weights`` (cifar10, celeba) adds the standard Inception metrics;
    ``classifier`` is the LeNet file of the sample metrics (default: ``OUT/classifier.pt``, fit when missing).
    ``device`` is where the image experiments sample and score (training follows each preset's ``device``).
    Every option is checked before any work starts; ``dry_run`` prints the plan (and for cifar10 / celeba
    the cost estimate) and writes nothing.
    """
    from ..distributed import is_main_process
    from ..fileio import FolderLock, prepare_out_dir
    from .common import Run, command_line, output_names, write_run

    exp = get(name)
    opts = _checked_options(name, sigma, seed, stage2, data_root, inception_weights, classifier)
    if dry_run:
        print("\n".join(plan(name, quick, seed, sigma, device, **{k: v for k, v in opts.items() if k != "classifier"})))
        return None
    out = prepare_out_dir(out, output_names(name, list(exp.figures)), force)
    # one writer per output folder (rank 0 of a torchrun group speaks for it; each training run locks its own)
    lock = FolderLock(out, f"arsmooth reproduce {name}") if is_main_process() else None
    try:
        run = Run(name=name, quick=quick, seed=seed, classifier=opts.pop("classifier", None), device=device)
        exp.runner()(run, out, sigma, progress, **opts)
        if not is_main_process():  # under torchrun the other ranks trained and sampled; rank 0 writes
            return None
        rec = write_run(run, out, command or command_line())
    finally:
        if lock is not None:
            lock.release()
    rec["result"] = run.result
    return rec


def plan(name: str, quick: bool, seed: int, sigma, device: str = "cpu", **opts) -> list[str]:
    """What ``reproduce NAME`` would do, as lines: the models and budgets of an image experiment (and for
    cifar10 / celeba the cost estimate on ``device``), or the experiment's budget otherwise."""
    exp = get(name)
    lines = [f"reproduce {name}{' --quick' if quick else ''} (seed {seed}): {exp.what}"]
    if exp.module != "images" or name.startswith("stage2-"):
        return lines + ["small models on the CPU: minutes (see README); nothing to estimate"]
    from .images import image_plan

    return lines + image_plan(name, quick, seed, sigma, device, **opts)


def _checked_options(name: str, sigma, seed: int, stage2, data_root, inception_weights, classifier) -> dict:
    """Every option of ``reproduce`` checked against the experiment, before any work; the keyword arguments
    its runner takes (and ``classifier``, which the run carries)."""
    if sigma is not None and not sigma > 0:
        raise ArsmoothError(f"sigma must be a positive noise standard deviation, got {sigma}")
    if seed < 0:
        raise ArsmoothError(f"seed must be >= 0, got {seed}")
    opts = {}
    if stage2 is not None:
        from ..config import STAGE2_CONDITIONINGS

        if name not in STAGE2_OPTION:
            raise ArsmoothError(f"--stage2 applies to {' and '.join(STAGE2_OPTION)}, not {name}")
        if stage2 not in STAGE2_CONDITIONINGS:
            raise ArsmoothError(f"--stage2 must be one of {', '.join(STAGE2_CONDITIONINGS)}, got {stage2!r}")
        opts["stage2"] = stage2
    if data_root is not None:
        if name not in DATA_ROOT_OPTION:
            raise ArsmoothError(f"--data-root applies to {', '.join(DATA_ROOT_OPTION)}, not {name}")
        if not Path(data_root).is_dir():
            raise ArsmoothError(f"--data-root {data_root} is not a folder")
        opts["data_root"] = str(data_root)
    if inception_weights is not None:
        from ..metrics import check_inception

        if name not in INCEPTION_OPTION:
            raise ArsmoothError(f"--inception-weights applies to {' and '.join(INCEPTION_OPTION)} (RGB images), "
                                f"not {name}")
        check_inception(inception_weights)
        opts["inception_weights"] = str(inception_weights)
    if classifier is not None:
        from ..classifier import load

        if name not in CLASSIFIER_OPTION:
            raise ArsmoothError(f"--classifier applies to {', '.join(CLASSIFIER_OPTION)}, not {name}")
        load(classifier)  # a one-line error now for a missing or damaged file, not after training
        opts["classifier"] = str(classifier)
    return opts
