"""The LLM planner: asks, checks, repairs, and falls back; one round trip a generation.

Every proposal is checked as the campaign would check it (:class:`Batch`); the invalid ones
are asked again with the exact errors, at most ``[planner] max_repairs`` times; what stays
invalid is dropped with its reason in the log, and the batch is completed by TPE
(``source="tpe-fill"``). An endpoint that stays down costs one generation of LLM planning,
never the night: TPE plans it and ``Plan.note`` says why.

Round trips: one per generation in steady state. ``analyze(g)`` asks for the analysis of
``g`` *and* the proposals for ``g + 1`` in one request; ``propose(g + 1)`` reuses them when
the history is still the one they were made for (its fingerprint is in the log record, so a
restarted driver reuses them too: the planner's memory is ``llm.jsonl``, never the process).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpc_agent.analysis import deterministic_analysis
from hpc_agent.llm import LLMClient, LLMUnavailable, Reply, parse_json_reply, read_log, resolve_config
from hpc_agent.paths import ResultsPaths
from hpc_agent.planners.base import AnalysisContext, Plan, PlanContext, Planner, Proposal
from hpc_agent.planners.llm.prompt import (
    Prompt,
    PromptStats,
    View,
    analyze_task,
    build_prompt,
    lineage_parent,
    load_brief,
    propose_task,
    repair_messages,
    short,
)
from hpc_agent.planners.llm.schema import Batch, proposals_of, reply_schema
from hpc_agent.spec import CampaignSpec

_DETERMINISTIC = "this is hpc-agent's deterministic analysis."


@dataclass
class _Progress:
    """Where a generation's conversation stands."""

    messages: list[dict[str, str]]
    reply_text: str = ""
    errors: list[str] | None = None
    rationale: str = ""
    trips: int = 0


