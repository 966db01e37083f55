"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded with ``weights_only=True``.

A checkpoint records its kind (``baseline``, ``stage1``, ``stage2``, ``smoothed``), the noise sigma (for
``smoothed`` the learned value; the config holds the initial one), the run's settings as a plain dict
(``Settings.to_dict()``; :func:`settings_of` reads them back), the training step and the arsmooth version
and format that wrote it. Loading never unpickles code (``torch.load(weights_only=True)``) and turns
every failure into one clear line.
"""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import ArsmoothError
from ..maths.objectives import RUN_KINDS as KINDS
from .config import Settings
from .fileio import atomic_write

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "kind", "config", "model", "step")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def _check_primitive(value, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_primitive(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ArsmoothError(f"config key {k!r} in {where} is not a string")
            _check_primitive(v, f"{where}[{k!r}]")
        return
    raise ArsmoothError(f"config value at {where} is a {type(value).__name__}; only numbers, strings, lists and dicts")


def save_checkpoint(path, *, kind: str, model_state: dict, config: dict, sigma: float | None, step: int,
                    optimizer_state=None, scheduler_state=None, ema_state=None, rng_state=None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename); an older one is never half-replaced."""
    if kind not in KINDS:
        raise ArsmoothError(f"unknown checkpoint kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(config, dict):
        raise ArsmoothError(f"the config must be a dict, got {type(config).__name__}")
    _check_primitive(config, "config")
    _check_primitive(extra or {}, "extra")
    ckpt = {"format_version": FORMAT_VERSION, "arsmooth_version": __version__, "kind": kind,
            "sigma": None if sigma is None else float(sigma), "config": config, "step": int(step),
            "model": model_state, "optimizer": optimizer_state, "scheduler": scheduler_state, "ema": ema_state,
            "rng": rng_state, "extra": extra or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def _kinds(expect_kind) -> tuple[str, ...] | None:
    if expect_kind is None:
        return None
    return (expect_kind,) if isinstance(expect_kind, str) else tuple(expect_kind)


def _check_loaded(ckpt, path, expect_kind) -> dict:
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED):
        raise ArsmoothError(f"{path} is not an arsmooth checkpoint (missing fields)")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise ArsmoothError(f"{path} was written by arsmooth {ckpt.get('arsmooth_version', '?')} with format "
                            f"{ckpt['format_version']}; this arsmooth reads format {FORMAT_VERSION}")
    kinds = _kinds(expect_kind)
    if kinds and ckpt["kind"] not in kinds:
        raise ArsmoothError(f"{path} is a {ckpt['kind']} checkpoint but a {' or '.join(kinds)} checkpoint is expected here")
    ckpt.setdefault("extra", {})
    return ckpt


def load_checkpoint(path, *, expect_kind: str | tuple[str, ...] | None = None, map_location="cpu") -> dict:
    """Load with ``torch.load(weights_only=True)``; wrong kind, version or bytes give one-line errors."""
    path = Path(path)
    if not path.exists():
        raise ArsmoothError(f"no checkpoint at {path}")
    if path.is_dir():
        raise ArsmoothError(f"{path} is a folder; give the checkpoint file (e.g. {path}/last.pt)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch.load's own error here is cryptic
        raise ArsmoothError(f"{path} is not a readable arsmooth checkpoint (truncated or corrupt: not a zip archive)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure to read is the same user-facing error
        raise ArsmoothError(f"{path} is not a readable arsmooth checkpoint (truncated or corrupt): {_one_line(e)}") from None
    return _check_loaded(ckpt, path, expect_kind)


def settings_of(ckpt: dict) -> Settings:
    """The run settings a checkpoint holds (as a plain dict), typed and checked; settings added since it was
    written take their defaults, or what runs did before them (:data:`arsmooth.runtime.config.LEGACY`)."""
    return Settings.from_dict(ckpt["config"], "the checkpoint's config")


def check_same_sigma(stage1: dict, stage2: dict) -> None:
    """Refuse a stage 1 and a stage 2 trained with different noise levels."""
    s1, s2 = stage1.get("sigma"), stage2.get("sigma")
    if s1 is not None and s2 is not None and abs(s1 - s2) > 1e-12:
        raise ArsmoothError(f"stage 1 was trained with sigma {s1} and stage 2 with sigma {s2}; they must match")


def capture_rng() -> dict:
    """Torch (CPU and CUDA), NumPy and Python RNG states, in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ArsmoothError("safetensors is not installed; pip install safetensors") from None
    return safetensors.torch


def export_safetensors(ckpt: dict, path) -> Path:
    """Write the model weights and the metadata (kind, sigma, config) as a safetensors file, atomically."""
    tensor_files = _safetensors()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["model"].items()}
    meta = {"kind": ckpt["kind"], "sigma": json.dumps(ckpt["sigma"]), "config": json.dumps(ckpt["config"]),
            "extra": json.dumps(ckpt.get("extra", {})), "format_version": str(FORMAT_VERSION),
            "arsmooth_version": __version__}
    return atomic_write(path, lambda tmp: tensor_files.save_file(tensors, tmp, metadata=meta))


def import_safetensors(path, *, expect_kind: str | tuple[str, ...] | None = None) -> dict:
    """Read a file written by :func:`export_safetensors` into a checkpoint-shaped dict (step 0)."""
    tensor_files = _safetensors()
    path = Path(path)
    if not path.is_file():
        raise ArsmoothError(f"no safetensors file at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        model = tensor_files.load_file(str(path))
        ckpt = {"format_version": int(meta["format_version"]), "arsmooth_version": meta.get("arsmooth_version"),
                "kind": meta["kind"], "sigma": json.loads(meta["sigma"]), "config": json.loads(meta["config"]),
                "extra": json.loads(meta.get("extra", "{}")), "step": 0, "model": model,
                "optimizer": None, "scheduler": None, "ema": None, "rng": None}
    except ArsmoothError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ArsmoothError(f"{path} is not a readable arsmooth safetensors file: {_one_line(e)}") from None
    return _check_loaded(ckpt, path, expect_kind)
