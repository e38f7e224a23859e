"""An exclusive, non-blocking lock on an output folder, that says who holds it.

The lock is an OS lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a small file inside the folder,
so it disappears with the process that holds it, even after ``kill -9``: there is no stale lock to break by
hand. The file holds the holder's process id, host, program and start time as JSON, so a second run can say
which process is writing there. On release the file is removed while it is still locked; a process that
opened the old file in the meantime sees that the path no longer leads to the file it locked and tries again,
so two processes never both believe they hold the lock.

Why not a library: ``filelock`` (3.x) opens its lock file with O_TRUNC on every attempt to take it, so
the holder's details could not live in it, and neither it nor ``portalocker`` reports the holder; the two
system calls below are all that is needed.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

_WINDOWS_LOCK_OFFSET = 1 << 30      # Windows locks bytes; lock one far past the holder's details


class LockHeld(Exception):
    """The folder is locked by another process (or another writer in this process)."""

    def __init__(self, path: Path, holder: Optional[dict[str, Any]]) -> None:
        self.path = path
        self.holder = holder or {}
        super().__init__(f"{path}: locked by {describe_holder(self.holder)}")


def describe_holder(holder: dict[str, Any]) -> str:
    """``process 1234 on host (advgui attack, since 2024-05-01T10:00:00)``, or a vaguer phrase."""
    pid = holder.get("pid")
    if pid is None:
        return "another process"
    who = f"process {pid}"
    if pid == os.getpid() and holder.get("host") == socket.gethostname():
        who += " (this process)"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        who += f" on {holder['host']}"
    extra = ", ".join(str(holder[k]) for k in ("program",) if holder.get(k))
    if holder.get("since"):
        extra = (extra + ", " if extra else "") + f"since {holder['since']}"
    return who + (f" ({extra})" if extra else "")


def read_holder(path: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The details a holder wrote into the lock file, or None (no file, empty, unreadable)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(4096)
        doc = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        return
    import fcntl
    fcntl.flock(fd, fcntl.LOCK_UN)


class FolderLock:
    """``FolderLock(folder).acquire()`` or ``with FolderLock(folder):``. Raises :class:`LockHeld` at once when
    the folder is locked (it never waits). ``info`` is stored for others to read (``pid``, ``host`` and
    ``since`` are added)."""

    def __init__(self, folder: str | os.PathLike, name: str = ".advgui.lock",
                 info: Optional[dict[str, Any]] = None) -> None:
        self.path = Path(folder) / name
        self.info = dict(info or {})
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            return self
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                raise LockHeld(self.path, read_holder(self.path))
            # the holder before us may have removed the file after we opened it: then we locked an orphan
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if not same:
                _unlock(fd)
                os.close(fd)
                continue
            details = {**self.info, "pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(details).encode("utf-8"))
            except OSError:
                pass   # the lock holds without the details; others then read "another process"
            self._fd = fd
            return self
        raise LockHeld(self.path, read_holder(self.path))  # pragma: no cover - endless churn

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform != "win32":
            try:
                os.unlink(self.path)    # while still locked: see the module docstring
            except OSError:
                pass
        try:
            _unlock(fd)
        finally:
            os.close(fd)
        if sys.platform == "win32":  # pragma: no cover - an open file cannot be removed there
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a writer dropped without close() must not keep its folder locked
        try:
            self.release()
        except Exception:  # noqa: BLE001
            pass
