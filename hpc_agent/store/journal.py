"""The journal: an append-only JSONL file, the only source of truth of a campaign.

Modelled on Optuna's JournalFileBackend. Each event is one JSON object on one line, written
with a single ``write`` on an ``O_APPEND`` descriptor and ``fsync``'d before the call returns,
under a lock that works on NFS (an ``O_EXCL`` lock file: atomic on NFSv3 and later, where
``flock`` is not reliable). Readers take no lock.

A driver killed in the middle of a write leaves a torn last line. Reading tolerates it with a
warning (the event it was writing never happened). The next append truncates the torn bytes
first, so that a new event is never glued onto half of an old one. A broken line anywhere
*else* is real corruption and raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_agent.errors import CampaignError
from hpc_agent.store.events import SCHEMA_VERSION, Event, copy_with, to_record

LOCK_STALE_S = 30.0  # a journal lock is held for milliseconds; older than this, its holder died


class TornLineWarning(UserWarning):
    """The journal's last line was incomplete (its writer was killed mid-write)."""


_TORN_REPORTED: set[tuple[str, int]] = set()  # (journal, offset) of torn lines already reported


def warn_torn(path: Path, offset: int, size: int) -> None:
    """Report a torn last line once per process, however often the journal is read (and then
    cut): one wording for both."""
    key = (os.path.realpath(path), offset)
    if key in _TORN_REPORTED:
        return
    _TORN_REPORTED.add(key)
    warnings.warn(
        f"{path}: its last line is torn ({size} bytes left by a killed writer): "
        "ignored, and cut before the next write",
        TornLineWarning,
        stacklevel=3,
    )


class FileLock:
    """An exclusive lock file created with ``O_CREAT | O_EXCL``; safe on NFS.

    The file holds ``host pid``. A lock is stale when its holder is a dead process on this
    host, or when the file is older than ``stale_s`` (its holder on another host died without
    removing it); a stale lock is broken with a rename, so two breakers cannot both win.
    """

    def __init__(self, path: Path, stale_s: float = LOCK_STALE_S, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.stale_s = stale_s
        self.timeout_s = timeout_s
        self._held = False

    def acquire(self) -> None:
        """Take the lock, breaking a stale one; CampaignError after ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.001
        me = f"{socket.gethostname()} {os.getpid()}\n".encode()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if time.monotonic() > deadline:
                    raise CampaignError(
                        f"could not take the lock {self.path} within {self.timeout_s:.0f} s",
                        fix=f"if no hpc-agent process is running on this campaign, remove {self.path}",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
            self._held = True
            return

    def _break_if_stale(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return True  # released meanwhile: try again at once
        holder = lock_holder(self.path)
        if holder is not None and holder[0] == socket.gethostname():
            stale = not pid_alive(holder[1])  # on this host we know for sure
        else:  # another host (NFS): only the age can tell
            stale = time.time() - st.st_mtime > self.stale_s
        if not stale:
            return False
        grave = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
        try:
            os.rename(self.path, grave)
            grave.unlink()
        except OSError:
            pass
        return True

    def release(self) -> None:
        """Give the lock back (if this object holds it)."""
        if self._held:
            self._held = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(path: Path) -> tuple[str, int] | None:
    """The ``(host, pid)`` a lock file names, or None (no lock, or not one of ours)."""
    try:
        words = Path(path).read_text().split()
    except OSError:
        return None
    if len(words) != 2 or not words[1].isdigit():
        return None
    return words[0], int(words[1])


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` alive on this host (one we may not signal counts as alive)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# one encoder for every line: json.dumps with options builds a new one at each call
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class Journal:
    """Append events to, and read events from, one ``journal.jsonl``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"))

    def exists(self) -> bool:
        """Does the journal hold anything yet?"""
        return self.path.exists() and self.path.stat().st_size > 0

    def write(self, events: Sequence[Event]) -> Written:
        """Record typed events durably, with one write and one fsync; returns them with their
        time set, and where in the file they landed (see :class:`Written`)."""
        now = time.time()
        stamped = [copy_with(e, t=round(now, 3)) for e in events]
        start, end = self._append_lines([to_record(e, now) for e in stamped])
        return Written(tuple(stamped), start, end)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Record one raw event (a JSON object with this ``event`` name) durably."""
        return self.append_many([(event, fields)])[0]

    def append_many(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """Record several raw events with one write and one fsync."""
        now = time.time()
        records = [
            {"v": SCHEMA_VERSION, "t": round(now, 3), "event": name, **fields} for name, fields in events
        ]
        self._append_lines(records)
        return records

    def _append_lines(self, records: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """One write of one line per record, fsync'd, under the lock; (start, end) offsets."""
        if not records:
            size = self.path.stat().st_size if self.path.exists() else 0
            return size, size
        data = "".join(_ENCODE(r) + "\n" for r in records).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                self._truncate_torn_tail(fd)
                start = os.fstat(fd).st_size
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return start, start + len(data)

    def size(self) -> int:
        """The journal's size in bytes (0 when it does not exist)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read_from(self, offset: int = 0, until: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """The complete events between byte ``offset`` and ``until`` (or the end), and the
        offset after the last of them: how a driver picks up what another process appended
        without reading the journal again. An unfinished last line is left for later."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read() if until is None else f.read(max(0, until - offset))
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        records = [self._parse(raw, offset, last=False) for raw in data[:end].split(b"\n") if raw.strip()]
        return [r for r in records if r is not None], offset + end

    def _truncate_torn_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0:
            return
        if os.pread(fd, 1, size - 1) == b"\n":
            return
        # find the end of the last complete line and cut what follows it
        chunk = 4096
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            buf = os.pread(fd, pos - start, start)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        tail = os.pread(fd, size - keep, keep)
        try:
            complete = isinstance(json.loads(tail), dict)
        except ValueError:
            complete = False
        if complete:  # only the newline was lost: keep the event, end its line
            os.write(fd, b"\n")
            return
        warn_torn(self.path, keep, size - keep)
        os.ftruncate(fd, keep)

    def read(self) -> list[dict[str, Any]]:
        """Every complete event, as a list (see :meth:`iter`)."""
        return list(self.iter())

    def iter(self) -> Iterator[dict[str, Any]]:
        """Every complete event, in order. A torn last line is skipped with a warning."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        last = len(lines) - 1  # after the final "\n" comes an empty string, or a torn line
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            if i == last:
                record = self._parse(raw, 0, last=True)
                if record is None:
                    warn_torn(self.path, len(data) - len(raw), len(raw))
                    return
            else:
                record = self._parse(raw, 0, last=False, line=i + 1)
            if record is not None:
                yield record

    def _parse(self, raw: bytes, offset: int, last: bool, line: int = 0) -> dict[str, Any] | None:
        """One line as an event object; None for a torn last line; corruption elsewhere raises."""
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or "event" not in record:
                raise ValueError("not an event object")
            return record
        except ValueError as e:
            if last:
                return None
            where = f"line {line}" if line else f"a line after byte {offset}"
            raise CampaignError(
                f"{self.path}: {where} is corrupt ({e}): {raw[:120]!r}",
                fix="restore the journal from a backup, or remove the broken line by hand "
                "(everything else in the results folder is rebuilt from the journal)",
            ) from None


@dataclass(frozen=True)
class Written:
    """Events as written: with their time, and the byte range they occupy. ``start`` beyond
    the offset a reader had reached means another process appended in between."""

    events: tuple[Event, ...]
    start: int
    end: int
