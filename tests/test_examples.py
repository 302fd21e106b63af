"""The examples train for real (torch on the CPU), outside and inside a campaign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, tmp_path: Path, params: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = dict(
        os.environ,
        HPC_AGENT_PARAMS=str(tmp_path / "params.json"),
        HPC_AGENT_METRICS=str(tmp_path / "metrics.jsonl"),
        HPC_AGENT_CHECKPOINT_DIR=str(tmp_path / "checkpoint"),
        OMP_NUM_THREADS="1",
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "train.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_charlm_learns_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    # evaluations every 10 steps: enough of them even on a loaded 2-core machine
    out = run_example("charlm", tmp_path, {"train_seconds": 6.0, "eval_every": 10, "lr": 3e-3})
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 3 and rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns
    assert (tmp_path / "checkpoint" / "last.pt").exists()
    # a requeued trial resumes: the budget is spent, so it only evaluates where it stopped
    again = run_example("charlm", tmp_path, {"train_seconds": 6.0, "eval_every": 10, "lr": 3e-3})
    assert again.returncode == 0, again.stderr
    assert "resumed at step" in again.stdout
    last = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] >= rows[-1]["step"] - 10


def test_charlm_campaign_spec_is_valid() -> None:
    from hpc_agent.spec import load_spec

    spec = load_spec(ROOT / "examples" / "charlm")
    assert spec.campaign.goal.startswith("Teach a tiny character-level GPT")
    assert spec.space.defaults() is not None  # generation 0 starts from the baseline
    for n_embd in spec.space["n_embd"].values:  # type: ignore[union-attr]
        for n_head in spec.space["n_head"].values:  # type: ignore[union-attr]
            assert int(n_embd) % int(n_head) == 0  # every configuration of the space is buildable
