"""The one place where advgui writes and reads files it does not trust.

Writing: every output file is written to a unique temporary name in the same folder, flushed and fsynced,
then renamed over the real name (and the folder fsynced), so a reader — or a run resumed after a crash —
sees the old content or the new, never half of it. Temporary names start with a dot and end in ``.tmp``
(``.NAME.<random>.tmp``) so a resume can recognise and remove the ones a killed run left behind.

Reading: only regular files are read (after resolving links), so a FIFO, a device such as /dev/zero or a
folder given where a file belongs is refused at once with a message, instead of hanging or filling memory;
small text inputs (labels, configs) are read with a size cap.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Optional

TMP_SUFFIX = ".tmp"


class FileProblem(ValueError):
    """A path cannot be used as asked; the message names the file and the reason."""


# -- writing -------------------------------------------------------------------------------------------------

def _describe_os_error(path: Path, e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return f"{path}: the disk is full (no space left while writing)"
    if e.errno == errno.EDQUOT:
        return f"{path}: the disk quota is exceeded"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: not writable ({e.strerror})"
    return f"{path}: cannot write ({e.strerror or e})"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return              # e.g. Windows: folders cannot be opened; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A new, unique temporary file beside ``path`` (created empty, mode 0600 until renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None], mode: int = 0o644) -> Path:
    """Let ``write(tmp)`` fill a temporary file beside ``path`` (for libraries that write to a path, such as
    safetensors), then fsync it and rename it over ``path``. On any error the temporary file is removed and
    ``path`` is untouched; OS errors become an OSError whose message names ``path`` (disk full included)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
    except OSError as e:
        raise OSError(e.errno, _describe_os_error(path, e)) from None
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise OSError(e.errno, _describe_os_error(path, e)) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
    return atomic_write_with(path, write, mode)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def is_temp_name(name: str) -> bool:
    """A temporary file written by :func:`atomic_write_with` (left behind only by a killed process)."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove that a file can be written there, before any work is done."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileProblem(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "write-test")
        _unlink_quietly(probe)
    except OSError as e:
        raise FileProblem(_describe_os_error(folder, e)) from None
    return folder


# -- reading -------------------------------------------------------------------------------------------------

def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` if it is (or links to) a regular file; otherwise raise FileProblem saying what it is."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)         # follows links
    except FileNotFoundError:
        raise FileProblem(f"{p}: no such {what}") from None
    except OSError as e:
        raise FileProblem(f"{p}: cannot read the {what} ({e.strerror or e})") from None
    if stat.S_ISREG(st.st_mode):
        return p
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    raise FileProblem(f"{p}: is {kind}, not a regular {what}; advgui only reads regular files")


def read_small_file(path: str | os.PathLike, what: str = "file", max_bytes: int = 16 * 1024 * 1024,
                    encoding: Optional[str] = "utf-8-sig") -> str | bytes:
    """Read a small regular file (labels, configs) completely, refusing anything over ``max_bytes``."""
    p = check_regular_file(path, what)
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise FileProblem(f"{p}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise FileProblem(f"{p}: the {what} is larger than {max_bytes // (1024 * 1024)} MiB; "
                          "that is not a plausible one")
    if encoding is None:
        return data
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise FileProblem(f"{p}: the {what} is not {encoding} text (byte {e.start})") from None
