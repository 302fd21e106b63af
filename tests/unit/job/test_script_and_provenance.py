"""hpc_agent.job.script (placeholders filled into the command, metrics parsed from its output,
the evaluator's metrics taken) and hpc_agent.job.provenance (an attempt's environment)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hpc_agent.job.provenance import (
    read_trial_provenance,
    trial_environment,
    visible_gpus,
    which,
    write_trial_provenance,
)
from hpc_agent.job.script import (
    append_lines,
    fill_command,
    parse_metrics,
    pattern_problem,
    placeholders,
    record_parsed,
    set_aside,
    take_evaluation,
    unknown_placeholders,
    value_text,
)
from hpc_agent.job.trial import TrialPaths


def test_placeholders_are_filled_from_the_params_and_seed() -> None:
    cmd = ("python", "train.py", "--lr={lr}", "{args}", "--seed", "{seed}", "${HOME}")
    assert placeholders(cmd) == ["lr", "args", "seed"]
    assert unknown_placeholders(("x", "{lr}", "{nope}", "{overrides}"), ["lr"]) == ["nope"]
    params = {"lr": 0.001, "fast": True}
    assert fill_command(cmd, params, 7) == (
        "python",
        "train.py",
        "--lr=0.001",
        "--lr",
        "0.001",
        "--fast",
        "true",
        "--seed",
        "7",
        "${HOME}",
    )
    assert fill_command(("python", "{overrides}"), params, 0) == ("python", "lr=0.001", "fast=true")
    assert fill_command(("python", "train.py"), params, 0) == ("python", "train.py")
    assert value_text(False) == "false" and value_text(0.1) == "0.1" and value_text(3) == "3"


def test_metrics_are_parsed_from_output_lines() -> None:
    assert pattern_problem(r"loss: ([0-9.]+)") == ""
    assert pattern_problem(r"loss: [0-9.]+").startswith("has no group")
    assert pattern_problem(r"loss: (").startswith("does not compile")
    text = "step 1 loss: 2.5\nnoise\nloss: nan\nloss: 1.5 acc: 0.75\n"
    got = parse_metrics(text, {"loss": r"loss: (\S+)", "acc": r"acc: ([0-9.]+)"}, {"loss": 4})
    # one record a match, each metric counting its own steps (loss from 4: earlier attempts'); nan skipped
    assert got == [{"step": 4, "loss": 2.5}, {"step": 5, "loss": 1.5}, {"step": 0, "acc": 0.75}]


def test_parsed_and_evaluated_metrics_land_in_metrics_jsonl(tmp_path: Path) -> None:
    paths = TrialPaths(tmp_path)
    paths.metrics.write_text('{"step": 0, "loss": 3.0, "val_acc": 0.9}\n{"torn": ')
    paths.stdout.write_text("old loss: 9\nloss: 1.0\nloss: 0.5\n")
    assert record_parsed(paths, {"loss": r"loss: ([0-9.]+)"}, False, len("old loss: 9\n"), 0) == 2
    lines = paths.metrics.read_text().splitlines()
    assert lines[1] == '{"torn": ' and [json.loads(x)["step"] for x in lines[2:]] == [1, 2]
    assert set_aside(paths.metrics, ["val_acc"]) == {"val_acc": 1}
    assert '"ignored/val_acc": 0.9' in paths.metrics.read_text()
    paths.evaluation.write_text('{"val_acc": 0.8}\n')
    assert take_evaluation(paths, {}, 0) == 1
    last = json.loads(paths.metrics.read_text().splitlines()[-1])
    assert last == {"val_acc": 0.8, "source": "evaluate"}
    append_lines(tmp_path / "new.jsonl", "")
    assert not (tmp_path / "new.jsonl").exists()


def test_an_attempts_environment_is_recorded(tmp_path: Path) -> None:
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "", "PATH": os.environ.get("PATH", "")}
    rec = trial_environment(env, 2, "42_1", 5)
    assert (rec["attempt"], rec["job_id"], rec["seed"], rec["gpu_count"]) == (2, "42_1", 5, 0)
    assert rec["slurm"] is not None and rec["python"].startswith(f"{sys.version_info[0]}.")
    write_trial_provenance(tmp_path, env, 1, "a", 0)
    write_trial_provenance(tmp_path, env, 2, "b", 0)
    write_trial_provenance(tmp_path, env, 2, "c", 0)  # the same attempt again: replaced
    assert [(a["attempt"], a["job_id"]) for a in read_trial_provenance(tmp_path)] == [(1, "a"), (2, "c")]
    assert read_trial_provenance(tmp_path / "none") == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == ([], "")
    assert which("sh", os.environ.get("PATH")) is not None and which("no-such-program-x", "/usr/bin") is None
