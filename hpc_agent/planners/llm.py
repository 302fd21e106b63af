"""The LLM planner: an agent that reads the campaign and proposes the next batch.

What the agent sees, in one system message (the research brief and the reply format) and
one user message (the campaign): the goal, the search space, the budget left, the champion
and its editable files, the history (best configurations, the most recent generation,
failures with the tail of their stderr, earlier ones), the configurations in flight and the
previous analyses. The prompt fits ``[planner] context_tokens``: the history is summarised
deterministically (one line a configuration, a fixed number of stderr lines) and, when it
does not fit, whole records are dropped, the least informative and oldest first, and the
prompt says how many (:func:`build_prompt`).

What it returns: ``{"analysis": markdown, "proposals": [{hypothesis, params, patch?}]}``.
Every proposal is checked as the campaign would check it (:meth:`Space.validate`, duplicates
of past and in-flight configurations, the patch applied to the champion's files with
:func:`~hpc_agent.patches.apply_patch`); the invalid ones are asked again with the exact
errors, at most ``[planner] max_repairs`` times; what stays invalid is dropped with its
reason in the log, and the batch is completed by TPE (``source="tpe-fill"``). An endpoint
that stays down (429, 5xx, timeouts past ``max_retries``) costs one generation of LLM
planning, never the night: TPE plans it and ``Plan.note`` says why.

Round trips: one per generation in steady state. ``analyze(g)`` asks for the analysis of
``g`` *and* the proposals for ``g + 1`` in one request; ``propose(g + 1)`` reuses them when
the history is still the one they were made for (its fingerprint is in the log record, so a
restarted driver reuses them too: the planner's memory is ``llm.jsonl``, never the process).
Generation 0's proposal and each repair are the other round trips.

Code lineage: a proposal with a patch edits the champion's files; its ``parent`` is the
champion's config id, so the trial's code is the champion's code plus the patch. A proposal
without a patch also runs on the champion's code when the champion has code changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from hpc_agent._io import read_json
from hpc_agent.llm import (
    LLMClient,
    LLMUnavailable,
    Reply,
    estimate_tokens,
    messages_tokens,
    parse_json_reply,
    read_log,
    resolve_config,
)
from hpc_agent.paths import ResultsPaths
from hpc_agent.planners.base import AnalysisContext, Plan, PlanContext, Planner, Proposal, config_key
from hpc_agent.space import ChoiceParam, FloatParam, IntParam
from hpc_agent.spec import CampaignSpec
from hpc_agent.state import ConfigResult

FIRST_PROMPT_SHARE = 0.8  # of context_tokens: the rest is room for a repair's extra turns
TOP_K = 8  # best configurations always shown (when they fit)
STDERR_TAILS = 3  # failures shown with the end of their stderr
LATEST_ANALYSES = 2  # shown before the older configurations; older analyses come last
STDERR_LINES = 12
LINE_CHARS = 240  # a stderr line or a patch summary line is cut at this many characters
HYPOTHESIS_CHARS = 200
_DETERMINISTIC = "this is hpc-agent's deterministic analysis."
FILE_SHARE = 0.6  # at most this share of the budget goes to the editable files


# ------------------------------------------------------------------------------- the planner


class LLMPlanner(Planner):
    """Plans with any OpenAI-compatible endpoint; see the module docstring."""

    name = "llm"

    def __init__(self, spec: CampaignSpec, client: LLMClient | None = None) -> None:
        self.spec = spec
        self.client = client or LLMClient(resolve_config(spec.planner))
        self.brief = load_brief(spec.planner.brief)
        self._made: dict[str, Any] | None = None  # proposals made with the last analysis
        self.last_prompt: PromptStats | None = None  # of the last request (for the bench)

    def describe(self) -> str:
        cfg = self.client.config
        return f"llm ({cfg.model or 'model not chosen yet'} at {cfg.display_url})"

    def preflight(self) -> None:
        """Before anything is submitted: the endpoint answers, takes the key, serves the model."""
        self.client.preflight()

    # ------------------------------------------------------------------ propose
    def propose(self, ctx: PlanContext) -> Plan:
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
        rationale = ""
        trips = 0
        try:
            made = self._made_for(view)
            if made is not None:
                messages, reply_text, data = made["messages"], made["reply"], made["data"]
                rationale = _analysis_text(data)
                errors = batch.take(data)
                self.client.note(
                    "propose",
                    ctx.generation,
                    reused=f"proposals made with the analysis of generation {ctx.generation - 1}",
                    **batch.record(),
                )
                notes.append(f"proposals written with the analysis of generation {ctx.generation - 1}")
            else:
                prompt = build_prompt(view, self.brief, propose_task(view))
                self.last_prompt = prompt.stats
                messages = prompt.messages
                reply = self._ask(messages, view, "propose", 0, batch, prompt.stats)
                trips += 1
                reply_text, errors = reply.text, batch.last_errors
                rationale = _analysis_text(reply.data)
            for k in range(1, self.spec.planner.max_repairs + 1):
                if not errors:
                    break
                messages = repair_messages(
                    messages, reply_text, errors, batch, self.spec.planner.context_tokens
                )
                reply = self._ask(messages, view, "repair", k, batch, None)
                trips += 1
                reply_text, errors = reply.text, batch.last_errors
                rationale = rationale or _analysis_text(reply.data)
            if errors:
                batch.give_up()
        except LLMUnavailable as e:
            if not batch.accepted:
                proposals, tpe_note = self._tpe(ctx, ctx.n, set(), "tpe")
                note = f"LLM unavailable ({_short(e.message, 200)}): TPE planned this generation"
                return Plan(tuple(proposals), "; ".join(x for x in (note, tpe_note) if x), rationale)
            batch.give_up()
            notes.append(f"LLM unavailable during repairs ({_short(e.message, 160)})")
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
        notes.insert(0, f"llm: {len(batch.accepted)} proposal(s), {trips} round trip(s)")
        return Plan(tuple(proposals), "; ".join(notes), rationale)

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
        from hpc_agent.planners.tpe import TPEPlanner

        sub = replace(ctx, n=n, extra_seen=frozenset(set(ctx.extra_seen) | taken))
        plan = TPEPlanner(self.spec.planner.tpe_startup_trials).propose(sub)
        parent = lineage_parent(ctx.champion)
        return [Proposal(p.params, p.hypothesis, None, parent, source) for p in plan.proposals], plan.note

    # ------------------------------------------------------------------ analyze
    def analyze(self, ctx: AnalysisContext) -> str:
        from hpc_agent.analysis import deterministic_analysis

        self._attach(ctx.results_dir)
        g = ctx.generation
        mode = self.spec.campaign.mode
        plans_next = g + 1 < self.spec.campaign.generations
        view = View(
            spec=self.spec,
            generation=g + 1,
            n=self.spec.campaign.batch_size if plans_next else 0,
            history=tuple(ctx.state.configs()),
            champion=ctx.state.champion(mode),
            analyses=ctx.analyses,
            generations_left=max(0, self.spec.campaign.generations - (g + 1)),
            results_dir=ctx.results_dir,
            analyzing=g,
        )
        prompt = build_prompt(view, self.brief, analyze_task(view))
        self.last_prompt = prompt.stats
        messages = prompt.messages
        fingerprint = view.fingerprint() if plans_next else None
        schema = reply_schema(self.spec, with_proposals=plans_next)
        sent = messages
        try:
            reply: Reply | None = None
            for k in range(self.spec.planner.max_repairs + 1):
                sent = messages
                extra: dict[str, Any] = {"round": k, "prompt": prompt.stats.to_dict() if k == 0 else None}
                if plans_next:
                    extra.update(plan_for=g + 1, fingerprint=fingerprint)
                reply = self.client.complete(
                    messages,
                    schema=schema,
                    purpose="analyze" if k == 0 else "repair",
                    generation=g,
                    check=_analysis_check,
                    extra=extra,
                )
                if _analysis_text(reply.data):
                    break
                error = _unreadable(reply) if reply.data is None else 'the reply has no "analysis" text'
                messages = repair_messages(
                    messages, reply.text, [error], None, self.spec.planner.context_tokens
                )
        except LLMUnavailable as e:
            note = f"*The LLM could not be reached ({_short(e.message, 200)}); {_DETERMINISTIC}*"
            return deterministic_analysis(ctx).rstrip() + "\n\n" + note + "\n"
        assert reply is not None  # the loop runs at least once
        text = _analysis_text(reply.data)
        if plans_next and isinstance(reply.data, Mapping):
            self._made = {
                "plan_for": g + 1,
                "fingerprint": fingerprint,
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

    # ------------------------------------------------------------------ plumbing
    def _attach(self, results_dir: Path | None) -> None:
        if results_dir is not None:
            self.client.set_log(ResultsPaths(results_dir).llm_log)

    def _made_for(self, view: View) -> dict[str, Any] | None:
        """Proposals the last analysis made for this very history, from memory or the log."""
        fp = view.fingerprint()
        made = self._made
        if made is None and self.client.log.path is not None:
            for rec in read_log(self.client.log.path):
                if (
                    rec.get("purpose") in ("analyze", "repair")
                    and rec.get("plan_for") == view.generation
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
        self._made = None
        if not made or made["plan_for"] != view.generation or made["fingerprint"] != fp:
            return None
        if (
            not isinstance(made["data"], Mapping)
            or _proposals_of(made["data"]) is None
            or not made["messages"]
        ):
            return None
        return made


def _analysis_check(reply: Reply) -> Mapping[str, Any]:
    data = reply.data
    made = _proposals_of(data) if isinstance(data, Mapping) else None
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


def load_brief(path: str) -> str:
    """The research brief: [planner] brief, else the one shipped with hpc-agent."""
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return resources.files("hpc_agent").joinpath("brief.md").read_text(encoding="utf-8").strip()


def lineage_parent(champion: ConfigResult | None) -> str | None:
    """The config whose code new proposals run on: the champion when it has code changes."""
    if champion is not None and (champion.patch or champion.parent):
        return champion.config_id
    return None


# ------------------------------------------------------------------------------- validation


@dataclass
class Batch:
    """The proposals of one generation as they are accepted, round after round."""

    view: View
    accepted: list[Proposal] = field(default_factory=list)
    dropped: int = 0  # invalid proposals given up on (their errors are in the log's last round)
    last_errors: list[str] = field(default_factory=list)  # to send back (empty: nothing to repair)
    round_errors: list[str] = field(default_factory=list)  # everything wrong with the last reply
    round_invalid: int = 0  # proposals of the last reply that were invalid
    last_raw: int = 0
    files: dict[str, str] = field(init=False)  # the champion's editable files
    parent: str | None = field(init=False)  # where proposals without a patch run
    _taken: dict[str, str] = field(default_factory=dict)  # key -> who has it

    def __post_init__(self) -> None:
        for c in self.view.history:
            what = "is in flight" if c.pending else "already ran"
            self._taken.setdefault(config_key(c.params, c.patch, c.parent), f"{what} (config {c.config_id})")
        for k in self.view.extra_seen:
            self._taken.setdefault(k, "is already in this batch (the baseline)")
        self.files = champion_files(self.view)
        self.parent = lineage_parent(self.view.champion)

    @property
    def missing(self) -> int:
        return max(0, self.view.n - len(self.accepted))

    def keys(self) -> set[str]:
        return {config_key(p.params, p.patch, p.parent) for p in self.accepted}

    def take(self, data: Any) -> list[str]:
        """Accept the valid proposals of a reply (up to the number still missing); return the
        errors to send back (empty: nothing to repair)."""
        want = self.missing
        raw = _proposals_of(data)
        self.round_invalid = 0
        if raw is None:
            self.last_errors = self.round_errors = [
                'the reply has no "proposals" list; reply with {"analysis": "...", "proposals": [...]}'
            ]
            self.last_raw = 0
            return self.last_errors
        self.last_raw = len(raw)
        errors: list[str] = []
        taken_now = 0
        for i, item in enumerate(raw, 1):
            if taken_now >= want:
                break
            p, errs = self._check(item, i)
            if errs:
                errors.extend(errs)
                self.round_invalid += 1
                continue
            assert p is not None
            self.accepted.append(p)
            self._taken[config_key(p.params, p.patch, p.parent)] = f"duplicates proposal {i} of your reply"
            taken_now += 1
        still = want - taken_now
        if still > 0 and len(raw) < want:
            errors.append(f"you proposed {len(raw)} experiment(s); {want} were asked for")
        if not errors and still > 0:
            errors.append(f"{still} more proposal(s) are needed")
        self.round_errors = errors  # logged even when the batch is full (nothing to repair)
        self.last_errors = errors if still > 0 else []
        return self.last_errors

    def unreadable(self, why: str) -> list[str]:
        self.last_errors = self.round_errors = [why]
        self.round_invalid = self.last_raw = 0
        return self.last_errors

    def _check(self, item: Any, i: int) -> tuple[Proposal | None, list[str]]:
        where = f"proposal {i}"
        if not isinstance(item, Mapping):
            return None, [
                f"{where}: expected an object with hypothesis, params, patch; got {_short(repr(item), 80)}"
            ]
        hyp = item.get("hypothesis")
        hypothesis = hyp.strip() if isinstance(hyp, str) else ""
        if hypothesis:
            where += f" ({_short(hypothesis, 60)!r})"
        raw_params = item.get("params")
        if not isinstance(raw_params, Mapping):
            return None, [f'{where}: "params" must be an object with every parameter of the search space']
        space = self.view.spec.space
        params, errors = space.validate(raw_params)
        errs = [f"{where}: {e}" for e in errors]
        patch, patch_errors = self._patch(item.get("patch"))
        errs += [f"{where}: patch: {e}" for e in patch_errors]
        if errs:
            return None, errs
        champ = self.view.champion
        parent = self.parent if patch is None else (champ.config_id if champ else None)
        who = self._taken.get(config_key(params, patch, parent))
        if who:
            return None, [
                f"{where}: {_params_json(params)}{' with this patch' if patch else ''} {who}; "
                "propose something new"
            ]
        return Proposal(params, hypothesis or "(no hypothesis given)", patch, parent, "llm"), []

    def _patch(self, raw: Any) -> tuple[tuple[Mapping[str, Any], ...] | None, list[str]]:
        from hpc_agent.patches import apply_patch

        if raw is None or raw == [] or raw == "" or raw == {}:
            return None, []
        if isinstance(raw, Mapping):
            raw = [raw]  # one edit, without its list
        if not isinstance(raw, list):
            return None, [
                f"expected a list of {{file, search, replace}} edits or null, got {type(raw).__name__}"
            ]
        editable = self.view.spec.experiment.editable
        if not editable:
            return None, ["no file is editable in this campaign: set patch to null"]
        new, errors = apply_patch(self.files, raw, editable)
        if errors:
            return None, errors
        if new == self.files:
            return None, ["the edits change nothing"]
        edits = tuple({"file": str(e["file"]), "search": e["search"], "replace": e["replace"]} for e in raw)
        return edits, []

    def give_up(self) -> None:
        """Repairs are spent: the last reply's invalid proposals are dropped (TPE fills in)."""
        self.dropped = self.round_invalid

    def record(self) -> dict[str, Any]:
        """What the log keeps of this round."""
        errors = self.round_errors
        return {
            "proposals": [
                {
                    "params": dict(p.params),
                    "hypothesis": p.hypothesis,
                    "patch": list(p.patch or []) or None,
                    "parent": p.parent,
                }
                for p in self.accepted
            ],
            "raw_proposals": self.last_raw,
            "validation_errors": list(errors) or None,
        }


