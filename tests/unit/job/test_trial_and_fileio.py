"""hpc_agent.job.trial (the trial folder's contract) and hpc_agent.job.fileio (atomic writes,
small reads), on real folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hpc_agent.job.fileio import (
    atomic_write_json,
    atomic_write_text,
    dumps_listing,
    read_bytes,
    read_json,
    tail_bytes,
    tail_text,
    write_new,
)
from hpc_agent.job.trial import (
    Launch,
    TrialPaths,
    announced,
    assign,
    assigned_to,
    attempt_duration,
    checkpoint_written_since,
    ended_folder,
    ends_attempt,
    generation_of,
    is_final,
    is_running_for,
    read_status,
    trial_id,
    write_status,
)


def test_trial_ids() -> None:
    assert trial_id(3, 17) == "0003-0017" and generation_of("0003-0017") == 3


def test_a_final_status_is_announced_in_ended(tmp_path: Path) -> None:
    folder = tmp_path / "gen-0002" / "trials" / "0002-0001"
    folder.mkdir(parents=True)
    assert ended_folder(folder) == str(tmp_path / "gen-0002" / "ended")
    assert ended_folder(tmp_path) is None and announced(tmp_path / "nowhere") == []
    write_status(folder, {"state": "running", "token": "t1", "attempt": 1})
    assert is_running_for(read_status(folder), "t1") and not is_running_for(read_status(folder), "t0")
    assert announced(tmp_path / "gen-0002" / "ended") == []  # running: nothing announced
    write_status(folder, {"state": "completed", "token": "t1", "attempt": 1, "duration_s": 2.5})
    assert announced(tmp_path / "gen-0002" / "ended") == ["0002-0001.t1.1"]
    status = read_status(folder)
    assert is_final(status) and ends_attempt(status, "other") and attempt_duration(status, "t1") == 2.5
    preempted = {"state": "preempted", "token": "t1", "started_at": 10.0, "updated_at": 12.5}
    assert ends_attempt(preempted, "t1") and not ends_attempt(preempted, "t2")
    assert attempt_duration(preempted, "t1") == 2.5 and attempt_duration(preempted, "t2") is None


def test_assignment_and_launch_round_trip(tmp_path: Path) -> None:
    assert assigned_to(tmp_path, "t1")  # no assignment: its first submission may run it
    assign(tmp_path, "t2")
    assert not assigned_to(tmp_path, "t1") and assigned_to(tmp_path, "t2")
    assign(tmp_path, None)
    assert not assigned_to(tmp_path, "t2")
    launch = Launch(
        trial="0000-0000", command=("python", "train.py"), time_budget_s=60, env={"A": "1"}, seed=4
    )
    launch.write(tmp_path)
    assert Launch.read(tmp_path) == launch and Launch.read(tmp_path / "none") is None
    paths = TrialPaths(tmp_path)
    assert paths.launch == tmp_path / "launch.json" and paths.code == tmp_path / "code"


def test_checkpoint_written_since(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint"
    (ckpt / "sub").mkdir(parents=True)
    before = time.time() - 1
    assert not checkpoint_written_since(ckpt, time.time() + 1)
    (ckpt / "sub" / "step").write_text("1")
    assert checkpoint_written_since(ckpt, before)


def test_atomic_writes_and_small_reads(tmp_path: Path) -> None:
    target = tmp_path / "new" / "x.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert read_json(target) == {"b": 1, "a": [1, 2]} and not [
        p for p in target.parent.iterdir() if p.name.startswith(".")
    ]
    atomic_write_text(target, "not json")
    assert read_json(target) is None and read_json(tmp_path / "missing") is None
    write_new(str(tmp_path / "w"), "hello")
    assert read_bytes(tmp_path / "w") == b"hello"
    text = dumps_listing({"generation": 1}, "trials", [{"id": 1}, {"id": 2}])
    assert json.loads(text) == {"generation": 1, "trials": [{"id": 1}, {"id": 2}]}
    assert (
        text == '{\n  "generation": 1,\n  "trials": [\n    {"id": 1},\n    {"id": 2}\n  ]\n}\n'
    )  # an item a line
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_text(log, max_lines=2).splitlines() == ["line 98", "line 99"]
    assert tail_text(tmp_path / "none") == ""
    assert tail_text(log, max_bytes=12) == "line 99"  # "8\nline 99\n": the cut first line is dropped
    assert tail_bytes(log, 8) == (b"line 99\n", True)
    assert tail_bytes(log, 10**6, start=10) == (log.read_bytes()[10:], False)  # nothing cut before byte 10
    assert tail_bytes(tmp_path, 8) is None and tail_bytes(tmp_path / "none", 8) is None  # a folder, nothing
