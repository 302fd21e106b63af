"""Small file helpers shared by the driver and the runner (standard library only).

Every derived file is written atomically (a temporary file in the same folder, then
``os.replace``), so a reader never sees half of one, and a killed writer leaves the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_PID = [os.getpid()]  # the temporary files' names: os.getpid() is a system call each time
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def write_new(path: str, text: str, fsync: bool = False) -> None:
    """Write a file that no one reads yet, in place: the temporary file of
    :func:`atomic_write_text`, and the files written before a trial is prepared (one system
    call less than a rename)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, text.encode("utf-8"))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, fsync: bool = False) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half
    of one: a temporary file beside it (named after this process, so two writers never share
    one), then ``os.replace``. Permissions follow the umask (a shared group can read results)."""
    target = os.fspath(path)
    tmp = f"{os.path.dirname(target) or '.'}/.{os.path.basename(target)}.{_PID[0]}.tmp"
    try:
        write_new(tmp, text, fsync)
    except FileNotFoundError:  # the folder does not exist yet
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        write_new(tmp, text, fsync)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_COMPACT = json.JSONEncoder(default=str).encode  # json.dumps(default=...) makes one a call


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, fsync: bool = False, compact: bool = False
) -> None:
    """``data`` as indented JSON, written atomically (see :func:`atomic_write_text`);
    ``compact``: on one line (for the files written once per trial: Python's JSON encoder is
    ten times slower with an indent)."""
    text = _COMPACT(data) if compact else json.dumps(data, indent=2, default=str)
    atomic_write_text(path, text + "\n", fsync=fsync)


def dumps_listing(head: Mapping[str, Any], key: str, items: Sequence[Any]) -> str:
    """A JSON object of ``head``'s fields and ``key``: ``items``, a field a line and an item a
    line: as readable as an indent for a long list of small objects (plan.json: a
    generation's every trial), and written by the C encoder (an indent makes Python's ten
    times slower)."""
    fields = [f"  {json.dumps(k)}: {_COMPACT(v)},\n" for k, v in head.items()]
    listed = ",\n".join(f"    {_COMPACT(item)}" for item in items)
    return "{\n" + "".join(fields) + f"  {json.dumps(key)}: [\n{listed}\n  ]\n}}\n"


def read_bytes(path: str | os.PathLike[str], fd: int | None = None) -> bytes:
    """The whole file (or what is left of the open ``fd``'s), read with bare system calls:
    Python's ``open`` adds five (fstat twice, ioctl, lseek twice) to each of the thousands of
    small files the driver reads. FileNotFoundError as ``open`` raises it."""
    own = fd is None
    if fd is None:
        fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if len(chunk) < 1 << 16:  # a regular file: a short read is its end
                break
        return b"".join(chunks)
    finally:
        if own:
            os.close(fd)


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed file, or None when it does not exist or is not (yet) valid JSON."""
    try:
        return json.loads(read_bytes(path))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        return None


def tail_bytes(path: str | os.PathLike[str], max_bytes: int, start: int = 0) -> tuple[bytes, bool] | None:
    """The last ``max_bytes`` of a (possibly huge) file, from byte ``start`` on, and whether
    the window cut what came before it; None when there is no such file."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            begin = max(start, size - max_bytes)
            f.seek(begin)
            return f.read(), begin > start
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def tail_text(
    path: str | os.PathLike[str], max_lines: int = 30, max_bytes: int = 4000, start: int = 0
) -> str:
    """The last lines of a (possibly huge) log file, from byte ``start`` on ("" when none)."""
    tail = tail_bytes(path, max_bytes, start)
    if tail is None:
        return ""
    lines = tail[0].decode("utf-8", errors="replace").splitlines()
    if tail[1] and len(lines) > 1:
        lines = lines[1:]  # the first line was cut by the byte window
    return "\n".join(lines[-max_lines:])