def _proposals_of(data: Any) -> list[Any] | None:
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        p = data.get("proposals")
        if isinstance(p, list):
            return p
        if isinstance(data.get("params"), Mapping):
            return [data]  # a single proposal, without the envelope
    return None


def champion_files(view: View) -> dict[str, str]:
    """The editable files the next proposals' patches apply to (the champion's version)."""
    names = view.spec.experiment.editable
    if not names:
        return {}
    roots: list[Path] = []
    if view.results_dir is not None:
        paths = ResultsPaths(view.results_dir)
        parent = lineage_parent(view.champion)
        if parent is not None:
            roots.append(paths.trial(parent).code)
        roots.append(paths.base)
    roots.append(Path(view.spec.experiment.workdir))
    out: dict[str, str] = {}
    for name in names:
        for root in roots:
            try:
                out[name] = (root / name).read_text(encoding="utf-8")
                break
            except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
                continue
    return out


# ------------------------------------------------------------------------------- the prompt


@dataclass(frozen=True)
class View:
    """Everything the prompt shows, from a PlanContext or an AnalysisContext."""

    spec: CampaignSpec
    generation: int  # the generation to plan
    n: int  # proposals wanted (0: analysis only)
    history: tuple[ConfigResult, ...]
    champion: ConfigResult | None
    analyses: tuple[tuple[int, str], ...] = ()
    generations_left: int = 1  # including the one to plan
    results_dir: Path | None = None
    extra_seen: frozenset[str] = frozenset()
    analyzing: int | None = None  # the generation just finished, when analyzing

    def fingerprint(self) -> str:
        """What proposals were made for: the history (states and results), the batch, the champion."""
        rows = [
            [c.config_id, c.objective, c.pending, c.n_completed, len(c.failed_reasons)]
            for c in sorted(self.history, key=lambda c: c.config_id)
        ]
        champ = self.champion.config_id if self.champion else None
        known = {config_key(c.params, c.patch, c.parent) for c in self.history}
        extra = sorted(k for k in self.extra_seen if k not in known)  # the baseline of generation 0
        data = [self.generation, self.n, champ, extra, rows]
        return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptStats:
    tokens: int  # estimated, all messages
    budget: int  # [planner] context_tokens
    first_budget: int  # what the first request may use (the rest is room for repairs)
    history_configs: int
    shown_configs: int
    omitted_configs: int
    omitted_analyses: int
    omitted_files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens_estimate": self.tokens,
            "budget": self.budget,
            "first_budget": self.first_budget,
            "history_configs": self.history_configs,
            "shown_configs": self.shown_configs,
            "omitted_configs": self.omitted_configs,
            "omitted_analyses": self.omitted_analyses,
            "omitted_files": list(self.omitted_files),
        }


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]
    stats: PromptStats


