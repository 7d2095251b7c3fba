"""Atomic output: a reader never sees a half-written file or folder, a crash never leaves one.

Files are written to a temporary sibling and renamed into place (`atomic_write_*`). Folders (a
saved model, a run's results) are built whole in a hidden sibling `.<name>.staging-<pid>-<rand>`
and put in place in one step by `staged_folder`; see there for the protocol and its recovery.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from sparsa.errors import SparsaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600/0700; outputs (models, reports) get the permissions open()/mkdir() would give
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()

# Test hook: called with a label at every step of a save (each file written, each rename of the
# folder protocol). The kill tests set it to SIGKILL the process at the k-th step; None otherwise.
_on_step: Callable[[str], None] | None = None


def _step(label: str) -> None:
    if _on_step is not None:
        _on_step(label)


# a full or read-only file system is the machine's state, not a bug in sparsa: say so, naming the place
_DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
                errno.EROFS: "the file system is read-only", errno.EFBIG: "the file is too large for the file system"}


def disk_error(e: BaseException, where: Path) -> SparsaError | None:
    """A SparsaError for an OSError a full, read-only or quota-limited file system raised; else None."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return SparsaError(f"cannot write {where}: {_DISK_ERRNOS[e.errno]}",
                           hint="free space there (or choose an output folder on another file system, --out)")
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _step(f"wrote {path.name}")
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        err = disk_error(e, path)
        if err is not None:
            raise err from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **kw) -> Path:
    kw.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, default=_json_default, **kw) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> Path:
    """Save tensors with safetensors (never pickle), atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def _json_default(o: Any):
    # numpy / torch scalars and paths show up in records; make them plain JSON
    if hasattr(o, "item") and callable(o.item):
        try:
            return o.item()
        except (ValueError, RuntimeError):
            pass
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (Path, os.PathLike)):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


# ------------------------------------------------------------------------------ whole folders

OVERWRITE_HINT = "pass --overwrite to replace it (everything in it is deleted), or choose another --out"


def check_out_dir(path: str | os.PathLike, *, overwrite: bool | None = False) -> Path:
    """Refuse, with a clear error, an output folder that cannot be written: a file in the way (at
    the path or above it), no permission, or (unless `overwrite`; None skips this check, for
    folders that are resumed) an existing non-empty folder. Leftovers of a killed save into it are
    cleaned first. Creates nothing; returns the path."""
    out = Path(path)
    clean_stale(out)
    probe = out
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "a file is in its place" if probe == out else f"{probe} is a file"
        raise SparsaError(f"cannot create the output folder {out}: {what}",
                          hint="give --out a folder path (a new one, or one to replace with --overwrite)")
    # a replaced folder is renamed in its parent; a resumed one (overwrite None) is written inside
    writable = probe.parent if probe == out and overwrite is not None else probe
    if not os.access(writable, os.W_OK | os.X_OK):
        raise SparsaError(f"cannot create the output folder {out}: no permission to write in {writable}",
                          hint="give --out a folder you can write to")
    if out.is_dir() and overwrite is not None:
        if not overwrite and any(os.scandir(out)):
            raise SparsaError(f"the output folder {out} already exists and is not empty", hint=OVERWRITE_HINT)
        _refuse_precious(out)
    return out


def _refuse_precious(out: Path) -> None:
    """--overwrite deletes the folder: never the working folder, one above it, home or /."""
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == Path(real.anchor) or real == Path.home().resolve() or real == cwd or real in cwd.parents:
        raise SparsaError(f"refusing to use {out} as an output folder: it is the current folder, one above it, "
                          "home or the root, and it would be replaced as a whole",
                          hint="give --out a folder of its own, e.g. --out results/")


def safe_folder_name(label: str, *, limit: int = 80) -> str:
    """A label (a recipe name) as one folder name: [A-Za-z0-9._-] only, no leading dot, not
    empty, at most `limit` characters. `../../x` and `/abs/path` stay labels, never paths."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).lstrip("._-")[:limit].rstrip("_") or "run"


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-(?P<pid>\d+)-[^/]*$")


