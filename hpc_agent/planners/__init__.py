"""Planners: ``random``, ``tpe`` (Optuna) and ``llm``, behind one small base class."""

from __future__ import annotations

import os

from hpc_agent.errors import UserError
from hpc_agent.planners.base import AnalysisContext, Plan, PlanContext, Planner, Proposal
from hpc_agent.spec import CampaignSpec

__all__ = [
    "AnalysisContext",
    "Plan",
    "PlanContext",
    "Planner",
    "Proposal",
    "llm_configured",
    "make_planner",
    "resolve_planner_kind",
]


def llm_configured(spec: CampaignSpec) -> bool:
    """An endpoint is configured in the spec's [planner] or in the environment."""
    p = spec.planner
    return bool(p.base_url or p.model or os.environ.get("OPENAI_BASE_URL") or os.environ.get(p.api_key_env))


def resolve_planner_kind(spec: CampaignSpec) -> tuple[str, str]:
    """(kind, why): ``auto`` is the LLM where one is configured, else TPE."""
    kind = spec.planner.kind
    if kind != "auto":
        return kind, f"--planner {kind}"
    if llm_configured(spec):
        return "llm", "an LLM endpoint is configured (OPENAI_BASE_URL / OPENAI_API_KEY / [planner])"
    return "tpe", "no LLM endpoint configured (set OPENAI_BASE_URL or [planner] base_url to use one)"


def make_planner(kind: str, spec: CampaignSpec) -> Planner:
    if kind == "random":
        from hpc_agent.planners.random import RandomPlanner

        return RandomPlanner()
    if kind == "tpe":
        from hpc_agent.planners.tpe import TPEPlanner

        return TPEPlanner(spec.planner.tpe_startup_trials, spec.planner.tpe_strategy)
    if kind == "llm":
        from hpc_agent.planners.llm import LLMPlanner

        planner: Planner = LLMPlanner(spec)
        return planner
    raise UserError(f"--planner {kind!r}: expected one of auto, llm, tpe, random")
