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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.errors import UserError
from hpc_agent.llm import (
    ContextExceeded,
    LLMClient,
    LLMUnavailable,
    Reply,
    parse_json_reply,
    read_log,
    resolve_config,
)
from hpc_agent.planners.base import AnalysisContext, Plan, PlanContext, Planner, Proposal
from hpc_agent.planners.llm.prompt import (
    Prompt,
    PromptStats,
    View,
    analyze_task,
    build_prompt,
    is_placeholder,
    lineage_parent,
    load_brief,
    propose_task,
    repair_messages,
    short,
)
from hpc_agent.planners.llm.schema import Batch, proposals_of, reply_schema, reply_tokens
from hpc_agent.science.analysis import deterministic_analysis
from hpc_agent.store.paths import ResultsPaths

_DETERMINISTIC = "this is hpc-agent's deterministic analysis."
CONTEXT_SAFETY = 0.95  # of the server's context left after the reply's room: margin for the estimate


@dataclass
class _Progress:
    """Where a generation's conversation stands."""

    messages: list[dict[str, str]]
    budget: int = 0  # the prompt budget the conversation was fitted to
    reply_text: str = ""
    errors: list[str] | None = None
    rationale: str = ""
    trips: int = 0


class LLMPlanner(Planner):
    """Plans with any OpenAI-compatible endpoint; see the module docstring.

    ``propose`` never raises for the endpoint's sake (it falls back to TPE, and says so in
    ``Plan.note``); ``analyze`` falls back to the deterministic analysis the same way."""

    name, costly = "llm", True  # costly: a round trip a plan (async refills half the slots at once)

    @classmethod
    def for_spec(cls, spec: CampaignSpec) -> LLMPlanner:
        """The LLM planner of a campaign (its endpoint from [planner] and the environment)."""
        return cls(spec)

    def __init__(self, spec: CampaignSpec, client: LLMClient | None = None) -> None:
        self.spec = spec
        self.client = client or LLMClient(resolve_config(spec.planner))
        self.brief = load_brief(spec.planner.brief)
        self._made: dict[str, Any] | None = None  # proposals made with the last analysis
        self.analysis_fallback = ""  # why the last analysis is the deterministic one ("": the LLM's)
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
            budget=ctx.budget,
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
                note = _down_note(self.spec, e.message)
                return Plan(tuple(proposals), "; ".join(x for x in (note, tpe_note) if x), progress.rationale)
            batch.give_up()
            notes.append(f"LLM request failed during repairs: {short(e.message, 200)}")
        return self._finish(ctx, batch, progress, notes)

    def _first_round(self, view: View, batch: Batch, progress: _Progress, notes: list[str]) -> None:
        """The proposals the last analysis made for this history, else one request."""
        made = self._made_for(view)
        if made is not None:
            progress.messages, progress.reply_text = made["messages"], made["reply"]
            progress.budget = self._budget(reply_tokens(self.spec, view.n))
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
        room = reply_tokens(self.spec, view.n)

        def send(prompt: Prompt) -> Reply:
            return self._ask(prompt.messages, view, "propose", 0, batch, prompt.stats, room)

        prompt, reply = self._send_fitted(view, propose_task(view), room, send, notes)
        progress.trips += 2 if prompt.stats.refitted else 1  # a refused request is a round trip too
        progress.messages, progress.budget = prompt.messages, prompt.stats.budget
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
                progress.budget,
                accepted=batch.accepted,
                wanted=view.n,
            )
            room = reply_tokens(self.spec, batch.missing)
            reply = self._ask(progress.messages, view, "repair", k, batch, None, room)
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

    # ------------------------------------------------------------------ the context
    def _budget(self, reply: int) -> int:
        """The prompt budget: ``[planner] context_tokens``, or less where the server's context
        (learned from its metadata or its refusal) minus the reply's room is less."""
        budget = self.spec.planner.context_tokens
        limit = self.client.context_limit
        if limit:
            budget = min(budget, int((limit - reply) * CONTEXT_SAFETY / self.client.memory.token_ratio))
        return budget

    def _prompt(self, view: View, task: str, reply: int, refitted: bool = False) -> Prompt:
        """The prompt within the budget; a UserError when the server's context cannot hold
        even its fixed part (the brief, the goal, the space, the task) and the reply."""
        budget = self._budget(reply)
        prompt = build_prompt(view, self.brief, task, budget)
        limit = self.client.context_limit
        if limit and prompt.stats.tokens > budget:
            raise UserError(
                f"the LLM server's context ({limit:,} tokens) cannot hold the shortest prompt hpc-agent "
                f"can send ({prompt.stats.tokens:,} tokens, estimated: the brief, the goal, the search "
                f"space, the task) and room for the reply ({reply:,} tokens)",
                fix="serve the model with a larger context (llama.cpp: -c N; llama-cpp-python: --n_ctx N), "
                "or shorten [planner] brief, or lower [planner] max_tokens",
            )
        if refitted:
            prompt = replace(prompt, stats=replace(prompt.stats, refitted=True))
        self.last_prompt = prompt.stats
        return prompt

    def _send_fitted(
        self, view: View, task: str, reply: int, send: Callable[[Prompt], Reply], notes: list[str]
    ) -> tuple[Prompt, Reply]:
        """Send the prompt fitted to what is known of the server's context; when the server
        says it is over its context, refit the prompt to what it taught and send it once more."""
        prompt = self._prompt(view, task, reply)
        try:
            return prompt, send(prompt)
        except ContextExceeded as e:
            refit = self._prompt(view, task, reply, refitted=True)
            if refit.stats.tokens >= prompt.stats.tokens:
                raise
            note = _context_note(e, self.spec.planner.context_tokens, refit.stats.budget)
            notes.append(note)
            self.client.note(
                "context", view.analyzing if view.analyzing is not None else view.generation, note=note
            )
            return refit, send(refit)

    def _ask(
        self,
        messages: list[dict[str, str]],
        view: View,
        purpose: str,
        round_: int,
        batch: Batch,
        stats: PromptStats | None,
        max_tokens: int,
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
            schema=reply_schema(self.spec, with_proposals=True, n=batch.missing),
            purpose=purpose,
            generation=view.generation,
            check=check,
            extra=extra,
            max_tokens=max_tokens,
        )

    def _tpe(self, ctx: PlanContext, n: int, taken: set[str], source: str) -> tuple[list[Proposal], str]:
        # optuna is imported only when TPE is needed: it takes about a second
        from hpc_agent.planners.tpe import TPEPlanner

        sub = replace(ctx, n=n, extra_seen=frozenset(set(ctx.extra_seen) | taken))
        plan = TPEPlanner.for_spec(self.spec).propose(sub)
        parent = lineage_parent(ctx.champion)
        return [Proposal(p.params, p.hypothesis, None, parent, source) for p in plan.proposals], plan.note

    # ------------------------------------------------------------------ analyze
    def analyze(self, ctx: AnalysisContext) -> str:
        """The model's analysis of generation ``ctx.generation`` (with the proposals for the
        next one, kept for :meth:`propose`); the deterministic analysis when it fails, and then
        :attr:`analysis_fallback` says why ("" when the model wrote it)."""
        self._attach(ctx.results_dir)
        self.analysis_fallback = ""
        g = ctx.generation
        plans_next = ctx.plan_for is not None
        view = _analysis_view(self.spec, ctx)
        try:
            reply, sent = self._ask_analysis(view, plans_next)
        except LLMUnavailable as e:
            self.analysis_fallback = f"LLM request failed: {short(e.message, 240)}"
            note = f"*No analysis from the LLM ({short(e.message, 200)}); {_DETERMINISTIC}*"
            return deterministic_analysis(ctx).rstrip() + "\n\n" + note + "\n"
        text = _analysis_text(reply.data)
        if plans_next and isinstance(reply.data, Mapping):
            self._made = {
                "plan_for": view.generation,
                "fingerprint": view.fingerprint(),
                "messages": sent,
                "reply": reply.text,
                "data": reply.data,
            }
        if not text:
            self.analysis_fallback = "the LLM's reply had no readable analysis"
            note = f"*The LLM's analysis could not be read (see `hpc-agent logs`); {_DETERMINISTIC}*"
            return deterministic_analysis(ctx).rstrip() + "\n\n" + note + "\n"
        if not text.startswith("# "):  # a title of its own, or ours
            text = f"# Generation {g}: analysis\n\n{text}"
        return text.rstrip() + "\n"

    def _ask_analysis(self, view: View, plans_next: bool) -> tuple[Reply, list[dict[str, str]]]:
        """Ask (and repair) until the reply has an analysis: (the last reply, the messages sent)."""
        fingerprint = view.fingerprint() if plans_next else None
        schema = reply_schema(self.spec, with_proposals=plans_next, n=view.n)
        room = reply_tokens(self.spec, view.n)

        def send(messages: list[dict[str, str]], k: int, stats: PromptStats | None) -> Reply:
            extra: dict[str, Any] = {"round": k, "prompt": stats.to_dict() if stats else None}
            if plans_next:
                extra.update(plan_for=view.generation, fingerprint=fingerprint)
            return self.client.complete(
                messages,
                schema=schema,
                purpose="analyze" if k == 0 else "repair",
                generation=view.analyzing,
                check=_analysis_check,
                extra=extra,
                max_tokens=room,
            )

        prompt, reply = self._send_fitted(
            view, analyze_task(view), room, lambda p: send(p.messages, 0, p.stats), []
        )
        messages = prompt.messages
        for k in range(1, self.spec.planner.max_repairs + 1):
            if _analysis_text(reply.data):
                break
            error = _unreadable(reply) if reply.data is None else 'the reply has no "analysis" text'
            messages = repair_messages(messages, reply.text, [error], prompt.stats.budget)
            reply = send(messages, k, None)
        return reply, messages

    # ------------------------------------------------------------------ plumbing
    def _attach(self, results_dir: Path | None) -> None:
        if results_dir is not None:
            self.client.set_log(ResultsPaths(results_dir).llm_log)

    def _made_for(self, view: View) -> dict[str, Any] | None:
        """Proposals the last analysis made for this generation (memory, else the log), for
        this very history; async, whatever it became since (checked against it like any)."""
        made = self._made
        if made is None and self.client.log.path is not None:
            made = _made_from_log(self.client.log.path, view.generation)
        self._made = None
        stale = self.spec.campaign.schedule != "async" and made and made["fingerprint"] != view.fingerprint()
        if not made or made["plan_for"] != view.generation or stale:
            return None
        if (
            not isinstance(made["data"], Mapping)
            or proposals_of(made["data"]) is None
            or not made["messages"]
        ):
            return None
        return made