def system_message(spec: CampaignSpec, brief: str) -> str:
    editable = list(spec.experiment.editable)
    if editable:
        patch_rule = (
            '- "patch" is null, or a list of edits {"file": "<editable file>", "search": "<text copied '
            'exactly from the current file, occurring once>", "replace": "<new text>"}, applied in order '
            "to the champion's version of the files shown. Only these files may change: "
            f"{json.dumps(editable)}."
        )
    else:
        patch_rule = '- No file is editable in this campaign: "patch" must be null.'
    return "\n".join(
        [
            "You are the research agent of hpc-agent. You run an ML research campaign on a compute "
            "cluster: each generation, you propose a batch of experiments that run together as one job "
            "array; when they finish, you read the results, write down what was learned and plan the next "
            "batch.",
            "",
            brief,
            "",
            "# Reply format",
            "Reply with ONE JSON object and nothing else:",
            '{"analysis": "<markdown>", "proposals": [{"hypothesis": "<what you change, what you expect, '
            'why>", "params": {<every parameter>}, "patch": null}]}',
            '- "params" names every parameter of the search space, exactly, each value inside its range; no '
            "other keys.",
            patch_rule,
            "- Never propose a configuration that already ran or is in flight (the same params with a "
            "different patch is a different experiment).",
        ]
    )


