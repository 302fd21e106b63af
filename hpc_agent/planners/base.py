"""The planner seam: who decides what to run next.

A planner is asked twice per generation, always in this order:

1. ``propose(ctx)`` -> :class:`Plan`: ``ctx.n`` proposals for generation ``ctx.generation``,
   each a configuration inside the search space (validated by the campaign with
   :meth:`Space.validate` whatever the planner), with a hypothesis, and optionally a code
   change (``patch``) against the champion's editable files. Proposals must not repeat a
   configuration of the history, nor each other; a planner that cannot fill the batch
   (a small discrete space) returns fewer and says why in ``Plan.note``.
2. ``analyze(ctx)`` -> markdown: what the finished generation taught. It is written to
   ``gen-XXXX/analysis.md`` and shown to the next ``propose``; if it raises, the campaign
   writes the deterministic analysis instead (and says who wrote it in the journal).

Invariants: a planner's input is rebuilt from the results folder each generation (the
journal, the trials' files, the analyses), so a restarted driver plans as the one that died
would have. A planner may keep a memory of its own *in the results folder* (the LLM planner
reads its exchange log ``llm.jsonl`` to reuse the proposals an analysis already made), never
only in the process. Given the same history and ``ctx.seed``, ``random`` and ``tpe`` return
the same plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_agent.config.space import Scalar, Space, config_key
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.science.analysis import AnalysisContext, deterministic_analysis
from hpc_agent.science.rigor import Noise
from hpc_agent.store.state import ConfigResult

# the note of a planner without a search space to sample (a code-first campaign): it cannot
# write code, and the campaign replicates the champion instead (hpc_agent.loop.propose.champion_controls)
CANNOT_WRITE_CODE = "the {} planner cannot write code and this campaign has no search space"

__all__ = ["AnalysisContext", "Plan", "PlanContext", "Planner", "Proposal", "config_key", "unique"]


@dataclass(frozen=True)
class Proposal:
    """One experiment a planner proposes: a configuration, why (``hypothesis``), and optionally a
    code change (``patch``, edits of the ``parent``'s editable files); ``source`` says who
    proposed it."""

    params: Mapping[str, Scalar]
    hypothesis: str = ""
    patch: tuple[Mapping[str, Any], ...] | None = None  # search/replace edits (hpc_agent.edits.patches)
    parent: str | None = None  # config id whose code the patch edits (the champion)
    source: str = ""  # baseline, random, tpe, llm, tpe-fill, ...

    def key(self) -> str:
        """Its identity (see :func:`hpc_agent.config.space.config_key`): equal keys are duplicates."""
        return config_key(self.params, self.patch, self.parent)


@dataclass(frozen=True)
class Plan:
    """What ``propose`` returns: the proposals, a note on what happened while planning (fallbacks,
    repairs, a batch cut short) and the planner's own reasoning (plan.json)."""

    proposals: tuple[Proposal, ...]
    note: str = ""  # what happened while planning (fallbacks, repairs, a batch cut short)
    rationale: str = ""  # the planner's own reasoning for this batch (plan.json)


@dataclass(frozen=True)
class PlanContext:
    """What ``propose`` is given: the campaign, the generation, how many proposals, every
    configuration so far (finished or in flight), the champion, the analyses, generations
    left, the seed, and the keys already taken by this batch (the baseline)."""

    spec: CampaignSpec
    generation: int
    n: int
    history: tuple[ConfigResult, ...]  # every configuration so far, finished or in flight
    champion: ConfigResult | None
    analyses: tuple[tuple[int, str], ...] = ()  # (generation, analysis.md) so far, oldest first
    generations_left: int = 1  # including this one
    results_dir: Path | None = None
    seed: int = 0
    extra_seen: frozenset[str] = field(default_factory=frozenset)  # keys proposed earlier this batch
    noise: Noise | None = None  # the noise floor the promotion rule holds challengers to
    budget: str = ""  # the budget used and left, and the stop rules, in words (hpc_agent.science.budget)

    @property
    def space(self) -> Space:
        """The campaign's search space."""
        return self.spec.space

    def seen_keys(self) -> set[str]:
        """Every experiment of the history (and of this batch so far), as config keys."""
        return {config_key(c.params, c.patch, c.parent) for c in self.history} | set(self.extra_seen)


class Planner(ABC):
    """Proposes the next batch and analyzes the last one. See the module docstring."""

    name: str = ""
    # set by ``analyze`` when the text it returned is the deterministic analysis, not its own
    # (an LLM that could not be reached): why. The campaign journals it with the analysis.
    analysis_fallback: str = ""
    # each call costs seconds and tokens (an LLM): the async schedule then refills half the slots
    # at a time (``[campaign] refill_at``'s default) rather than each slot as it frees
    costly: bool = False

    @classmethod
    def for_spec(cls, spec: CampaignSpec) -> Planner:
        """The planner of this kind for a campaign (the registry's constructor)."""
        return cls()

    @abstractmethod
    def propose(self, ctx: PlanContext) -> Plan:
        """Up to ``ctx.n`` new proposals for ``ctx.generation`` (fewer only when the space
        runs out, with ``Plan.note`` saying so)."""

    def analyze(self, ctx: AnalysisContext) -> str:
        """The markdown analysis of ``ctx.generation`` (default: the deterministic one)."""
        return deterministic_analysis(ctx)

    def describe(self) -> str:
        """Who plans, for the user and the journal (e.g. ``llm (model at url)``)."""
        return self.name


def unique(proposals: Iterable[Proposal], seen: set[str]) -> tuple[list[Proposal], list[Proposal]]:
    """Split proposals into (new, duplicates), updating ``seen`` with the new ones."""
    kept, dropped = [], []
    for p in proposals:
        k = p.key()
        if k in seen:
            dropped.append(p)
        else:
            seen.add(k)
            kept.append(p)
    return kept, dropped


def fill_random(
    space: Space, n: int, seen: set[str], rng: Any, source: str, tries: int = 2000
) -> list[Proposal]:
    """Up to ``n`` random configurations not in ``seen`` (fewer when the space runs out)."""
    out: list[Proposal] = []
    for _ in range(tries):
        if len(out) >= n:
            break
        params = space.sample(rng)
        k = Space.key(params)
        if k in seen:
            continue
        seen.add(k)
        out.append(Proposal(params, hypothesis="random exploration of the space", source=source))
    return out


def fits(space: Space, params: Mapping[str, Any]) -> bool:
    """Is this configuration inside the space?"""
    return not space.validate(params)[1]
