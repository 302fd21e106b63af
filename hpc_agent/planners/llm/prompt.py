"""What the agent is shown: the prompt, fitted to ``[planner] context_tokens``.

One system message (the research brief and the reply format) and one user message (the
campaign): the goal, the search space, the budget left, the champion and its editable files,
the history (best configurations, the most recent generation, failures with the tail of their
stderr, earlier ones), the configurations in flight and the previous analyses. The history is
summarised deterministically (one line a configuration, a fixed number of stderr lines) and,
when it does not fit, whole records are dropped, the least informative and oldest first, and
the prompt says how many (:func:`build_prompt`). A repair round's conversation is built here
too (:func:`repair_messages`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hpc_agent.config.space import ChoiceParam, FloatParam, IntParam
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.job.fileio import read_json
from hpc_agent.llm import estimate_tokens, messages_tokens
from hpc_agent.planners.base import Proposal, config_key
from hpc_agent.planners.llm.edits import edit_text
from hpc_agent.planners.llm.edits import patch_rule as edits_rule
from hpc_agent.science.rigor import CANDIDATE, PENDING, VERDICTS, margin, noise
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import ConfigResult

FIRST_PROMPT_SHARE = 0.8  # of context_tokens: the rest is room for a repair's extra turns
TOP_K = 8  # best configurations always shown (when they fit)
STDERR_TAILS = 3  # failures shown with the end of their stderr
LATEST_ANALYSES = 2  # shown before the older configurations; older analyses come last
STDERR_LINES = 12
LINE_CHARS = 240  # a stderr line or a patch summary line is cut at this many characters
HYPOTHESIS_CHARS = 200
FILE_SHARE = 0.6  # at most this share of the budget goes to the editable files


def is_placeholder(text: str) -> bool:
    """Is ``text`` a placeholder rather than words: ``<markdown>``-like (small models copy a
    format's example), or not a letter in it (``...``, ``{``)?"""
    t = text.strip()
    if not any(c.isalpha() for c in t):
        return True
    return t.startswith("<") and t[1].isalpha() and "\n" not in t and len(t) < 120


def load_brief(path: str) -> str:
    """The research brief: [planner] brief, else the one shipped with hpc-agent."""
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return resources.files("hpc_agent.planners.llm").joinpath("brief.md").read_text(encoding="utf-8").strip()


def lineage_parent(champion: ConfigResult | None) -> str | None:
    """The config whose code new proposals run on: the champion when it has code changes."""
    if champion is not None and (champion.patch or champion.parent):
        return champion.config_id
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
    budget: str = ""  # the budget used and left, in words (hpc_agent.science.budget.describe)

    def fingerprint(self) -> str:
        """What proposals were made for: the history (states and results), the champion. (Not
        the batch's size: proposals made for a full batch serve a batch the campaign shortened
        by a control trial.)"""
        rows = [
            [c.config_id, c.objective, c.pending, c.n_completed, len(c.failed_reasons)]
            for c in sorted(self.history, key=lambda c: c.config_id)
        ]
        champ = self.champion.config_id if self.champion else None
        known = {config_key(c.params, c.patch, c.parent) for c in self.history}
        extra = sorted(k for k in self.extra_seen if k not in known)  # the baseline of generation 0
        data = [self.generation, champ, extra, rows]
        return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptStats:
    """The size of a prompt and what was left out of it to fit (logged with each request)."""

    tokens: int  # estimated, all messages
    budget: int  # [planner] context_tokens
    first_budget: int  # what the first request may use (the rest is room for repairs)
    history_configs: int
    shown_configs: int
    omitted_configs: int
    omitted_analyses: int
    omitted_files: tuple[str, ...] = ()
    refitted: bool = False  # fitted again after the server refused a prompt over its context

    def to_dict(self) -> dict[str, Any]:
        """As logged in ``llm.jsonl`` (``prompt``)."""
        return {
            "tokens_estimate": self.tokens,
            "budget": self.budget,
            "first_budget": self.first_budget,
            "history_configs": self.history_configs,
            "shown_configs": self.shown_configs,
            "omitted_configs": self.omitted_configs,
            "omitted_analyses": self.omitted_analyses,
            "omitted_files": list(self.omitted_files),
            "refitted": self.refitted,
        }


@dataclass(frozen=True)
class Prompt:
    """The messages of one request, and their :class:`PromptStats`."""

    messages: list[dict[str, str]]
    stats: PromptStats


def system_message(spec: CampaignSpec, brief: str) -> str:
    """The system message: the agent's role, the research brief and the reply format."""
    patch_rule = edits_rule(spec.experiment.editable, spec.planner.edit_format)
    params_rule = (
        '- "params" names every parameter of the search space, exactly, each value inside its range; no '
        "other keys."
    )
    if spec.code_first:
        params_rule = '- "params" is {}: this campaign has no search space.'
        patch_rule += (
            ' Every experiment is a code change: "patch" is never null. Hyperparameters are constants in '
            "the files; change them there."
        )
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
            'Reply with ONE JSON object and nothing else. Its keys: "analysis", your own words in '
            'markdown; "proposals", a list of objects with the keys "hypothesis", "params" and "patch".',
            '- "hypothesis": in a sentence or two, what you change, what you expect, and why.',
            params_rule,
            patch_rule,
            "- Never propose a configuration that already ran or is in flight (the same params with a "
            "different patch is a different experiment).",
        ]
    )