def propose_task(view: View) -> str:
    g, n = view.generation, view.n
    after = view.generations_left - 1
    return (
        f"# Task\nPropose exactly {n} new experiment(s) for generation {g} "
        f'({after} more generation(s) after this one). In "analysis", give your reasoning: what the '
        "evidence says and how this batch tests it."
    )


def analyze_task(view: View) -> str:
    g = view.analyzing
    lines = [
        "# Task",
        f'1. In "analysis", write the analysis of generation {g} (markdown, for the research log): '
        "what worked and by how much, what did not, which hypotheses held or failed (cite config ids "
        "and numbers), and what to try next.",
    ]
    if view.n:
        lines.append(
            f'2. In "proposals", propose exactly {view.n} new experiment(s) for generation {view.generation} '
            f"({view.generations_left - 1} more generation(s) after that one)."
        )
    else:
        lines.append('2. This was the last generation: "proposals" must be [].')
    return "\n".join(lines)


def build_prompt(view: View, brief: str, task: str) -> Prompt:
    """The messages for one request, within ``[planner] context_tokens`` (see the module
    docstring). Pure: the same view gives the same prompt."""
    spec = view.spec
    budget = spec.planner.context_tokens
    first_budget = int(budget * FIRST_PROMPT_SHARE)
    system = system_message(spec, brief)
    head = _head(view)
    champion = _champion_section(view)
    fixed = messages_tokens([{"content": system}, {"content": head + champion + task}]) + 40
    files_text, omitted_files = _files_section(view, max(0, int((first_budget - fixed) * FILE_SHARE)))
    room = first_budget - fixed - estimate_tokens(files_text)
    history_text, shown, omitted, omitted_analyses = _history_section(view, room)
    user = "\n\n".join(s for s in (head, champion, files_text, history_text, task) if s)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    stats = PromptStats(
        tokens=messages_tokens(messages),
        budget=budget,
        first_budget=first_budget,
        history_configs=len(view.history),
        shown_configs=shown,
        omitted_configs=omitted,
        omitted_analyses=omitted_analyses,
        omitted_files=tuple(omitted_files),
    )
    return Prompt(messages, stats)


