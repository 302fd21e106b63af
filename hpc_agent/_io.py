"""Small file helpers shared by the driver and the runner (standard library only).

Every derived file is written atomically (a temporary file in the same folder, then
``os.replace``), so a reader never sees half of one, and a killed writer leaves the old one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_text(path: str | os.PathLike[str], text: str, fsync: bool = False) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from a shared group
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike[str], data: Any, fsync: bool = False) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", fsync=fsync)


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed file, or None when it does not exist or is not (yet) valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def tail_text(
    path: str | os.PathLike[str], max_lines: int = 30, max_bytes: int = 4000, start: int = 0
) -> str:
    """The last lines of a (possibly huge) log file, from byte ``start`` on."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            begin = max(start, size - max_bytes)
            f.seek(begin)
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if begin > start and len(lines) > 1:
        lines = lines[1:]  # the first line was cut by the byte window
    return "\n".join(lines[-max_lines:])
