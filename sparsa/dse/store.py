"""The sweep store: one JSON line per finished point, appended atomically, keyed by the point's hash.

A line is written with a single `write` on an `O_APPEND` descriptor, then fsync'd, under an
exclusive `flock` (two sweeps sharing a store cannot interleave bytes). A process killed mid-write
can leave at most one torn last line; readers skip a line that does not parse, so that point is
simply not done and runs again on resume. The full result of each point lives beside the store in
`points/<key>.json`, written atomically *before* its line is appended.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from sparsa.io import _json_default, atomic_write_json


class SweepStore:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self._lock_fd: int | None = None  # see clean_stale_temp_files; set first: release() runs on failure too
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError, PermissionError) as e:
            from sparsa.errors import SparsaError

            raise SparsaError(f"cannot create the sweep folder {self.dir}: {e.strerror}"
                              " (a file is in the way, or no permission)",
                              hint="give --out a folder path (new or existing) that you can write to") from None
        self.path = self.dir / "store.jsonl"
        self.points_dir = self.dir / "points"

    # ------------------------------------------------------------ reading

    def rows(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue  # a torn line from a killed writer: that point is not done
                if isinstance(row, dict) and "key" in row:
                    yield row

    def latest(self) -> dict[str, dict]:
        """key -> its row (the last one wins if a point was ever written twice)."""
        out: dict[str, dict] = {}
        for row in self.rows():
            out[row["key"]] = row
        return out

    def done_keys(self) -> set[str]:
        return set(self.latest())

    def full_result(self, key: str) -> dict | None:
        p = self.points_dir / f"{key}.json"
        if not p.exists():
            return None
        return json.loads(p.read_text())

    # ------------------------------------------------------------ writing

    def clean_stale_temp_files(self) -> list[Path]:
        """Remove the temporary files (`.<name>.*.tmp`) a killed sweep left behind.

        A running sweep holds a shared lock on `.sweep.lock` until it exits (the kernel drops it
        when the process dies, however it dies); the cleanup runs only when the exclusive lock can
        be taken, i.e. no live sweep shares this store, so no temp file still being written is removed.
        """
        fd = os.open(self.dir / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o644)
        removed = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another sweep is running on this store: its temp files are live
        else:
            for d in (self.dir, self.points_dir):
                for p in d.glob(".*.tmp") if d.is_dir() else ():
                    p.unlink(missing_ok=True)
                    removed.append(p)
        fcntl.flock(fd, fcntl.LOCK_SH)  # held while this sweep runs (released at exit, also by a kill)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._lock_fd = fd
        return removed

    def release(self) -> None:
        """Drop the lock taken by clean_stale_temp_files (the sweep is over)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    __del__ = release  # a sweep that ended on an error releases it when its store goes


    def append(self, row: dict[str, Any], full: dict | None = None) -> None:
        if full is not None:
            atomic_write_json(self.points_dir / f"{row['key']}.json", full)
        line = (json.dumps(row, default=_json_default, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a torn tail from an earlier kill would swallow this line's start: begin on a fresh line
            if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                line = b"\n" + line
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