def propose_task(view: View) -> str:
    """The task of a propose request: ``view.n`` experiments for ``view.generation``."""
    g, n = view.generation, view.n
    after = view.generations_left - 1
    return (
        f"# Task\nPropose exactly {n} new experiment(s) for generation {g} "
        f'({after} more generation(s) after this one). In "analysis", give your reasoning: what the '
        "evidence says and how this batch tests it."
    )


def analyze_task(view: View) -> str:
    """The task of an analysis request: the analysis of ``view.analyzing`` and, unless it was
    the last generation, the proposals for the next one."""
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
        lines.append(
            '2. This was the last generation: nothing more will run. Reply with {"analysis": "..."} only.'
        )
    return "\n".join(lines)


def build_prompt(view: View, brief: str, task: str, budget: int | None = None) -> Prompt:
    """The messages for one request, within ``budget`` estimated tokens (default
    ``[planner] context_tokens``; see the module docstring). The history and the files are cut
    to fit; the rest (brief, goal, space, champion, task) is not, so ``stats.tokens`` may
    exceed a budget too small for it. Pure: the same view and budget give the same prompt."""
    spec = view.spec
    budget = spec.planner.context_tokens if budget is None else budget
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
    if spec.code_first:
        lines.append(
            "None: a code-first campaign. Each experiment is a hypothesis and a patch of the editable "
            "files, applied to the champion's code (shown below); the baseline is the unmodified code."
        )
    total = camp.generations
    if camp.schedule == "async":
        budget = _async_budget(view)
    elif view.analyzing is not None:
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
    if view.budget:
        lines.append(view.budget)
    return "\n".join(lines)


def _async_budget(view: View) -> str:
    """The budget line of the async schedule: generations overlap and are sized to free slots."""
    camp = view.spec.campaign
    pending = sum(1 for c in view.history if c.pending)
    head = (
        f"Generation {view.analyzing} just finished. "
        if view.analyzing is not None
        else f"Generation {view.generation} is next. "
    )
    return head + (
        f"Generations overlap: a new one starts as soon as slots free up, so {pending} "
        f"configuration(s) are still in flight (marked below; do not repeat them). About "
        f"{max(0, view.generations_left - (view.analyzing is None))} more batch(es) of up to "
        f"{camp.batch_size} after the next one."
    )


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
    lines = ["# Champion (the last configuration kept)", _config_line(c, metric)]
    if lineage_parent(c) is not None:
        lines.append(
            f"All new experiments run on the champion's code (config {c.config_id}), plus their patch if any."
        )
    else:
        lines.append("The champion runs the base code; new experiments run on it, plus their patch if any.")
    return "\n".join([*lines, _noise_rule(view)])