def _head(view: View) -> str:
    spec = view.spec
    camp, exp = spec.campaign, spec.experiment
    better = "lower" if camp.mode == "min" else "higher"
    which = "its last logged value" if camp.objective == "last" else "its best logged value"
    goal = camp.goal or f"{'Minimise' if camp.mode == 'min' else 'Maximise'} {camp.metric}."
    seeds = (
        f"each experiment runs once per seed {list(camp.seeds)} and scores their mean"
        if len(camp.seeds) > 1
        else ""
    )
    lines = [
        "# Goal",
        goal,
        "",
        f"Objective: `{camp.metric}`, {better} is better ({which} per trial)"
        + (f"; {seeds}" if seeds else "")
        + f". Each trial has a time budget of {exp.time_budget_s:g} s.",
        "",
        "# Search space",
    ]
    for p in spec.space.params:
        lines.append(f"- {p.name}: {_describe_param(p)}")
    total = camp.generations
    if view.analyzing is not None:
        budget = (
            f"Generation {view.analyzing} just finished; {view.generations_left} of {total} generation(s) "
            f"(numbered 0..{total - 1}) are left to plan; batch size {camp.batch_size}."
        )
    else:
        budget = (
            f"Generation {view.generation} is next, of {total} (numbered 0..{total - 1}); "
            f"{view.generations_left - 1} more after it; batch size {camp.batch_size}."
        )
    lines += ["", "# Budget", budget]
    return "\n".join(lines)


