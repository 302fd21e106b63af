"""hpc_agent.store.journal (append-only JSONL, the lock file, a torn last line) and
hpc_agent.store.events (one frozen dataclass an event, parse / to_record)."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import pytest

from hpc_agent.errors import CampaignError
from hpc_agent.store.events import (
    EVENTS,
    Event,
    Planned,
    PlannedTrial,
    Requeued,
    TrialEnded,
    Verdict,
    copy_with,
    parse,
    to_record,
)
from hpc_agent.store.journal import FileLock, Journal, TornLineWarning, lock_holder, pid_alive


def test_every_event_round_trips_through_its_record() -> None:
    planned = Planned(
        generation=0,
        planner="tpe",
        note="n",
        trials=(PlannedTrial("0000-0000", 0, "0000-0000", 1, {"x": 0.5}),),
    )
    for event in (
        planned,
        TrialEnded(trial="0000-0000", state="completed", objective=0.5, reason=""),
        Requeued(trial="0000-0000", reason="lost"),
    ):
        record = to_record(event, 12.3456)
        assert record["v"] >= 1 and record["t"] == 12.346 and record["event"] == event.kind
        again = parse(record)
        assert again is not None and again.fields() == event.fields() and again.t == 12.346
    assert Verdict.kind == "verdict" and EVENTS["verdict"] is Verdict  # the name on disk
    assert parse({"event": "from_a_later_version"}) is None
    assert copy_with(planned, note="m").note == "m" and planned.note == "n"


def test_every_event_class_is_named_as_its_kind_on_disk() -> None:
    """``trial_ended`` is TrialEnded: a reader of the journal finds the class by its kind."""
    named = {kind: "".join(word.title() for word in kind.split("_")) for kind in EVENTS}
    assert {kind: cls.__name__ for kind, cls in EVENTS.items()} == named
    classes, todo = set(), [Event]
    while todo:  # every event class, registered or not
        todo += todo.pop().__subclasses__()
        classes.update(todo)
    assert classes == set(EVENTS.values())  # a new class must be registered, under its kind


def test_written_events_are_read_back_from_an_offset(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    assert not j.exists() and j.read() == [] and j.size() == 0
    first = j.write([Requeued(trial="a", reason="r1")])
    assert first.start == 0 and first.end == j.size()
    second = j.write([Requeued(trial="b", reason="r2"), Requeued(trial="c", reason="r3")])
    assert second.start == first.end
    records, end = j.read_from(first.end)
    assert [r["trial"] for r in records] == ["b", "c"] and end == second.end
    assert [r["trial"] for r in j.read()] == ["a", "b", "c"]


def test_a_torn_last_line_is_skipped_and_cut_at_the_next_write(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.write([Requeued(trial="a", reason="r")])
    with open(j.path, "ab") as f:
        f.write(b'{"event": "requeued", "tri')
    with pytest.warns(TornLineWarning):
        assert [r["trial"] for r in j.read()] == ["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)
        j.write([Requeued(trial="b", reason="r")])
    assert [r["trial"] for r in j.read()] == ["a", "b"]


def test_corruption_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "requeued"}\nnot json\n{"event": "requeued"}\n')
    with pytest.raises(CampaignError, match="line 2 is corrupt"):
        Journal(path).read()


def test_the_lock_file_is_exclusive_and_a_dead_holders_lock_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "driver.lock"
    with FileLock(path):
        assert lock_holder(path) == (socket.gethostname(), os.getpid())
        with pytest.raises(CampaignError, match="could not take the lock"):
            FileLock(path, timeout_s=0.05).acquire()
    assert not path.exists()
    path.write_text(f"{socket.gethostname()} 999999999\n")  # a pid that cannot be alive
    assert not pid_alive(999999999) and pid_alive(os.getpid())
    lock = FileLock(path, timeout_s=1)
    lock.acquire()
    assert lock_holder(path) == (socket.gethostname(), os.getpid())
    lock.release()
