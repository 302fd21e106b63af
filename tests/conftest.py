"""Shared fixtures: a tiny campaign factory and the CLI runner.

Every test is isolated in its own ``tmp_path``; nothing is written outside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpc_agent.cli import cli

# A tiny experiment: no torch, runs in well under a second. It logs `loss`, a smooth function
# of the parameters, and honours a few switches in its params for failure tests.
TINY_TRAIN = textwrap.dedent(
    """
    import json, os, sys, time
    p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
    x, y = float(p.get("x", 0.0)), p.get("mode", "a")
    loss = (x - 0.3) ** 2 + (0.0 if y == "a" else 0.1)
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        for step in range(3):
            f.write(json.dumps({"step": step, "loss": loss + 0.1 * (2 - step), "acc": 1 - loss}) + "\\n")
    print("done", loss)
    """
)

TINY_SPACE = """
[space]
x = { type = "float", low = -1.0, high = 1.0 }
mode = { type = "choice", values = ["a", "b"] }
"""


def write_campaign(
    root: Path,
    *,
    name: str = "tiny",
    script: str = TINY_TRAIN,
    space: str = TINY_SPACE,
    campaign: str = "",
    experiment: str = "",
    extra: str = "",
    generations: int = 1,
    batch_size: int = 2,
    metric: str = "loss",
    command: str = "python train.py",
    time_budget_s: float = 30,
    editable: str = '["train.py"]',
) -> Path:
    """Write a campaign folder (campaign.toml + train.py) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(script)
    (root / "campaign.toml").write_text(
        textwrap.dedent(
            f"""
            [campaign]
            name = "{name}"
            metric = "{metric}"
            mode = "min"
            generations = {generations}
            batch_size = {batch_size}
            {campaign}

            [experiment]
            command = "{command}"
            editable = {editable}
            time_budget_s = {time_budget_s}
            kill_grace_s = 2
            {experiment}
            """
        )
        + space
        + extra
    )
    return root


@pytest.fixture
def make_campaign(tmp_path: Path) -> Callable[..., Path]:
    def make(**kw: Any) -> Path:
        return write_campaign(tmp_path / kw.pop("folder", "camp"), **kw)

    return make


@pytest.fixture
def cli_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Invoke the real Click CLI in-process, with the cwd in tmp_path and no LLM configured."""
    monkeypatch.chdir(tmp_path)
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HPC_AGENT_MODEL"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, code: int | None = 0) -> Any:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
        return result

    return run


def slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


@pytest.fixture
def slurm() -> None:
    """Needs the local SLURM cluster (scripts/local-slurm.sh start). In CI
    (HPC_AGENT_REQUIRE_SLURM=1) a missing cluster is a failure, never a skip."""
    if slurm_up():
        return
    if os.environ.get("HPC_AGENT_REQUIRE_SLURM") == "1":
        pytest.fail("SLURM is required (HPC_AGENT_REQUIRE_SLURM=1) but sinfo shows no usable node")
    pytest.skip("no local SLURM cluster: run `sudo bash scripts/local-slurm.sh start`")


PYTHON = sys.executable
