"""The journal: durable appends, a torn last line tolerated, concurrent writers, stale locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_agent.errors import CampaignError
from hpc_agent.store.journal import FileLock, Journal, TornLineWarning


def test_append_and_read_back(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    assert not j.exists()
    j.append("campaign", name="x")
    j.append_many([("a", {"n": 1}), ("b", {"n": 2})])
    events = j.read()
    assert [e["event"] for e in events] == ["campaign", "a", "b"]
    assert all(e["v"] == 1 and "t" in e for e in events)
    assert (tmp_path / "journal.jsonl").read_text().count("\n") == 3


def test_nan_is_refused_not_written(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    with pytest.raises(ValueError):
        j.append("x", value=float("nan"))
    assert j.read() == []


def test_torn_last_line_is_skipped_with_a_warning_then_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append("one")
    j.append("two")
    with open(path, "ab") as f:
        f.write(b'{"v":1,"event":"thr')  # the writer was killed here
    with pytest.warns(TornLineWarning) as warned:
        assert [e["event"] for e in j.read()] == ["one", "two"]
        assert [e["event"] for e in j.read()] == ["one", "two"]
        j.append("three")  # cut first
    assert len(warned) == 1  # one torn line, reported once
    assert [e["event"] for e in j.read()] == ["one", "two", "three"]
    assert path.read_bytes().endswith(b"\n")


def test_complete_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"v":1,"t":0,"event":"one"}\n{"v":1,"t":0,"event":"two"}')
    j = Journal(path)
    assert [e["event"] for e in j.read()] == ["one", "two"]
    j.append("three")
    assert [e["event"] for e in j.read()] == ["one", "two", "three"]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"v":1,"event":"one"}\ngarbage\n{"v":1,"event":"two"}\n')
    with pytest.raises(CampaignError, match="line 2 is corrupt"):
        Journal(path).read()


def _writer(path: str, n: int, tag: int) -> None:
    j = Journal(path)
    for i in range(n):
        j.append("w", tag=tag, i=i, pad="x" * 300)


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, 100, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = Journal(path).read()
    assert len(events) == 400
    for k in range(4):
        assert [e["i"] for e in events if e["tag"] == k] == list(range(100))


def test_lock_held_by_a_dead_process_is_broken(tmp_path: Path) -> None:
    lock_path = tmp_path / "x.lock"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock_path.write_text(f"{os.uname().nodename} {dead.stdout.strip()}\n")
    t0 = time.monotonic()
    with FileLock(lock_path, timeout_s=5):
        assert lock_path.exists()
    assert time.monotonic() - t0 < 2
    assert not lock_path.exists()


def test_lock_held_by_a_live_process_times_out(tmp_path: Path) -> None:
    lock_path = tmp_path / "x.lock"
    lock_path.write_text(f"{os.uname().nodename} {os.getppid()}\n")
    with pytest.raises(CampaignError, match="could not take the lock"):
        FileLock(lock_path, timeout_s=0.2).acquire()


def test_lines_are_single_json_objects(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append("x", text="line\nbreak", data={"a": [1, 2]})
    raw = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert len(raw) == 1 and json.loads(raw[0])["text"] == "line\nbreak"


def test_every_event_writes_its_fields_in_declared_order() -> None:
    """``Event.fields`` reads the instance's ``__dict__``: made by ``__init__``, by
    ``copy_with`` or read back from a line, it must hold the declared fields, in order."""
    import dataclasses

    from hpc_agent.store.events import EVENTS, copy_with, parse, to_record

    for kind, cls in EVENTS.items():
        declared = [f.name for f in dataclasses.fields(cls) if f.name != "t"]
        made = cls()
        for e in (made, copy_with(made, t=5.0), parse(to_record(made, 1.0))):
            assert e is not None and list(e.fields()) == declared, kind
        assert parse(to_record(made, 1.0)) == made
