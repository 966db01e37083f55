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


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode() -> int:
    """0666 minus the process umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    A crash or an exception leaves any earlier ``path`` untouched and no temporary file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes it 0600; give it the mode an ordinary open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``sha256``, ``md5``, ...), read in 1 MiB blocks."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
