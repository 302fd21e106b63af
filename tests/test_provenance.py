"""Provenance captured at run time: the experiment folder's git state per driver run, each
trial attempt's environment, and ``hpc-agent show`` reading them back for one trial."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpc_agent.job.provenance import torch_versions, trial_environment, visible_gpus
from hpc_agent.science.provenance import code_provenance

FAKE_SMI = """#!/bin/sh
echo called >> "{marker}"
echo "0, GPU-aaaa, NVIDIA H200, 550.54"
echo "1, GPU-bbbb, NVIDIA A100-SXM4-80GB, 550.54"
"""


@pytest.fixture
def fake_smi(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose nvidia-smi lists two GPUs and records each call."""
    folder = tmp_path / "smi"
    folder.mkdir()
    marker = tmp_path / "smi-calls"
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(marker=marker))
    smi.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}", marker


def test_gpus_named_only_when_visible(fake_smi: tuple[str, Path]) -> None:
    path, marker = fake_smi
    gpus, note = visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "1"})
    assert [g["name"] for g in gpus or []] == ["NVIDIA A100-SXM4-80GB"] and note == ""
    gpus, _ = visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"})
    assert [g["index"] for g in gpus or []] == ["0", "1"]
    gpus, _ = visible_gpus({"PATH": path})  # no variable: every GPU is visible
    assert len(gpus or []) == 2
    calls = marker.read_text().count("called")
    assert visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": ""}) == ([], "")
    assert marker.read_text().count("called") == calls  # hidden GPUs: nvidia-smi is not asked
    gpus, note = visible_gpus({"PATH": path, "CUDA_VISIBLE_DEVICES": "MIG-1234"})
    assert gpus is None and "does not match" in note
    assert visible_gpus({"PATH": "/nonexistent"}) == ([], "")
    assert visible_gpus({"PATH": "/nonexistent", "CUDA_VISIBLE_DEVICES": "0"}) == (
        None,
        "nvidia-smi not found",
    )


def test_attempt_record(fake_smi: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = fake_smi
    env = {
        "PATH": path,
        "CUDA_VISIBLE_DEVICES": "0",
        "SLURM_JOB_ID": "4242",
        "SLURM_ARRAY_JOB_ID": "4240",
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_JOB_PARTITION": "gpu",
    }
    r = trial_environment(env, attempt=3, job_id="4240_2", seed=7)
    assert r["attempt"] == 3 and r["seed"] == 7 and r["job_id"] == "4240_2"
    assert r["slurm"] == {"job_id": "4242", "array_job_id": "4240", "array_task_id": "2", "partition": "gpu"}
    assert (
        r["gpu_count"] == 1 and r["gpus"][0]["name"] == "NVIDIA H200" and r["gpus"][0]["driver"] == "550.54"
    )
    assert r["python"] == ".".join(map(str, sys.version_info[:3])) and r["cpus"] >= 1


def test_torch_version_is_read_without_importing_torch() -> None:
    pytest.importorskip("torch")
    code = (
        "import sys, importlib.metadata as m; from hpc_agent.job.provenance import torch_versions; "
        "v, cuda = torch_versions(); print(v == m.version('torch'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    assert torch_versions()[0]


def git(where: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_code_provenance_of_a_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "exp").mkdir(parents=True)
    (repo / "exp" / "train.py").write_text("lr = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    sha = git(repo, "rev-parse", "HEAD").strip()
    results = repo / "results" / "camp"
    results.mkdir(parents=True)
    (results / "journal.jsonl").write_text("{}\n")  # untracked, but it is the results: not dirt
    record, diff = code_provenance(repo / "exp", exclude=[results])
    assert record["git"] == "ok" and record["commit"] == sha and record["dirty"] is False and diff == ""
    (repo / "exp" / "train.py").write_text("lr = 2\n")
    (repo / "exp" / "notes.txt").write_text("new\n")
    record, diff = code_provenance(repo / "exp", exclude=[results])
    assert record["dirty"] is True
    assert sorted(record["changed"]) == [" M exp/train.py", "?? exp/notes.txt"]
    assert "-lr = 1" in diff and "+lr = 2" in diff


def test_code_provenance_without_git_or_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("git"):
        record, diff = code_provenance(tmp_path)
        assert record["git"] == "not a repository" and "commit" not in record and diff == ""
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    record, diff = code_provenance(tmp_path)
    assert record == {"workdir": str(tmp_path), "git": "not installed"} and diff == ""


# ------------------------------------------------------------------------------- end to end


@needs_git
def test_run_records_provenance_and_show_prints_it(
    cli_run: Callable[..., Any], make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    camp = make_campaign(batch_size=2, generations=2)
    git(camp, "init", "-q")
    git(camp, "add", ".")
    git(camp, "commit", "-qm", "experiment")
    sha = git(camp, "rev-parse", "HEAD").strip()
    branch = git(camp, "rev-parse", "--abbrev-ref", "HEAD").strip()
    (camp / "train.py").write_text((camp / "train.py").read_text() + "# tweak\n")  # dirty
    cli_run("run", str(camp), "--executor", "local", "-q")
    results = tmp_path / "results" / "tiny"
    run = json.loads((results / "provenance" / "run-0001.json").read_text())
    assert run["commit"] == sha and run["dirty"] is True and run["changed"] == [" M train.py"]
    assert "+# tweak" in (results / run["diff_file"]).read_text()
    trial = results / "gen-0001" / "trials" / "0001-0000"
    (attempt,) = json.loads((trial / "provenance.json").read_text())["attempts"]
    params = json.loads((trial / "params.json").read_text())
    assert attempt["attempt"] == 1 and attempt["seed"] == params["seed"] == 0
    assert attempt["gpu_count"] == 0 and attempt["python"] == ".".join(map(str, sys.version_info[:3]))

    out = cli_run("show", "results/tiny", "1-0").output
    assert out.startswith("trial 0001-0000 · generation 1 · completed · loss ")
    x = params["x"]
    for fragment in (
        f"x={x:.6g}",
        "proposed by   tpe",
        "hypothesis    TPE",
        "state         completed; 1 attempt(s)",
        f"git {sha[:12]} ({branch}), dirty, 1 file(s) changed",
        "diff: provenance/run-0001.diff (driver run 1)",
        "metrics (3 line(s)",
        "  loss  ",
        "min ",
        "results/tiny/gen-0001/trials/0001-0000/stdout.log",
    ):
        assert fragment in out, fragment
    assert "Python " in out and "no GPU; " in out
    assert all(
        len(line) <= 80
        for line in out.splitlines()
        if not line.startswith(("results", "/", "  stdout", "  stderr"))
    )
    best = cli_run("show", "results/tiny", "best").output
    assert "(the best trial)" in best.splitlines()[0]


def test_show_names_a_bad_trial(cli_run: Callable[..., Any], make_campaign: Callable[..., Path]) -> None:
    camp = make_campaign(batch_size=1)
    cli_run("run", str(camp), "--executor", "local", "-q")
    out = cli_run("show", "results/tiny", "0009-0001", code=2).output
    assert "trial '0009-0001': no such trial in this campaign (1 trials: 0000-0000)" in out
    assert "fix:" in out and "Traceback" not in out
