"""Pretrained CPU-scale models that ship inside the package: no training, no download.

Each dataset (``mnist``, ...) has up to three safetensors files in ``arsmooth/weights/`` (baseline,
stage 1 p(x~), stage 2 p(x | x~)) and one entry in ``weights/manifest.json`` that records, per file,
its SHA-256 and how the model was trained (the run it came from, steps, images seen, CPU-hours).
Every load checks the SHA-256 first, so a damaged or replaced file is refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArsmoothError
from ..maths.objectives import KINDS  # what ships per dataset: one network each
from ..runtime import checkpoint as ckpt_io
from ..runtime.fileio import atomic_write_text, digest

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"  # src/arsmooth/weights, package data


def sha256_of(path: Path) -> str:
    return digest(path, "sha256")


def manifest(root: Path | None = None) -> dict:
    """``{dataset: {kind: {"file", "sha256", "steps", "images_seen", ...}}}``; empty when nothing ships."""
    path = Path(root or WEIGHTS_DIR) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArsmoothError(f"{path} is not readable JSON ({e}); reinstall arsmooth") from None


def names(root: Path | None = None) -> list[str]:
    return sorted(manifest(root))


def entry(name: str, kind: str, root: Path | None = None) -> dict:
    m = manifest(root)
    if name not in m:
        have = ", ".join(sorted(m)) or "none in this installation"
        raise ArsmoothError(f"no pretrained models named {name!r}; shipped: {have}")
    if kind not in m[name]:
        have = ", ".join(k for k in KINDS if k in m[name])
        raise ArsmoothError(f"the pretrained {name!r} models have no {kind} (shipped: {have})")
    return m[name][kind]


def checkpoint(name: str, kind: str, root: Path | None = None) -> dict:
    """The checkpoint-shaped dict of a shipped model, after its SHA-256 matched the manifest."""
    root = Path(root or WEIGHTS_DIR)
    e = entry(name, kind, root)
    path = root / e["file"]
    if not path.is_file():
        raise ArsmoothError(f"the pretrained weights file {path} is missing; reinstall arsmooth")
    got = sha256_of(path)
    if got != e["sha256"]:
        raise ArsmoothError(f"the pretrained weights file {path} is damaged or replaced (sha256 {got[:12]}..., "
                            f"expected {e['sha256'][:12]}...); reinstall arsmooth")
    return ckpt_io.import_safetensors(path, expect_kind=kind)


def ship(name: str, runs: dict[str, str | Path], root: Path | None = None, notes: dict | None = None) -> dict:
    """Export the ``last.pt`` of each run (``{kind: run folder}``) as ``NAME-KIND.safetensors`` under ``root``
    and record its SHA-256 and training budget in the manifest; returns the dataset's manifest entry.

    The budget comes from the run's own ``metrics.jsonl`` (last line: step, images seen, seconds).
    """
    root = Path(root or WEIGHTS_DIR)
    root.mkdir(parents=True, exist_ok=True)
    m = manifest(root)
    out = {}
    for kind, run in runs.items():
        run = Path(run)
        ck = ckpt_io.load_checkpoint(run / "last.pt", expect_kind=kind)
        ck = dict(ck, config=_portable(ck["config"]))
        fname = f"{name}-{kind}.safetensors"
        ckpt_io.export_safetensors(ck, root / fname)
        last = _last_metrics(run)
        out[kind] = {"file": fname, "sha256": sha256_of(root / fname), "run": run.as_posix(), "step": ck["step"],
                     "images_seen": last.get("images"), "train_seconds": last.get("seconds"),
                     "test_bpd_at_last_checkpoint": last.get("test_bpd"), "sigma": ck["sigma"],
                     "model": {k: getattr(ckpt_io.settings_of(ck).model, k)
                               for k in ("nr_resnet", "nr_filters", "nr_logistic_mix")},
                     **(notes or {}).get(kind, {})}
    m[name] = out
    atomic_write_text(root / "manifest.json", json.dumps(m, indent=1, sort_keys=True) + "\n")
    return out


def _portable(config: dict) -> dict:
    """The run's config without machine-specific paths (the data folder of the machine that trained it)."""
    data = dict(config["data"], data_root=None)
    return dict(config, data=data)


def _last_metrics(run: Path) -> dict:
    from ..runtime.run_folder import read_metrics

    rows = [r for r in read_metrics(run) if "images" in r]
    return rows[-1] if rows else {}
