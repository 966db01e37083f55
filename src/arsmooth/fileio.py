"""Safe file output: atomic writes and output folders that are checked before any work is done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ArsmoothError


def prepare_out_dir(out: str | Path, names: list[str], force: bool = False) -> Path:
    """Create ``out`` if needed and check it is a writable folder that we will not silently clobber.

    ``names`` are the files the run will write; if one exists and ``force`` is false, stop before
    any work is done, so nothing is overwritten.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArsmoothError(f"output path {out} exists and is not a folder; pass a folder to --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArsmoothError(f"cannot create output folder {out}: {e.strerror}; pick another --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ArsmoothError(f"output folder {out} is not writable; pick another --out")
    try:  # os.access can lie (root, read-only mounts): try a real write
        with tempfile.NamedTemporaryFile(dir=out, prefix=".arsmooth-probe-"):
            pass
    except OSError as e:
        raise ArsmoothError(f"output folder {out} is not writable ({e.strerror}); pick another --out") from None
    clash = [n for n in names if (out / n).exists()]
    if clash and not force:
        raise ArsmoothError(
            f"{out / clash[0]} already exists; pass --force to overwrite it or choose another --out"
        )
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never a half-written file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