def _describe_param(p: FloatParam | IntParam | ChoiceParam) -> str:
    text = p.describe()
    if p.default is not None:
        text += f" (default {json.dumps(p.default)})"
    return text


def _champion_section(view: View) -> str:
    c = view.champion
    metric = view.spec.campaign.metric
    if c is None:
        return "# Champion\nNone yet: no configuration has completed. Patches apply to the base code below."
    lines = ["# Champion (best so far)", _config_line(c, metric)]
    if lineage_parent(c) is not None:
        lines.append(
            f"All new experiments run on the champion's code (config {c.config_id}), plus their patch if any."
        )
    else:
        lines.append("The champion runs the base code; new experiments run on it, plus their patch if any.")
    return "\n".join(lines)


def _files_section(view: View, room: int) -> tuple[str, list[str]]:
    files = champion_files(view)
    if not files:
        return "", []
    whose = f"config {view.champion.config_id}" if lineage_parent(view.champion) and view.champion else "base"
    parts = [f"# Editable files (the {whose} version; patches apply to these)"]
    omitted: list[str] = []
    used = estimate_tokens(parts[0])
    for name in view.spec.experiment.editable:
        if name not in files:
            continue
        block = f"## {name}\n```{_lang(name)}\n{files[name]}\n```"
        cost = estimate_tokens(block)
        if used + cost > room:
            omitted.append(name)
            continue
        parts.append(block)
        used += cost
    if omitted:
        parts.append(
            f"({len(omitted)} file(s) not shown to fit the context budget: {', '.join(omitted)}; "
            "do not patch them; raise [planner] context_tokens to show them)"
        )
    return "\n\n".join(parts), omitted


def _lang(name: str) -> str:
    return {"py": "python", "sh": "bash", "toml": "toml", "yaml": "yaml", "yml": "yaml", "json": "json"}.get(
        name.rsplit(".", 1)[-1], ""
    )


@dataclass(frozen=True)
class _Item:
    priority: int
    order: int  # within a priority: lower first
    section: str
    config: str | None  # config id, or None for an analysis
    text: str


_SECTIONS = (
    ("inflight", "## In flight (do not propose these again)"),
    ("best", "## Best configurations"),
    ("recent", "## Most recent generation"),
    ("failures", "## Failures (most recent first)"),
    ("earlier", "## Earlier configurations (most recent first)"),
    ("analyses", "# Previous analyses"),
)


def _history_section(view: View, room: int) -> tuple[str, int, int, int]:
    """The history within ``room`` tokens: (text, configs shown, configs omitted, analyses omitted)."""
    history = list(view.history)
    metric = view.spec.campaign.metric
    if not history:
        text = "# History\nNo experiment has run yet."
        analyses = _analyses_items(view)
        return text + _render_analyses(analyses, room - estimate_tokens(text)), 0, 0, 0
    sign = 1.0 if view.spec.campaign.mode == "min" else -1.0
    done = [c for c in history if c.objective is not None and not c.pending]
    failed = [c for c in history if c.objective is None and not c.pending]
    pending = [c for c in history if c.pending]
    ranked = sorted(done, key=lambda c: (sign * float(c.objective or 0.0), c.config_id))
    last_gen = max((c.generation for c in history if not c.pending), default=-1)
    newest_first = sorted(history, key=lambda c: c.config_id, reverse=True)
    items: list[_Item] = []
    placed: set[str] = set()

    def add(priority: int, order: int, section: str, c: ConfigResult, text: str) -> None:
        placed.add(c.config_id)
        items.append(_Item(priority, order, section, c.config_id, text))

    for i, c in enumerate(sorted(pending, key=lambda c: c.config_id)):
        add(0, i, "inflight", c, _config_line(c, metric))
    for i, c in enumerate(ranked[:TOP_K]):
        add(1, i, "best", c, _config_line(c, metric, rank=i + 1))
    fails = [c for c in sorted(failed, key=lambda c: c.config_id, reverse=True) if c.config_id not in placed]
    for i, c in enumerate(fails):  # the failures of the last generation go here, not under "recent"
        tail = _stderr_block(view, c) if i < STDERR_TAILS else ""
        add(3 if i < STDERR_TAILS else 5, i, "failures", c, _config_line(c, metric) + tail)
    for i, c in enumerate(c for c in newest_first if c.generation == last_gen and c.config_id not in placed):
        add(2, i, "recent", c, _config_line(c, metric))
    for i, c in enumerate(c for c in newest_first if c.config_id not in placed):
        add(6, i, "earlier", c, _config_line(c, metric))
    analyses = _analyses_items(view)
    items += analyses
    chosen: list[_Item] = []
    used = 0
    summary = _summary(view, done, failed, pending, ranked)
    used += estimate_tokens(summary) + 60  # headings and omission notes
    for it in sorted(items, key=lambda it: (it.priority, it.order)):
        cost = estimate_tokens(it.text) + 1
        if used + cost > room:
            continue  # a whole record, or nothing of it
        chosen.append(it)
        used += cost
    shown = {it.config for it in chosen if it.config}
    omitted = len(history) - len(shown)
    omitted_analyses = len(analyses) - sum(1 for it in chosen if it.section == "analyses")
    out = [summary]
    for key, title in _SECTIONS:
        rows = [it for it in chosen if it.section == key]
        if key == "analyses":
            continue
        if not rows:
            continue
        rows.sort(key=lambda it: it.order)
        out.append(title + "\n" + "\n".join(it.text for it in rows))
    if omitted:
        out.append(
            f"({omitted} of {len(history)} configurations omitted to fit the context budget: "
            "the oldest and least informative; the best ones are all listed above)"
        )
    chosen_analyses = sorted((it for it in chosen if it.section == "analyses"), key=lambda it: -it.order)
    if chosen_analyses:
        out.append("# Previous analyses\n" + "\n\n".join(it.text for it in chosen_analyses))
    if omitted_analyses:
        out.append(f"({omitted_analyses} older analysis(es) omitted to fit the context budget)")
    return "\n\n".join(out), len(shown), omitted, omitted_analyses