def _noise_rule(view: View) -> str:
    """The noise floor and the promotion rule, as the campaign applies them."""
    r = view.spec.rigor
    floor = noise(view.history)
    if r.rule == "se":
        rule = f"more than {margin(r.k, floor.n):.3g} standard errors (k = {r.k:g} at the noise's n)"
    else:
        rule = f"Welch's t-test at {r.alpha:g}"
    verdicts = [_verdict(c) for c in view.history]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts)
    confirm = (
        " A challenger that passes on its first run(s) is a candidate: it is run again with a new "
        "seed, and kept only if its runs together and its new run alone still pass; until then the "
        "champion stays."
        if r.replicate
        else ""
    )
    return (
        f"Noise floor (run-to-run spread of {view.spec.campaign.metric}): {floor.describe()}. "
        f"A challenger replaces the champion only if it is better by {rule}; smaller differences are "
        f"noise and are discarded, and nothing is kept while the noise is not estimated (pending).{confirm} "
        f"Verdicts so far: {counts or 'none'}."
    )


def _verdict(c: ConfigResult) -> str:
    """A configuration's verdict; ``pending`` for one of the search that finished and waits for
    it (the noise estimate, or the reference planned before it), "" before it finished."""
    if c.verdict or c.purpose or c.pending or c.objective is None:
        return c.verdict
    return PENDING


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
    if not history:
        text = "# History\nNo experiment has run yet."
        analyses = _analyses_items(view)
        return text + _render_analyses(analyses, room - estimate_tokens(text)), 0, 0, 0
    sign = 1.0 if view.spec.campaign.mode == "min" else -1.0
    done = [c for c in history if c.objective is not None and not c.pending]
    failed = [c for c in history if c.objective is None and not c.pending]
    pending = [c for c in history if c.pending]
    ranked = sorted(done, key=lambda c: (sign * float(c.objective or 0.0), c.config_id))
    analyses = _analyses_items(view)
    items = _config_items(view, ranked, failed, pending) + analyses
    summary = _summary(view, done, failed, pending, ranked)
    used = estimate_tokens(summary) + 60  # headings and omission notes
    chosen: list[_Item] = []
    for it in sorted(items, key=lambda it: (it.priority, it.order)):
        cost = estimate_tokens(it.text) + 1
        if used + cost > room:
            continue  # a whole record, or nothing of it
        chosen.append(it)
        used += cost
    shown = {it.config for it in chosen if it.config}
    omitted = len(history) - len(shown)
    omitted_analyses = len(analyses) - sum(1 for it in chosen if it.section == "analyses")
    text = _render_history(summary, chosen, omitted, len(history), omitted_analyses)
    return text, len(shown), omitted, omitted_analyses


def _config_items(
    view: View, ranked: list[ConfigResult], failed: list[ConfigResult], pending: list[ConfigResult]
) -> list[_Item]:
    """Every configuration as one record, with its section and priority (lower: kept first)."""
    metric = view.spec.campaign.metric
    last_gen = max((c.generation for c in view.history if not c.pending), default=-1)
    newest_first = sorted(view.history, key=lambda c: c.config_id, reverse=True)
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
    return items


