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

# the options of ``reproduce`` that only some experiments take, each declaring its own
OPTIONS = ("stage2", "data_root", "inception_weights", "classifier")


@dataclass(frozen=True)
class Experiment:
    """One ``reproduce`` name: what it shows, the figures it writes, its runner ``run(run, out, sigma, progress,
    **options)``, the :data:`OPTIONS` it takes, and ``plan`` (the lines ``--dry-run`` prints) where it has one."""

    name: str
    what: str
    figures: tuple[str, ...]
    run: Callable
    options: frozenset[str] = frozenset()
    plan: Callable | None = None


EXPERIMENTS: dict[str, Experiment] = {}  # filled by the experiment modules imported at the end of this file


def experiment(name: str, what: str, figures: tuple[str, ...], options=(), plan: Callable | None = None):
    """Register the decorated function as the runner of ``reproduce name``."""
    unknown = set(options) - set(OPTIONS)
    assert not unknown, f"unknown reproduce options {unknown}"

    def register(run: Callable) -> Callable:
        EXPERIMENTS[name] = Experiment(name, what, tuple(figures), run, frozenset(options), plan)
        return run

    return register


def taking(option: str) -> list[str]:
    """The experiments that take ``option``."""
    return [e.name for e in EXPERIMENTS.values() if option in e.options]


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
    from ..runtime.distributed import is_main_process
    from ..runtime.fileio import FolderLock, prepare_out_dir
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
        exp.run(run, out, sigma, progress, **opts)
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
    if exp.plan is None:
        return lines + ["small models on the CPU: minutes (see README); nothing to estimate"]
    return lines + exp.plan(name, quick, seed, sigma, device, **opts)


def _checked_options(name: str, sigma, seed: int, stage2, data_root, inception_weights, classifier) -> dict:
    """Every option of ``reproduce`` checked against the experiment, before any work; the keyword arguments
    its runner takes (and ``classifier``, which the run carries)."""
    takes = get(name).options
    if sigma is not None and not sigma > 0:
        raise ArsmoothError(f"sigma must be a positive noise standard deviation, got {sigma}")
    if seed < 0:
        raise ArsmoothError(f"seed must be >= 0, got {seed}")
    opts = {}
    if stage2 is not None:
        from ..runtime.config import STAGE2_CONDITIONINGS

        if "stage2" not in takes:
            raise ArsmoothError(f"--stage2 applies to {', '.join(taking('stage2'))}, not {name}")
        if stage2 not in STAGE2_CONDITIONINGS:
            raise ArsmoothError(f"--stage2 must be one of {', '.join(STAGE2_CONDITIONINGS)}, got {stage2!r}")
        opts["stage2"] = stage2
    if data_root is not None:
        if "data_root" not in takes:
            raise ArsmoothError(f"--data-root applies to {', '.join(taking('data_root'))}, not {name}")
        if not Path(data_root).is_dir():
            raise ArsmoothError(f"--data-root {data_root} is not a folder")
        opts["data_root"] = str(data_root)
    if inception_weights is not None:
        from ..evaluation.metrics import check_inception

        if "inception_weights" not in takes:
            raise ArsmoothError(f"--inception-weights applies to {' and '.join(taking('inception_weights'))} (RGB "
                                f"images), not {name}")
        check_inception(inception_weights)
        opts["inception_weights"] = str(inception_weights)
    if classifier is not None:
        from ..evaluation.classifier import load

        if "classifier" not in takes:
            raise ArsmoothError(f"--classifier applies to {', '.join(taking('classifier'))}, not {name}")
        load(classifier)  # a one-line error now for a missing or damaged file, not after training
        opts["classifier"] = str(classifier)
    return opts


# every experiment module registers its experiments when imported; this order is the order they are listed in
# isort: off
from . import one_d, two_d, learned_sigma, image_experiments  # noqa: E402, F401
# isort: on