def _analyses_items(view: View) -> list[_Item]:
    items = []
    newest_first = sorted(view.analyses, key=lambda ga: ga[0], reverse=True)
    for i, (g, text) in enumerate(newest_first):
        body = _demote_headings(text.strip())
        priority = 4 if i < LATEST_ANALYSES else 7
        items.append(_Item(priority, i, "analyses", None, f"## Analysis of generation {g}\n{body}"))
    return items


def _render_analyses(items: list[_Item], room: int) -> str:
    chosen, used = [], 0
    for it in sorted(items, key=lambda it: (it.priority, it.order)):
        cost = estimate_tokens(it.text) + 1
        if used + cost <= room:
            chosen.append(it)
            used += cost
    if not chosen:
        return ""
    chosen.sort(key=lambda it: -it.order)
    return "\n\n# Previous analyses\n" + "\n\n".join(it.text for it in chosen)


def _demote_headings(text: str) -> str:
    """An analysis's own headings go two levels down, under '## Analysis of generation g'."""
    return "\n".join("##" + ln if ln.startswith("#") else ln for ln in text.splitlines())


def _summary(
    view: View,
    done: list[ConfigResult],
    failed: list[ConfigResult],
    pending: list[ConfigResult],
    ranked: list[ConfigResult],
) -> str:
    metric = view.spec.campaign.metric
    text = (
        f"# History\n{len(view.history)} configuration(s) so far: {len(done)} completed, "
        f"{len(failed)} failed or stopped, {len(pending)} in flight."
    )
    if ranked:
        text += f" Best {metric}: {_num(ranked[0].objective)} (config {ranked[0].config_id})."
    return text


def _config_line(c: ConfigResult, metric: str, rank: int | None = None) -> str:
    head = f"{rank}. " if rank is not None else "- "
    if c.pending:
        result = "in flight"
    elif c.objective is not None:
        seeds = f" (mean of {c.n_completed} seeds)" if c.n_completed > 1 else ""
        result = f"{metric}={_num(c.objective)}{seeds}"
    else:
        reason = c.failed_reasons[0].split(": ", 1)[-1] if c.failed_reasons else "no result"
        result = f"FAILED: {_short(reason, LINE_CHARS)}"
    line = f"{head}{c.config_id} (gen {c.generation}, {c.source or '?'}): {result}"
    line += f" | params {_params_json(c.params)}"
    code = _code_text(c)
    if code:
        line += f" | code: {code}"
    if c.hypothesis:
        line += f" | hypothesis: {_short(c.hypothesis, HYPOTHESIS_CHARS)}"
    return line


def _code_text(c: ConfigResult) -> str:
    if c.patch:
        edits = "; ".join(_edit_text(e) for e in c.patch)
        on = f" on {c.parent}" if c.parent else " on the base code"
        return f"patch{on}: {edits}"
    if c.parent:
        return f"same as {c.parent}"
    return ""


