"""Planners: who decides what to run next. The registry of planner kinds, in one place.

``random`` (:mod:`hpc_agent.planners.random`), ``tpe`` (Optuna's TPE, the embedded default:
:mod:`hpc_agent.planners.tpe`) and ``llm`` (any OpenAI-compatible endpoint:
:mod:`hpc_agent.planners.llm`). ``auto`` is the LLM where an endpoint is configured, else
TPE. The seam is :class:`hpc_agent.planners.base.Planner`.

A planner module is loaded only when one of its kind is made: importing this package costs
nothing (the spec validates ``[planner] kind`` against :data:`PLANNER_KINDS`), and a TPE
campaign never loads the LLM client.

It may import the science, the store, the configuration, the edits, the LLM client and the
in-job code; never the loop, the executors or the outputs.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from hpc_agent.config.kinds import PLANNER_KINDS as PLANNER_KINDS
from hpc_agent.errors import UserError

if TYPE_CHECKING:
    from hpc_agent.config.spec import CampaignSpec
    from hpc_agent.planners.base import Planner


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
    """A planner of a registered ``kind`` for this campaign (its module is imported now)."""
    if kind not in PLANNER_KINDS:
        raise UserError(f"--planner {kind!r}: expected one of auto, {', '.join(PLANNER_KINDS)}")
    module, name = PLANNER_KINDS[kind]
    planner: Planner = getattr(importlib.import_module(module), name).for_spec(spec)
    return planner
