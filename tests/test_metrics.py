"""The Polars gather: one lazy scan, tolerant of what killed and buggy trials leave behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.store import metrics
from hpc_agent.store.metrics import outcome, summarize


@pytest.fixture(autouse=True, params=["polars", "json"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs through both readers: one Polars scan (big batches) and the json module
    (the handful of small files the driver concludes between two polls): same answers."""
    monkeypatch.setattr(metrics, "SMALL_BATCH_BYTES", 0 if request.param == "polars" else 1 << 40)
    return str(request.param)


def write(root: Path, tid: str, text: str | bytes) -> Path:
    d = root / tid
    d.mkdir(parents=True, exist_ok=True)
    p = d / "metrics.jsonl"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_last_and_best_objective(tmp_path: Path) -> None:
    files = {
        "a": write(tmp_path, "a", '{"step":0,"loss":3}\n{"step":1,"loss":1}\n{"step":2,"loss":2,"acc":0.9}\n')
    }
    last = summarize(files, "loss", "min", "last", ["acc"])["a"]
    assert (
        last.objective == 2
        and last.n_lines == 3
        and last.last_step == 2
        and last.last == {"loss": 2.0, "acc": 0.9}
    )
    assert summarize(files, "loss", "min", "best")["a"].objective == 1
    assert summarize(files, "loss", "max", "best")["a"].objective == 3


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    files = {
        "a": write(tmp_path, "a", '{"step":0,"loss":3}\n{"step":1,"loss":1}\n{"step":2,"lo'),
        "b": write(tmp_path, "b", '{"step":0,"loss":5}\n'),
    }
    s = summarize(files, "loss", "min")
    assert s["a"].objective == 1 and s["a"].n_lines == 2 and not s["a"].error
    assert s["b"].objective == 5


def test_missing_and_empty_files_mean_never_logged(tmp_path: Path) -> None:
    files = {"a": tmp_path / "nope" / "metrics.jsonl", "b": write(tmp_path, "b", "")}
    s = summarize(files, "loss", "min")
    assert s["a"].objective is None and s["b"].objective is None
    assert outcome("completed", s["a"], "loss") == ("failed", None, "metric 'loss' never logged")


def test_other_keys_never_logged_metric(tmp_path: Path) -> None:
    s = summarize({"a": write(tmp_path, "a", '{"step":0,"val_loss":1}\n')}, "loss", "min")
    assert outcome("completed", s["a"], "loss")[2] == "metric 'loss' never logged"


def test_a_bad_file_does_not_spoil_the_others(tmp_path: Path) -> None:
    files = {f"t{i}": write(tmp_path, f"t{i}", f'{{"step":0,"loss":{i}}}\n') for i in range(9)}
    files["bad"] = write(tmp_path, "bad", '{"step":0,"loss":"high"}\n{"step":1,"loss":0.5}\n')
    files["nan"] = write(tmp_path, "nan", '{"step":0,"loss":1.0}\n{"step":1,"loss":NaN}\n')
    files["junk"] = write(tmp_path, "junk", 'not json at all\n{"step":1,"loss":0.25}\n')
    s = summarize(files, "loss", "min")
    assert [s[f"t{i}"].objective for i in range(9)] == list(range(9))
    assert "loss='high' on line 1 is not a number" in s["bad"].error
    assert s["bad"].objective == 0.5  # the valid lines are kept
    assert outcome("completed", s["nan"], "loss")[0] == "failed"
    assert (
        "is nan" in outcome("completed", s["nan"], "loss")[2]
        and "diverged" in outcome("completed", s["nan"], "loss")[2]
    )
    assert "line 1 is not JSON" in s["junk"].error and s["junk"].objective == 0.25


def test_only_non_numeric_values_fail_with_the_reason(tmp_path: Path) -> None:
    s = summarize({"a": write(tmp_path, "a", '{"step":0,"loss":"n/a"}\n')}, "loss", "min")
    state, obj, reason = outcome("completed", s["a"], "loss")
    assert state == "failed" and obj is None and "unreadable" in reason and "'n/a'" in reason


def test_float_steps_and_extra_keys(tmp_path: Path) -> None:
    s = summarize(
        {"a": write(tmp_path, "a", '{"step":1.0,"loss":2,"note":"x","nested":{"a":1}}\n')}, "loss", "min"
    )
    assert s["a"].objective == 2 and s["a"].last_step == 1


@pytest.mark.parametrize("state", ["failed", "timeout", "preempted"])
def test_non_completed_states_keep_their_state(tmp_path: Path, state: str) -> None:
    s = summarize({"a": write(tmp_path, "a", '{"step":0,"loss":2}\n')}, "loss", "min")
    assert outcome(state, s["a"], "loss") == (state, 2.0, "")


def test_many_files_in_one_scan(tmp_path: Path) -> None:
    files = {
        f"{i:04d}": write(
            tmp_path, f"{i:04d}", "".join(f'{{"step":{k},"loss":{i + k}}}\n' for k in range(50))
        )
        for i in range(300)
    }
    s = summarize(files, "loss", "min", "last")
    assert len(s) == 300 and s["0123"].objective == 123 + 49 and s["0123"].n_lines == 50