def _edit_text(e: Mapping[str, Any]) -> str:
    def first(s: Any) -> str:
        lines = [ln.strip() for ln in str(s).splitlines() if ln.strip()]
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        return _short(lines[0] if lines else "", 100) + more

    return f"{e.get('file')}: `{first(e.get('search'))}` -> `{first(e.get('replace'))}`"


def _stderr_block(view: View, c: ConfigResult) -> str:
    if view.results_dir is None:
        return ""
    status = read_json(ResultsPaths(view.results_dir).trial(c.trial_ids[0]).status)
    tail = status.get("stderr_tail") if isinstance(status, dict) else None
    if not isinstance(tail, str) or not tail.strip():
        return ""
    lines = [_cut(ln.rstrip(), LINE_CHARS) for ln in tail.rstrip().splitlines()[-STDERR_LINES:]]
    return "\n  stderr (last lines):\n" + "\n".join("    " + ln for ln in lines)


def _params_json(params: Mapping[str, Any]) -> str:
    return json.dumps({k: params[k] for k in params}, ensure_ascii=False)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def _cut(text: str, n: int) -> str:
    """At most ``n`` characters, whitespace kept (a stderr line's indentation means something)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------- repair + schema


def repair_messages(
    messages: Sequence[Mapping[str, str]],
    reply_text: str,
    errors: Sequence[str],
    batch: Batch | None,
    context_tokens: int,
) -> list[dict[str, str]]:
    """The conversation for a repair round: the original request, the last reply and the
    exact errors (earlier repair turns are dropped: they are in the log)."""
    base = [dict(m) for m in messages[:2]]
    lines = ["Your reply had problems:"]
    lines += [f"- {e}" for e in errors]
    if batch is not None:
        if batch.accepted:
            lines.append(
                f"Accepted so far: {len(batch.accepted)} of {batch.view.n} proposal(s) "
                "(they stand; do not repeat them):"
            )
            lines += [f"- {_params_json(p.params)}{' + patch' if p.patch else ''}" for p in batch.accepted]
        lines.append(
            f"Reply again with the same JSON object, with exactly {batch.missing} new proposal(s) in "
            '"proposals" (replacing the invalid ones); "analysis" may be one sentence.'
        )
    else:
        lines.append("Reply again with only the JSON object, in the format asked for.")
    repair = "\n".join(lines)
    assistant = reply_text.strip() or "(empty reply)"
    room = context_tokens - messages_tokens([*base, {"content": repair}])
    if estimate_tokens(assistant) > room:
        assistant = f"(your previous reply, {len(reply_text)} characters, is not repeated here)"
    return [*base, {"role": "assistant", "content": assistant}, {"role": "user", "content": repair}]


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def reply_schema(spec: CampaignSpec, with_proposals: bool = True) -> dict[str, Any]:
    """The JSON schema of a reply (for ``response_format: json_schema``, strict subset):
    ranges are in descriptions, not keywords, so every server that takes a schema takes it."""
    props: dict[str, Any] = {}
    for p in spec.space.params:
        if isinstance(p, ChoiceParam):
            props[p.name] = {"enum": list(p.values), "description": p.describe()}
            kinds = {_JSON_TYPES.get(type(v)) for v in p.values}
            if len(kinds) == 1 and None not in kinds:
                props[p.name]["type"] = kinds.pop()
        elif isinstance(p, IntParam):
            props[p.name] = {"type": "integer", "description": p.describe()}
        else:
            props[p.name] = {"type": "number", "description": p.describe()}
    editable = list(spec.experiment.editable)
    if editable:
        edit = {
            "type": "object",
            "properties": {
                "file": {"type": "string", "enum": editable},
                "search": {"type": "string"},
                "replace": {"type": "string"},
            },
            "required": ["file", "search", "replace"],
            "additionalProperties": False,
        }
        patch: dict[str, Any] = {"anyOf": [{"type": "array", "items": edit}, {"type": "null"}]}
    else:
        patch = {"type": "null"}
    proposal = {
        "type": "object",
        "properties": {
            "hypothesis": {"type": "string"},
            "params": {
                "type": "object",
                "properties": props,
                "required": list(props),
                "additionalProperties": False,
            },
            "patch": patch,
        },
        "required": ["hypothesis", "params", "patch"],
        "additionalProperties": False,
    }
    proposals: dict[str, Any] = {"type": "array", "items": proposal}
    if not with_proposals:
        proposals["description"] = "must be empty: this was the last generation"
    return {
        "type": "object",
        "properties": {"analysis": {"type": "string"}, "proposals": proposals},
        "required": ["analysis", "proposals"],
        "additionalProperties": False,
    }
