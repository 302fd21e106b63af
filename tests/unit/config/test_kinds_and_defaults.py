"""hpc_agent.config.kinds and hpc_agent.config.defaults: each registered kind names a module
and class that exist; a campaign.toml that leaves a key out gets the default from defaults.py."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from conftest import write_campaign

from hpc_agent.config import defaults
from hpc_agent.config.kinds import EXECUTOR_KINDS, PLANNER_KINDS
from hpc_agent.config.spec import load_spec


@pytest.mark.parametrize(("kind", "where"), [*PLANNER_KINDS.items(), *EXECUTOR_KINDS.items()])
def test_every_kind_names_a_class_that_exists(kind: str, where: tuple[str, str]) -> None:
    module, cls = where
    assert isinstance(getattr(importlib.import_module(module), cls), type), kind


def test_the_kinds() -> None:
    assert set(PLANNER_KINDS) == {"llm", "tpe", "random"} and set(EXECUTOR_KINDS) == {"local", "slurm"}


def test_a_spec_that_leaves_keys_out_gets_the_defaults(tmp_path: Path) -> None:
    camp = tmp_path / "c"
    camp.mkdir()
    (camp / "train.py").write_text("")
    (camp / "campaign.toml").write_text(
        '[campaign]\nname = "c"\nmetric = "loss"\n[experiment]\ncommand = "python train.py"\n'
        '[space]\nx = { type = "float", low = 0.0, high = 1.0 }\n'
    )
    spec = load_spec(camp)
    assert spec.campaign.generations == defaults.DEFAULT_GENERATIONS
    assert spec.campaign.batch_size == defaults.DEFAULT_BATCH_SIZE
    assert spec.campaign.schedule == defaults.DEFAULT_SCHEDULE
    assert spec.experiment.time_budget_s == defaults.DEFAULT_TIME_BUDGET_S
    assert spec.experiment.kill_grace_s == defaults.DEFAULT_KILL_GRACE_S
    assert spec.experiment.max_retries == defaults.DEFAULT_MAX_RETRIES
    assert spec.planner.temperature == defaults.DEFAULT_LLM_TEMPERATURE
    assert spec.planner.context_tokens == defaults.DEFAULT_LLM_CONTEXT_TOKENS
    assert spec.rigor.k == defaults.DEFAULT_RIGOR_K
    assert write_campaign(tmp_path / "w").joinpath("campaign.toml").exists()
