"""The LLM planner: an agent that reads the campaign and proposes the next batch.

One concern a module:

* :mod:`~hpc_agent.planners.llm.planner`: :class:`LLMPlanner` (ask, check, repair, fall back
  to TPE; one round trip a generation in steady state).
* :mod:`~hpc_agent.planners.llm.prompt`: what the agent sees, fitted to
  ``[planner] context_tokens`` (:func:`build_prompt`), and a repair's conversation.
* :mod:`~hpc_agent.planners.llm.schema`: what a reply must be (:func:`reply_schema`) and the
  check of each proposal (:class:`Batch`).

What it returns: ``{"analysis": markdown, "proposals": [{hypothesis, params, patch?}]}``.
Code lineage: a proposal with a patch edits the champion's files; its ``parent`` is the
champion's config id, so the trial's code is the champion's code plus the patch. A proposal
without a patch also runs on the champion's code when the champion has code changes.
"""

from __future__ import annotations

from hpc_agent.planners.llm.planner import LLMPlanner
from hpc_agent.planners.llm.prompt import (
    Prompt,
    PromptStats,
    View,
    analyze_task,
    build_prompt,
    champion_files,
    lineage_parent,
    load_brief,
    propose_task,
    repair_messages,
    system_message,
)
from hpc_agent.planners.llm.schema import Batch, reply_schema

__all__ = [
    "Batch",
    "LLMPlanner",
    "Prompt",
    "PromptStats",
    "View",
    "analyze_task",
    "build_prompt",
    "champion_files",
    "lineage_parent",
    "load_brief",
    "propose_task",
    "repair_messages",
    "reply_schema",
    "system_message",
]