def is_leftover(name: str) -> bool:
    """Is `name` what an interrupted atomic write or folder save leaves (hidden, temporary)?"""
    return bool(_LEFTOVER.match(name)) or (name.startswith(".") and name.endswith(".tmp"))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: str | os.PathLike) -> None:
    """Recover or remove what a killed save into `out` left beside it: a folder moved aside
    (`.<name>.old-*`) is moved back when `out` is missing (the fallback protocol was killed
    between its two renames); staging folders and other old folders are deleted. Leftovers of
    processes still running are left alone."""
    out = Path(os.path.abspath(out))
    parent = out.parent
    try:
        entries = list(os.scandir(parent))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    mine = [(e, m) for e in entries if (m := _LEFTOVER.match(e.name)) and m["name"] == out.name
            and not _pid_alive(int(m["pid"]))]
    if not os.path.lexists(out):
        old = [e for e, m in mine if m["kind"] == "old"]
        if old:
            os.rename(old[0].path, out)
    for e, _ in mine:
        if os.path.lexists(e.path):
            _remove(Path(e.path))


def clean_stale_inside(folder: str | os.PathLike) -> None:
    """`clean_stale` for every entry of `folder` (a working folder with many saved subfolders)."""
    try:
        names = {m["name"] for e in os.scandir(folder) if (m := _LEFTOVER.match(e.name))}
    except (FileNotFoundError, NotADirectoryError):
        return
    for n in names:
        clean_stale(Path(folder) / n)


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder whole, then put it at `out` in one step.

        with staged_folder("runs/x", overwrite=True) as d:
            atomic_write_json(d / "results.json", ...)

    Yields an empty hidden sibling `.<name>.staging-<pid>-<rand>`; on success it replaces `out`:
    - no `out`: one rename;
    - an existing `out` (empty, or any with `overwrite`): on Linux one renameat2(RENAME_EXCHANGE)
      swaps the two folders, then the old one (now at the staging name) is deleted;
    - where that is unavailable: `out` is renamed aside to `.<name>.old-<pid>-<rand>`, the new
      folder renamed in, the old one deleted. A kill between the two renames leaves no `out`;
      the next save into it (or `check_out_dir`) moves the old folder back.
    A kill at any step leaves at `out` the old folder or the new one, never a mix, plus hidden
    leftovers the next save into `out` deletes. On an exception the staging folder is removed.
    """
    target = Path(os.path.abspath(out))
    check_out_dir(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-{os.getpid()}-"))
    try:
        os.chmod(stage, _DIR_MODE)
        yield stage
        _fsync_dir(stage)
        _step("staged")
        if not overwrite and target.is_dir() and any(os.scandir(target)):  # written meanwhile by another process
            raise SparsaError(f"the output folder {out} already exists and is not empty", hint=OVERWRITE_HINT)
        _publish(stage, target)
    except BaseException as e:
        if os.path.lexists(stage):
            _remove(stage)
        # named by the output folder, not the hidden staging one (atomic_write_bytes's error has the OSError as cause)
        err = disk_error(e.__cause__ if isinstance(e, SparsaError) else e, Path(out))
        if err is not None:
            raise err from e
        raise


def _publish(stage: Path, out: Path) -> None:
    if not os.path.lexists(out):
        os.rename(stage, out)
        _fsync_dir(out.parent)
        _step("renamed")
        return
    if _exchange(stage, out):
        _fsync_dir(out.parent)
        _step("exchanged")
        _remove(stage)  # the old folder, now under the staging name
        _step("removed old")
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-{os.getpid()}-"))
    os.rename(out, old)  # replaces the empty folder mkdtemp made (a unique name, reserved)
    _step("moved old aside")
    os.rename(stage, out)
    _fsync_dir(out.parent)
    _step("renamed")
    _remove(old)
    _step("removed old")


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the renames are still atomic
    finally:
        os.close(fd)


_use_exchange = sys.platform.startswith("linux")  # the kill tests switch it off to test the fallback
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _use_exchange, _renameat2
    if not _use_exchange:
        return False
    if _renameat2 is None:
        import ctypes

        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):  # glibc < 2.28, musl without it
            _use_exchange = False
            return False
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        _renameat2 = (fn, ctypes)
    fn, ctypes = _renameat2
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or file system lacks it
        _use_exchange = False
        return False
    raise OSError(err, os.strerror(err), str(b))