class LLMPlanner(Planner):
    """Plans with any OpenAI-compatible endpoint; see the module docstring.

    ``propose`` never raises for the endpoint's sake (it falls back to TPE, and says so in
    ``Plan.note``); ``analyze`` falls back to the deterministic analysis the same way."""

    name = "llm"

    def __init__(self, spec: CampaignSpec, client: LLMClient | None = None) -> None:
        self.spec = spec
        self.client = client or LLMClient(resolve_config(spec.planner))
        self.brief = load_brief(spec.planner.brief)
        self._made: dict[str, Any] | None = None  # proposals made with the last analysis
        self.last_prompt: PromptStats | None = None  # of the last request (for the bench)

    def describe(self) -> str:
        """``llm (<model> at <base URL>)``."""
        cfg = self.client.config
        return f"llm ({cfg.model or 'model not chosen yet'} at {cfg.display_url})"

    def preflight(self) -> None:
        """Before anything is submitted: the endpoint answers, takes the key, serves the model.
        Raises UserError (exit 2) otherwise."""
        self.client.preflight()

    # ------------------------------------------------------------------ propose
    def propose(self, ctx: PlanContext) -> Plan:
        """``ctx.n`` proposals: the model's valid ones, completed by TPE; see the module docstring."""
        self._attach(ctx.results_dir)
        view = View(
            spec=self.spec,
            generation=ctx.generation,
            n=ctx.n,
            history=ctx.history,
            champion=ctx.champion,
            analyses=ctx.analyses,
            generations_left=ctx.generations_left,
            results_dir=ctx.results_dir,
            extra_seen=ctx.extra_seen,
        )
        batch = Batch(view)
        notes: list[str] = []
        progress = _Progress(messages=[])
        try:
            self._first_round(view, batch, progress, notes)
            self._repair_rounds(view, batch, progress)
        except LLMUnavailable as e:
            if not batch.accepted:
                proposals, tpe_note = self._tpe(ctx, ctx.n, set(), "tpe")
                note = f"LLM unavailable ({short(e.message, 200)}): TPE planned this generation"
                return Plan(tuple(proposals), "; ".join(x for x in (note, tpe_note) if x), progress.rationale)
            batch.give_up()
            notes.append(f"LLM unavailable during repairs ({short(e.message, 160)})")
        return self._finish(ctx, batch, progress, notes)

    def _first_round(self, view: View, batch: Batch, progress: _Progress, notes: list[str]) -> None:
        """The proposals the last analysis made for this history, else one request."""
        made = self._made_for(view)
        if made is not None:
            progress.messages, progress.reply_text = made["messages"], made["reply"]
            progress.rationale = _analysis_text(made["data"])
            progress.errors = batch.take(made["data"])
            self.client.note(
                "propose",
                view.generation,
                reused=f"proposals made with the analysis of generation {view.generation - 1}",
                **batch.record(),
            )
            notes.append(f"proposals written with the analysis of generation {view.generation - 1}")
            return
        prompt = build_prompt(view, self.brief, propose_task(view))
        self.last_prompt = prompt.stats
        progress.messages = prompt.messages
        reply = self._ask(prompt.messages, view, "propose", 0, batch, prompt.stats)
        progress.trips += 1
        progress.reply_text, progress.errors = reply.text, batch.last_errors
        progress.rationale = _analysis_text(reply.data)

    def _repair_rounds(self, view: View, batch: Batch, progress: _Progress) -> None:
        """Ask again with the exact errors, at most ``max_repairs`` times; then give up."""
        for k in range(1, self.spec.planner.max_repairs + 1):
            if not progress.errors:
                break
            progress.messages = repair_messages(
                progress.messages,
                progress.reply_text,
                progress.errors,
                self.spec.planner.context_tokens,
                accepted=batch.accepted,
                wanted=view.n,
            )
            reply = self._ask(progress.messages, view, "repair", k, batch, None)
            progress.trips += 1
            progress.reply_text, progress.errors = reply.text, batch.last_errors
            progress.rationale = progress.rationale or _analysis_text(reply.data)
        if progress.errors:
            batch.give_up()

    def _finish(self, ctx: PlanContext, batch: Batch, progress: _Progress, notes: list[str]) -> Plan:
        """The accepted proposals, completed by TPE, with a note of what happened."""
        proposals = list(batch.accepted)
        if batch.dropped:
            notes.append(f"dropped {batch.dropped} invalid LLM proposal(s) (see `hpc-agent logs`)")
        missing = ctx.n - len(proposals)
        if missing > 0:
            fill, tpe_note = self._tpe(ctx, missing, batch.keys(), "tpe-fill")
            proposals += fill
            if fill:
                notes.append(f"{len(fill)} proposal(s) filled by TPE")
            if tpe_note:
                notes.append(tpe_note)
        notes.insert(0, f"llm: {len(batch.accepted)} proposal(s), {progress.trips} round trip(s)")
        return Plan(tuple(proposals), "; ".join(notes), progress.rationale)

    def _ask(
        self,
        messages: list[dict[str, str]],
        view: View,
        purpose: str,
        round_: int,
        batch: Batch,
        stats: PromptStats | None,
    ) -> Reply:
        def check(reply: Reply) -> Mapping[str, Any]:
            if reply.data is None:
                batch.unreadable(_unreadable(reply))
            else:
                batch.take(reply.data)
            return batch.record()

        extra: dict[str, Any] = {"round": round_}
        if stats is not None:
            extra["prompt"] = stats.to_dict()
        return self.client.complete(
            messages,
            schema=reply_schema(self.spec, with_proposals=True),
            purpose=purpose,
            generation=view.generation,
            check=check,
            extra=extra,
        )

    def _tpe(self, ctx: PlanContext, n: int, taken: set[str], source: str) -> tuple[list[Proposal], str]:
        # optuna is imported only when TPE is needed: it takes about a second
        from hpc_agent.planners.optuna import TPEPlanner

        sub = replace(ctx, n=n, extra_seen=frozenset(set(ctx.extra_seen) | taken))
        plan = TPEPlanner(self.spec.planner.tpe_startup_trials).propose(sub)
        parent = lineage_parent(ctx.champion)
        return [Proposal(p.params, p.hypothesis, None, parent, source) for p in plan.proposals], plan.note

    # ------------------------------------------------------------------ analyze
    def analyze(self, ctx: AnalysisContext) -> str:
        """The model's analysis of generation ``ctx.generation`` (with the proposals for the
        next one, kept for :meth:`propose`); the deterministic analysis when it fails."""
        self._attach(ctx.results_dir)
        g = ctx.generation
        plans_next = g + 1 < self.spec.campaign.generations
        view = self._analysis_view(ctx, plans_next)
        prompt = build_prompt(view, self.brief, analyze_task(view))
        self.last_prompt = prompt.stats
        try:
            reply, sent = self._ask_analysis(view, prompt, plans_next)
        except LLMUnavailable as e:
            note = f"*The LLM could not be reached ({short(e.message, 200)}); {_DETERMINISTIC}*"
            return deterministic_analysis(ctx).rstrip() + "\n\n" + note + "\n"
        text = _analysis_text(reply.data)
        if plans_next and isinstance(reply.data, Mapping):
            self._made = {
                "plan_for": g + 1,
                "fingerprint": view.fingerprint(),
                "messages": sent,
                "reply": reply.text,
                "data": reply.data,
            }
        if not text:
            note = f"*The LLM's analysis could not be read (see `hpc-agent logs`); {_DETERMINISTIC}*"
            return deterministic_analysis(ctx).rstrip() + "\n\n" + note + "\n"
        if not text.startswith("# "):  # a title of its own, or ours
            text = f"# Generation {g}: analysis\n\n{text}"
        return text.rstrip() + "\n"  # the journal's "analyzed" event names the author

    def _analysis_view(self, ctx: AnalysisContext, plans_next: bool) -> View:
        g = ctx.generation
        return View(
            spec=self.spec,
            generation=g + 1,
            n=self.spec.campaign.batch_size if plans_next else 0,
            history=tuple(ctx.state.configs()),
            champion=ctx.state.champion(self.spec.campaign.mode),
            analyses=ctx.analyses,
            generations_left=max(0, self.spec.campaign.generations - (g + 1)),
            results_dir=ctx.results_dir,
            analyzing=g,
        )

    def _ask_analysis(
        self, view: View, prompt: Prompt, plans_next: bool
    ) -> tuple[Reply, list[dict[str, str]]]:
        """Ask (and repair) until the reply has an analysis: (the last reply, the messages sent)."""
        g = view.analyzing
        messages = prompt.messages
        fingerprint = view.fingerprint() if plans_next else None
        schema = reply_schema(self.spec, with_proposals=plans_next)
        for k in range(self.spec.planner.max_repairs + 1):
            extra: dict[str, Any] = {"round": k, "prompt": prompt.stats.to_dict() if k == 0 else None}
            if plans_next:
                extra.update(plan_for=view.generation, fingerprint=fingerprint)
            reply = self.client.complete(
                messages,
                schema=schema,
                purpose="analyze" if k == 0 else "repair",
                generation=g,
                check=_analysis_check,
                extra=extra,
            )
            if _analysis_text(reply.data) or k == self.spec.planner.max_repairs:
                return reply, messages
            error = _unreadable(reply) if reply.data is None else 'the reply has no "analysis" text'
            messages = repair_messages(messages, reply.text, [error], self.spec.planner.context_tokens)
        raise AssertionError("unreachable: the loop returns on its last round")

    # ------------------------------------------------------------------ plumbing
    def _attach(self, results_dir: Path | None) -> None:
        if results_dir is not None:
            self.client.set_log(ResultsPaths(results_dir).llm_log)

    def _made_for(self, view: View) -> dict[str, Any] | None:
        """Proposals the last analysis made for this very history, from memory or the log."""
        fp = view.fingerprint()
        made = self._made
        if made is None and self.client.log.path is not None:
            made = _made_from_log(self.client.log.path, view.generation)
        self._made = None
        if not made or made["plan_for"] != view.generation or made["fingerprint"] != fp:
            return None
        if (
            not isinstance(made["data"], Mapping)
            or proposals_of(made["data"]) is None
            or not made["messages"]
        ):
            return None
        return made