def _down_note(spec: CampaignSpec, message: str) -> str:
    """The plan's note when the endpoint failed (code-first: nothing for TPE to plan; the
    campaign replicates the champion instead)."""
    tpe = "" if spec.code_first else "; TPE planned this generation"
    return f"LLM request failed: {short(message, 240)}{tpe}"


def _analysis_view(spec: CampaignSpec, ctx: AnalysisContext) -> View:
    """What the analysis of ``ctx.generation`` shows, and the batch it plans for the next
    search generation (``ctx.plan_for``; none when the search is over)."""
    g = ctx.generation
    return View(
        spec=spec,
        generation=ctx.plan_for if ctx.plan_for is not None else g + 1,
        n=spec.campaign.batch_size if ctx.plan_for is not None else 0,
        history=tuple(c for c in ctx.state.configs() if not c.purpose),  # as PlanContext's
        champion=ctx.state.champion(spec.campaign.mode),
        analyses=ctx.analyses,
        generations_left=ctx.generations_left if ctx.plan_for is not None else 0,
        results_dir=ctx.results_dir,
        analyzing=g,
        budget=ctx.budget,
    )


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
    """The reply's analysis ("" when it has none: a placeholder, or not three letters long)."""
    if isinstance(data, Mapping):
        a = data.get("analysis")
        if isinstance(a, str) and not is_placeholder(a) and sum(c.isalpha() for c in a) >= 3:
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


def _context_note(e: ContextExceeded, context_tokens: int, budget: int) -> str:
    """What the server's refusal taught, naming ``[planner] context_tokens``."""
    what = f"its context is {e.limit:,} tokens" if e.limit else "it did not say its context"
    advice = (
        f"set [planner] context_tokens = {budget} to start there"
        if budget >= 2000
        else "serve the model with a larger context for more room"
    )
    return (
        f"the server refused a prompt over its context ({what}); the prompt was refitted to {budget:,} "
        f"tokens (not [planner] context_tokens = {context_tokens:,}) and the limit is remembered for "
        f"this campaign; {advice}"
    )
