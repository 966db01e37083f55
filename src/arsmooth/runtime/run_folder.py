"""A training run's folder, the one place that creates, resumes and reads it.

A run folder holds ``config.yaml`` (the merged settings), ``metrics.jsonl`` (one JSON line per log step and
checkpoint), ``last.pt`` (written atomically, :mod:`arsmooth.runtime.checkpoint`) and, once the run reaches
its budget, ``summary.json``. One process writes it at a time (``.arsmooth.lock``).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import ArsmoothError
from .config import Settings
from .fileio import FolderLock, atomic_write_text, writable_folder

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "summary.json")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> FolderLock:
    """Check the run folder for a new run, a resume or an overwrite, create it, and lock it (one writer at a
    time: :class:`~arsmooth.runtime.fileio.FolderLock`) before anything in it is changed; returns the lock."""
    if resume and overwrite:
        raise ArsmoothError("--resume and --overwrite contradict each other; pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise ArsmoothError(f"{run_dir} exists and is not a folder; pick another --out")
    has_run = run_dir.is_dir() and any((run_dir / f).exists() for f in RUN_FILES)
    if resume:
        if not (run_dir / "last.pt").exists():
            raise ArsmoothError(f"nothing to resume: {run_dir}/last.pt does not exist")
        return FolderLock(run_dir, "arsmooth train --resume")
    if has_run and not overwrite:
        raise ArsmoothError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    writable_folder(run_dir, "run folder", "pick another --out")
    lock = FolderLock(run_dir, "arsmooth train")
    if overwrite:
        for f in RUN_FILES:
            (run_dir / f).unlink(missing_ok=True)
    return lock


def saved_settings(run_dir: Path) -> Settings | None:
    """The settings in a run folder's ``config.yaml``, or None when it is missing or unreadable (the
    checkpoint's own copy is checked, with a clear error, once loaded)."""
    try:
        return Settings.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    except (OSError, yaml.YAMLError, ArsmoothError):
        return None


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` in order (none if it is missing; a line cut by a crash is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_metric(run_dir: Path, rec: dict) -> None:
    """Append one record to the run's ``metrics.jsonl``, flushed."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the crash
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def last_test_bpd(run_dir: Path) -> float | None:
    """The test bits/dim of the run's last checkpoint, from ``metrics.jsonl``."""
    vals = [rec["test_bpd"] for rec in read_metrics(run_dir) if "test_bpd" in rec]
    return vals[-1] if vals else None