def _made_from_log(path: Path, generation: int) -> dict[str, Any] | None:
    """The last analysis record of ``llm.jsonl`` that made proposals for ``generation``."""
    made = None
    for rec in read_log(path):
        if (
            rec.get("purpose") in ("analyze", "repair")
            and rec.get("plan_for") == generation
            and not rec.get("error")
            and rec.get("proposals_made")
        ):
            data, _ = parse_json_reply(str(rec.get("reply") or ""))
            made = {
                "plan_for": rec["plan_for"],
                "fingerprint": rec.get("fingerprint"),
                "messages": rec.get("messages") or [],
                "reply": rec.get("reply") or "",
                "data": data,
            }
    return made


def _analysis_check(reply: Reply) -> Mapping[str, Any]:
    data = reply.data
    made = proposals_of(data) if isinstance(data, Mapping) else None
    # the proposals are checked when generation g + 1 is proposed (and logged then)
    out: dict[str, Any] = {"proposals_made": len(made) if made is not None else None}
    if data is None:
        out["validation_errors"] = [_unreadable(reply)]
    elif not _analysis_text(data):
        out["validation_errors"] = ['the reply has no "analysis" text']
    return out


def _analysis_text(data: Any) -> str:
    if isinstance(data, Mapping):
        a = data.get("analysis")
        if isinstance(a, str):
            return a.strip()
    return ""


def _unreadable(reply: Reply) -> str:
    if reply.finish_reason == "length":
        return (
            "your reply was cut off at the length limit before the JSON was complete; "
            'keep "analysis" and the hypotheses shorter'
        )
    if not reply.text.strip():
        why = f" (finish_reason: {reply.finish_reason})" if reply.finish_reason not in ("", "stop") else ""
        return f"your reply was empty{why}"
    return reply.parse_error or "your reply could not be read as JSON"
