"""Safe file output: atomic writes and output folders that are checked before any work is done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ArsmoothError, WriteFailed

_CREATED: list[Path] = []  # folders this process created for its output, newest last (see remove_unused_folders)


def make_folder(out: Path) -> None:
    """``mkdir -p out``, remembering each folder it creates, so that a command refused or interrupted before it
    wrote anything can take them away again (:func:`remove_unused_folders`)."""
    missing = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    _CREATED.extend(reversed(missing))


def remove_unused_folders() -> None:
    """Remove the folders :func:`make_folder` created that are still empty (or hold only a run lock), newest
    first: a refused command leaves no trace."""
    while _CREATED:
        p = _CREATED.pop()
        try:
            (p / LOCK_NAME).unlink(missing_ok=True) if [f.name for f in p.iterdir()] == [LOCK_NAME] else None
            p.rmdir()
        except OSError:
            pass  # not empty, or gone: it holds something of value, or it is not ours to remove


def forget_created_folders() -> None:
    """The folders made so far hold output now: keep them whatever happens next."""
    _CREATED.clear()


def writable_folder(folder: Path, what: str, hint: str) -> None:
    """Create ``folder`` if needed (:func:`make_folder`) and check that a file can really be written in it."""
    try:
        make_folder(folder)
    except OSError as e:
        raise ArsmoothError(f"cannot create {what} {folder}: {e.strerror}; {hint}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArsmoothError(f"{what} {folder} is not writable; {hint}")
    try:  # os.access can lie (root, read-only mounts): try a real write
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".arsmooth-probe-"):
            pass
    except OSError as e:
        raise ArsmoothError(f"{what} {folder} is not writable ({e.strerror}); {hint}") from None


def prepare_out_file(path: str | Path, force: bool = False) -> Path:
    """Check one output file before any work is done: an existing file is refused unless ``force``, and its
    folder is created (taken away again if the command is refused: :func:`make_folder`) and must be writable."""
    path = Path(path)
    if path.is_dir():
        raise ArsmoothError(f"{path} is a folder; give the name of the file to write")
    if path.exists() and not force:
        raise ArsmoothError(f"{path} already exists; pass --force to overwrite it")
    writable_folder(path.parent, "folder", "write the file somewhere else")
    return path


def prepare_out_dir(out: str | Path, names: list[str], force: bool = False) -> Path:
    """Create ``out`` if needed and check it is a writable folder that we will not silently clobber.

    ``names`` are the files the run will write; if one exists and ``force`` is false, stop before
    any work is done, so nothing is overwritten.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArsmoothError(f"output path {out} exists and is not a folder; pass a folder to --out")
    writable_folder(out, "output folder", "pick another --out")
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


def _write_failure(e: BaseException) -> str | None:
    """Why a write failed, if ``e`` is a failed write: an OSError, or torch.save's own error for a short write
    (``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos ...``, a full disk)."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e)
    if isinstance(e, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text
                                        or "file write failed" in text):
        return f"the writer stopped short, a full disk? ({' '.join(text.split())[:80]})"
    return None


def atomic_write(path: str | Path, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    A crash or an exception leaves any earlier ``path`` untouched and no temporary file behind. A write that
    fails (a full disk, for one) raises :class:`~arsmooth.errors.WriteFailed`, one line saying so.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes it 0600; give it the mode an ordinary open() would
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        why = _write_failure(e)
        if why is None:
            raise
        kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written in its place"
        raise WriteFailed(f"could not write {path} ({why}); {kept}") from None
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


LOCK_NAME = ".arsmooth.lock"


class FolderLock:
    """An exclusive lock on a run or output folder while one process writes it: ``fcntl.flock`` on
    ``FOLDER/.arsmooth.lock``, which the kernel releases when its holder exits however it exits (a SIGKILL
    included), so a lock left by a dead process never blocks. A second process is refused with one line
    naming the holder's pid. The file holds ``pid command`` and is removed on :meth:`release`."""

    def __init__(self, folder: str | Path, what: str):
        import fcntl

        self.path = Path(folder) / LOCK_NAME
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "?"
                os.close(fd)
                pid, _, cmd = holder.partition(" ")
                raise ArsmoothError(f"{folder} is being written by another process (pid {pid}{': ' + cmd if cmd else ''}); "
                                    "wait for it to end or stop it (Ctrl-C writes a checkpoint), then try again") from None
            try:  # the file we locked may have been removed by a holder that just released it: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it: a waiting process then locks a new file
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
