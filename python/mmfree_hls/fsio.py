"""Writing files and output directories safely: atomic writes, ``--force`` rules, clear I/O errors.

Every file the toolkit writes (checkpoints, manifests, sweep records, reports)
goes through :func:`atomic_write` or :func:`atomic_path`: the data is written
to a temporary file in the same directory, flushed to disk, then renamed over
the target, so an interrupted run (Ctrl-C, SIGKILL, a full disk) leaves either
the old file or the new one, never a half-written one.

Output directories we create carry a marker file (:data:`MARKER`). ``--force``
replaces only a directory that carries it (or, for directories written before
markers existed, the file that identifies our own output, e.g. an HLS
project's ``mmfree_project.json``), and never ``/``, the home directory, the
working directory or one of its parents.

A read-only directory or a full disk becomes :class:`OutputError`, whose
message names the path and the fix, instead of a traceback.

Standard library only: the board-side runtime imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

#: The file that marks a directory as written by mmfree-hls (and so replaceable with --force).
MARKER = ".mmfree-output"
#: Marker kinds of the directories we write.
CHECKPOINT_KIND, PROJECT_KIND, SWEEP_KIND = "checkpoint", "hls-project", "sweep"

PathLike = Union[str, "os.PathLike[str]"]


class OutputError(RuntimeError):
    """An output file or directory cannot be written (permissions, full disk, not ours to replace)."""


class NotOursError(OutputError, FileExistsError):
    """``--force`` was asked to replace a directory that mmfree-hls did not create."""


# ------------------------------------------------------------------ errors
def describe_os_error(e: OSError, path: PathLike) -> str:
    """A one-line explanation of a failed write, naming the path and what to do."""
    where = e.filename if getattr(e, "filename", None) else path
    if not str(where):
        return e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        return f"{where}: no space left on the device; free some space or write somewhere else"
    if e.errno == errno.EDQUOT:
        return f"{where}: disk quota exceeded; free some space or write somewhere else"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied; choose an output directory you can write to, or fix its permissions"
    if e.errno == errno.EROFS:
        return f"{where}: the file system is read-only; choose an output directory on a writable disk"
    return f"{where}: {e.strerror or e}"


@contextlib.contextmanager
def io_errors(path: PathLike) -> Iterator[None]:
    """Turn an OSError raised inside the block into :class:`OutputError` naming ``path``.

    FileNotFoundError / FileExistsError pass through (they already say what is wrong).
    """
    try:
        yield
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError as e:
        raise OutputError(describe_os_error(e, path)) from None


# ----------------------------------------------------------- atomic files
def _umask_mode(mode: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike, mode: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it is renamed to ``path``.

    The caller writes the temporary file by name (``np.save``, ``shutil.copyfile``,
    a compiler). On an exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    with io_errors(target):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with io_errors(target):
            os.chmod(tmp, _umask_mode() if mode is None else mode)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: PathLike, data: Union[str, bytes]) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; return the path."""
    target = Path(path)
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(target) as tmp:
        with io_errors(target), open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
    return target


def atomic_write_json(path: PathLike, obj, **dump_kwargs) -> Path:
    dump_kwargs.setdefault("indent", 2)
    return atomic_write(path, json.dumps(obj, **dump_kwargs) + "\n")


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy a file's bytes to ``dst`` atomically (``dst`` appears complete or not at all)."""
    target = Path(dst)
    with atomic_path(target) as tmp:
        with io_errors(target):
            shutil.copyfile(src, tmp)
    return target


def append_line(path: PathLike, line: str) -> None:
    """Append one text line (newline added) durably, first ending a line cut short by a killed writer."""
    target = Path(path)
    if "\n" in line:
        raise ValueError("append_line writes a single line")
    with io_errors(target), open(target, "ab+") as f:
        f.seek(0, os.SEEK_END)
        prefix = b""
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                prefix = b"\n"          # the torn line stays on its own line; readers skip it
        f.write(prefix + line.encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------ directories
def write_marker(directory: PathLike, kind: str) -> None:
    """Mark ``directory`` as an mmfree-hls output of ``kind`` (checkpoint, hls-project, sweep ...)."""
    atomic_write_json(Path(directory) / MARKER, {"written_by": "mmfree-hls", "kind": kind})


def marker_kind(directory: PathLike) -> Optional[str]:
    """The kind recorded by :func:`write_marker`, or None when the directory carries no marker."""
    f = Path(directory) / MARKER
    if not f.is_file() or f.is_symlink():
        return None
    try:
        data = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def is_empty_dir(directory: PathLike) -> bool:
    p = Path(directory)
    with io_errors(p):
        return p.is_dir() and not any(p.iterdir())


def check_not_protected(directory: PathLike, option: str = "--out") -> None:
    """Refuse to replace ``/``, the home directory, the working directory or one of its parents."""
    p = Path(directory)
    if p.is_symlink():
        raise NotOursError(f"{p} is a symbolic link; {option} must name the real directory "
                           f"({os.path.realpath(p)}) -- nothing was replaced")
    real = p.resolve()
    cwd = Path.cwd().resolve()
    protected = {Path(real.anchor): "the file-system root", Path.home().resolve(): "your home directory"}
    why = protected.get(real)
    if why is None and (real == cwd or real in cwd.parents):
        why = "the working directory" if real == cwd else "a parent of the working directory"
    if why is not None:
        raise NotOursError(f"{option} {directory} is {why}; refusing to replace it: choose a new "
                           "directory for the output")


def ensure_replaceable(directory: PathLike, kind: str, *, force: bool, option: str = "--out",
                       legacy_markers: Sequence[str] = (), what: Optional[str] = None) -> bool:
    """Decide whether an output directory may be written.

    Returns False when it does not exist or is empty (free to use), True when it
    holds our earlier output of this ``kind`` and ``force`` is set (the caller
    replaces it). Raises FileExistsError without ``force``; :class:`NotOursError`
    when it holds anything we did not write (no marker, and none of
    ``legacy_markers`` -- files that identify output written before markers
    existed) or is protected (see :func:`check_not_protected`).
    """
    p = Path(directory)
    what = what or kind
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        if p.is_symlink():
            check_not_protected(p, option)
        raise FileExistsError(f"{p} exists and is not a directory; choose another {option}")
    if not p.exists() or is_empty_dir(p):
        return False
    ours = marker_kind(p) == kind or any((p / m).is_file() for m in legacy_markers)
    if not ours:
        raise NotOursError(f"{p} holds files that mmfree-hls did not write (no {MARKER} marker of a "
                           f"{what}); refusing to touch it{' even with --force' if force else ''}: "
                           f"choose another {option}")
    if not force:
        raise FileExistsError(f"{p} already holds a {what}; pass --force to replace it, or choose "
                              f"another {option}")
    check_not_protected(p, option)
    return True


def remove_tree(directory: PathLike, kind: str, legacy_markers: Sequence[str] = ()) -> None:
    """Delete an output directory we wrote (checked again right before deleting)."""
    p = Path(directory)
    check_not_protected(p)
    if not (marker_kind(p) == kind or any((p / m).is_file() for m in legacy_markers)):
        raise NotOursError(f"{p} carries no {MARKER} marker of a {kind}; not deleting it")
    with io_errors(p):
        shutil.rmtree(p)


def make_output_dir(directory: PathLike, kind: str) -> Path:
    """Create ``directory`` (and parents) and mark it as ours; errors name the path."""
    p = Path(directory)
    with io_errors(p):
        p.mkdir(parents=True, exist_ok=True)
    write_marker(p, kind)
    return p