def _render_history(
    summary: str, chosen: list[_Item], omitted: int, total: int, omitted_analyses: int
) -> str:
    out = [summary]
    for key, title in _SECTIONS:
        rows = [it for it in chosen if it.section == key]
        if key == "analyses" or not rows:
            continue
        rows.sort(key=lambda it: it.order)
        out.append(title + "\n" + "\n".join(it.text for it in rows))
    if omitted:
        out.append(
            f"({omitted} of {total} configurations omitted to fit the context budget: "
            "the oldest and least informative; the best ones are all listed above)"
        )
    chosen_analyses = sorted((it for it in chosen if it.section == "analyses"), key=lambda it: -it.order)
    if chosen_analyses:
        out.append("# Previous analyses\n" + "\n\n".join(it.text for it in chosen_analyses))
    if omitted_analyses:
        out.append(f"({omitted_analyses} older analysis(es) omitted to fit the context budget)")
    return "\n\n".join(out)


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
        result = f"FAILED: {short(reason, LINE_CHARS)}"
    line = f"{head}{c.config_id} (gen {c.generation}, {c.source or '?'}): {result}"
    verdict = _verdict(c)
    if verdict == CANDIDATE:
        line += " | verdict: candidate (better on its first run; its replicate decides)"
    elif verdict == PENDING:
        line += " | verdict: pending (waits for the noise estimate)"
    elif verdict:
        line += f" | verdict: {verdict}"
    line += f" | params {params_json(c.params)}"
    code = _code_text(c)
    if code:
        line += f" | code: {code}"
    if c.hypothesis:
        line += f" | hypothesis: {short(c.hypothesis, HYPOTHESIS_CHARS)}"
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
    return edit_text(e, short)


def _stderr_block(view: View, c: ConfigResult) -> str:
    if view.results_dir is None:
        return ""
    status = read_json(ResultsPaths(view.results_dir).trial(c.trial_ids[0]).status)
    tail = status.get("stderr_tail") if isinstance(status, dict) else None
    if not isinstance(tail, str) or not tail.strip():
        return ""
    lines = [_cut(ln.rstrip(), LINE_CHARS) for ln in tail.rstrip().splitlines()[-STDERR_LINES:]]
    return "\n  stderr (last lines):\n" + "\n".join("    " + ln for ln in lines)


def params_json(params: Mapping[str, Any]) -> str:
    """Parameters as compact JSON, in their order."""
    return json.dumps({k: params[k] for k in params}, ensure_ascii=False)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def _cut(text: str, n: int) -> str:
    """At most ``n`` characters, whitespace kept (a stderr line's indentation means something)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def short(text: str, n: int) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def repair_messages(
    messages: Sequence[Mapping[str, str]],
    reply_text: str,
    errors: Sequence[str],
    context_tokens: int,
    accepted: Sequence[Proposal] | None = None,
    wanted: int = 0,
) -> list[dict[str, str]]:
    """The conversation for a repair round: the original request, the last reply and the
    exact errors (earlier repair turns are dropped: they are in the log). ``accepted`` is
    None for an analysis (no proposals asked for), else the proposals accepted so far of the
    ``wanted`` ones. Fits ``context_tokens``: a reply too long to repeat is summarised."""
    base = [dict(m) for m in messages[:2]]
    lines = ["Your reply had problems:"]
    lines += [f"- {e}" for e in errors]
    if accepted is not None:
        if accepted:
            lines.append(
                f"Accepted so far: {len(accepted)} of {wanted} proposal(s) (they stand; do not repeat them):"
            )
            lines += [f"- {params_json(p.params)}{' + patch' if p.patch else ''}" for p in accepted]
        lines.append(
            f"Reply again with the same JSON object, with exactly {max(0, wanted - len(accepted))} new "
            'proposal(s) in "proposals" (replacing the invalid ones); "analysis" may be one sentence.'
        )
    else:
        lines.append("Reply again with only the JSON object, in the format asked for.")
    repair = "\n".join(lines)
    assistant = reply_text.strip() or "(empty reply)"
    room = context_tokens - messages_tokens([*base, {"content": repair}])
    if estimate_tokens(assistant) > room:
        assistant = f"(your previous reply, {len(reply_text)} characters, is not repeated here)"
    return [*base, {"role": "assistant", "content": assistant}, {"role": "user", "content": repair}]
