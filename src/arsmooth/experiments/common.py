"""Shared plumbing of the experiments: output folders, atomic writes, run records, small plots."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..runtime.fileio import atomic_write_text


@dataclass(frozen=True)
class Budget:
    """How much a synthetic experiment trains and evaluates; each one names a quick and a full budget."""

    n_train: int
    n_test: int
    steps: int
    n_samples: int = 0  # samples drawn for the figures or scored
    base_steps: int = 0  # fig4: steps of the 8-logistic baseline
    hidden: tuple[int, ...] = ()  # MADE hidden layers
    k_iw: int = 0  # K of the importance-weighted bound
    select_steps: int = 0  # realnvp: steps of each run that picks sigma on validation data
    layers: int = 0  # realnvp: coupling layers of p(x~) and of the baseline
    width: int = 0  # realnvp: hidden units of p(x~)
    posterior: tuple[int, int] = (0, 0)  # realnvp: (coupling layers, hidden units) of p(x | x~)
    n_seeds: int = 1  # training seeds averaged


@dataclass(frozen=True)
class Budgets:
    quick: Budget  # the same code path in seconds (tests)
    full: Budget  # the committed results

    def of(self, run: "Run") -> Budget:
        return self.quick if run.quick else self.full


@dataclass
class Run:
    """What an experiment reports: its JSON result, a markdown body, figures and a record of the run."""

    name: str
    quick: bool
    seed: int
    result: dict = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)  # markdown lines
    figures: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    classifier: str | None = None  # image experiments: the LeNet file of the sample metrics (reproduce --classifier)
    device: str = "cpu"  # image experiments: where sampling and scoring run (reproduce --device)
    started: float = field(default_factory=time.perf_counter)

    def record(self, command: str) -> dict:
        return {
            "experiment": self.name,
            "command": command,
            "seed": self.seed,
            "quick": self.quick,
            "settings": self.settings,
            "wall_time_s": round(time.perf_counter() - self.started, 1),
            "arsmooth": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            **({"device": self.device} if self.device != "cpu" else {}),  # CPU records keep their old keys
        }


def write_run(run: Run, out: Path, command: str) -> dict:
    """Write ``NAME.json`` (exact result keys), ``NAME.md`` (summary) and ``NAME.run.json`` (record)."""
    rec = run.record(command)
    atomic_write_text(out / f"{run.name}.json", json.dumps(run.result, indent=2) + "\n")
    atomic_write_text(out / f"{run.name}.run.json", json.dumps(rec, indent=2) + "\n")
    lines = [f"# `{run.name}`{' (quick)' if run.quick else ''}", ""]
    lines += run.summary
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in run.figures]
    lines += [
        "",
        "## Run",
        "",
        f"- command: `{command}`",
        f"- seed: {run.seed}; quick: {run.quick}; wall time: {rec['wall_time_s']} s "
        f"on {rec['threads']} thread(s), torch {rec['torch']}",
        f"- settings: `{json.dumps(run.settings)}`",
    ]
    atomic_write_text(out / f"{run.name}.md", "\n".join(lines) + "\n")
    return rec


def output_names(name: str, figures: list[str]) -> list[str]:
    return [f"{name}.json", f"{name}.md", f"{name}.run.json", *figures]


def command_line() -> str:
    return " ".join(["arsmooth", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("arsmooth") else " ".join(sys.argv)


def num_or_na(x: float | None, spec: str = ".2f") -> str:
    """``x`` formatted by ``spec``, or ``n/a`` for a number that was not computed."""
    return "n/a" if x is None else format(x, spec)


def fmt(x: float) -> str:
    return f"{x:.3f}"
