"""The campaign report: ``report.md``, a standalone ``report.html``, and the figures.

What was run and found, for a co-author: the best configurations (a paper table), the
progress by generation, the figures (:mod:`hpc_agent.outputs.figures`: PNG for the report, PDF beside
each for the paper), the champion's lineage with each kept code change as a diff
(:mod:`hpc_agent.science.lineage`), the compute and the LLM tokens it cost (:mod:`hpc_agent.science.usage`),
the parameter effects, what did not complete, and every generation's analysis.

:func:`campaign_report` and :func:`report_html` are pure (data in, text out); gathering the
data and writing the files is :func:`write_report`. ``report.html`` is one file: its figures
are embedded as data URIs and its only links point inside it, so it opens from an email.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.job.fileio import atomic_write_text
from hpc_agent.llm.log import Usage
from hpc_agent.outputs.figures import KINDS, FigureInput, make_figure, pyplot
from hpc_agent.outputs.tables import frame_markdown, paper_table, render_markdown
from hpc_agent.science.analysis import parameter_effects
from hpc_agent.science.lineage import LineageStep, champion_lineage
from hpc_agent.science.usage import Compute, compute_used, llm_used
from hpc_agent.store.metrics import gather_table, write_table
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state, spec_of
from hpc_agent.store.state import CampaignState

# ------------------------------------------------------------------------------- the table


def load_table(paths: ResultsPaths, state: CampaignState, spec: CampaignSpec) -> pl.DataFrame:
    """trials.parquet, rebuilt from the journal when it is missing or older than the journal."""
    table_path = paths.trials_table
    try:
        fresh = table_path.stat().st_mtime >= paths.journal.stat().st_mtime
    except FileNotFoundError:
        fresh = False
    if fresh:
        return pl.read_parquet(table_path)
    df = gather_table(paths, state, spec)
    try:
        write_table(df, table_path)
    except OSError:
        pass  # a read-only copy of a results folder can still be exported
    return df


def progress_table(df: pl.DataFrame, mode: str) -> pl.DataFrame:
    """Per generation: trials, completed, the generation's best and the best so far."""
    if df.height == 0:
        return pl.DataFrame(
            schema={"generation": pl.Int64(), "trials": pl.UInt32(), "completed": pl.UInt32()}
        )
    done = pl.col("state") == "completed"
    best = pl.col("objective").filter(done)
    per = (
        df.group_by("generation")
        .agg(
            pl.len().alias("trials"),
            done.sum().alias("completed"),
            (best.min() if mode == "min" else best.max()).alias("best_of_generation"),
        )
        .sort("generation")
    )
    cum = pl.col("best_of_generation").cum_min() if mode == "min" else pl.col("best_of_generation").cum_max()
    return per.with_columns(cum.forward_fill().alias("best_so_far"))


# ------------------------------------------------------------------------------- report.md


@dataclass(frozen=True)
class ReportInput:
    """Everything report.md says, gathered: the journal's state, the spec, the trials table,
    the analyses by generation, the figures (paths relative to the results folder), the
    champion's lineage, the compute and the LLM usage."""

    state: CampaignState
    spec: CampaignSpec
    df: pl.DataFrame
    analyses: Mapping[int, str] = field(default_factory=dict)
    figures: Sequence[str] = ()
    lineage: Sequence[LineageStep] = ()
    compute: Compute = field(default_factory=Compute)
    llm: Usage = field(default_factory=Usage)


def campaign_report(r: ReportInput) -> str:
    """report.md: what was run, what was found, how it evolved, what it cost, what failed. Pure."""
    camp = r.spec.campaign
    lines = _report_head(r.state, r.spec, r.df)
    lines += ["## Best configurations", ""]
    if r.df.filter(pl.col("state") == "completed").height:
        table = paper_table(r.df, r.spec, top=5)
        lines += [render_markdown(table), f"_{table.note}; the best value of each metric in bold._", ""]
    else:
        lines += ["No trial completed.", ""]
    lines += _rigor_section(r.state, r.spec, r.df)
    lines += ["## Progress", "", frame_markdown(progress_table(r.df, camp.mode))]
    for fig in r.figures:
        lines += [f"![{Path(fig).stem}: {KINDS.get(Path(fig).stem, '')}]({fig})", ""]
    lines += _lineage_section(r.lineage, camp.metric)
    lines += _cost_section(r.compute, r.llm)
    done = r.df.filter((pl.col("state") == "completed") & pl.col("objective").is_not_null())
    effects = parameter_effects(done, r.spec.space.names, camp.mode)
    if effects:
        lines += ["## Parameter effects", ""] + [f"- {e}" for e in effects] + [""]
    lines += _failures_section(r.df)
    if r.analyses:
        lines += ["## Analyses, generation by generation", ""]
        for g in sorted(r.analyses):
            # nest the analysis's headings under this section's
            body = "\n".join(
                "##" + ln if ln.startswith("#") else ln for ln in r.analyses[g].strip().splitlines()
            )
            lines += [body, ""]
    return "\n".join(lines).rstrip() + "\n"


LEDGER_ROWS = 30  # the report's ledger: the kept configurations and the most recent others


def _rigor_section(state: CampaignState, spec: CampaignSpec, df: pl.DataFrame) -> list[str]:
    """The noise floor, the champion (last kept) and the confirmed one, and the ledger."""
    from hpc_agent.science.ledger import ledger_table
    from hpc_agent.science.rigor import VERDICTS, final_champion, noise, waiting

    mode = spec.campaign.mode
    search = [c for c in state.configs() if not c.purpose]
    waits = waiting(state, spec)
    if not any(c.verdict for c in search) and not waits:
        return []
    verdicts = [waits.get(c.config_id, (c.verdict, ""))[0] for c in search]
    unconfirmed = sum(1 for c in search if c.verdict_reason.startswith("not confirmed"))
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS if v in verdicts or v != "pending")
    lines = [
        "## Verdicts",
        "",
        f"- noise floor: {noise(search).describe()}; rule: `{spec.rigor.rule}`"
        + (f", k = {spec.rigor.k:g}" if spec.rigor.rule == "se" else f", alpha = {spec.rigor.alpha:g}")
        + ("; a keep is confirmed by a replicate" if spec.rigor.replicate else ""),
        f"- verdicts: {counts}"
        + (f" ({unconfirmed} discarded as not confirmed by a replicate)" if unconfirmed else "")
        + " (docs/rigor.md)",
        *(f"- {v} {cid}: {why}" for cid, (v, why) in waits.items()),
    ]
    champ = state.champion(mode)
    if champ is not None and champ.objective is not None:
        runs = f"{champ.n_completed} run(s)"
        lines.append(f"- champion (last kept): {champ.config_id}, {champ.objective:.6g} over {runs}")
    original, confirmed = final_champion(state, mode)
    if original is not None and confirmed is not None and confirmed.objective is not None:
        lines.append(
            f"- confirmed champion: {original.config_id}, {confirmed.objective:.6g} over "
            f"{confirmed.n_completed} confirmation run(s) at {confirmed.budget_multiplier:g}x the budget"
        )
    if state.stopped:
        lines.append(f"- the search stopped: {state.stopped} ({state.stopped_detail})")
    ledger = ledger_table(state, spec, df).drop("hypothesis", "reason")
    if ledger.height > LEDGER_ROWS:
        kept = ledger.filter(pl.col("verdict") == "keep")
        rest = ledger.filter(pl.col("verdict") != "keep").tail(max(0, LEDGER_ROWS - kept.height))
        ledger = pl.concat([kept, rest]).sort("config")
        lines.append(
            f"- below, the kept configurations and the latest others ({LEDGER_ROWS} rows); "
            "`hpc-agent export --format ledger` has them all"
        )
    return [*lines, "", frame_markdown(ledger), ""]


def _report_head(state: CampaignState, spec: CampaignSpec, df: pl.DataFrame) -> list[str]:
    camp = spec.campaign
    better = "lower" if camp.mode == "min" else "higher"
    lines = [f"# Campaign report: {camp.name}", ""]
    if camp.goal:
        lines += [f"> {line}" if line else ">" for line in camp.goal.splitlines()] + [""]
    counts = df.group_by("state").len().sort("state") if df.height else None
    states = (
        ", ".join(f"{r['len']} {r['state']}" for r in counts.iter_rows(named=True))
        if counts is not None
        else "none"
    )
    planners = sorted({g.planner for g in state.generations.values() if g.planner})
    lines += [
        f"- objective: `{camp.metric}` ({better} is better, {camp.objective} logged value)",
        f"- generations: {state.completed_generations()} done of {camp.generations}",
        f"- trials: {df.height} ({states})",
        f"- planner: {', '.join(planners) or '-'}; seeds per proposal: {len(camp.seeds)}",
        "- search space: " + "; ".join(f"`{k}` {v}" for k, v in spec.space.describe().items()),
        "",
    ]
    return lines


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _lineage_section(steps: Sequence[LineageStep], metric: str) -> list[str]:
    if not steps:
        return []
    lines = ["## The champion's lineage", ""]
    changed = [s for s in steps if s.diff]
    champ = steps[-1]
    if not changed:
        lines += [f"The champion, trial {champ.trial_id}, runs the base code: no code change was kept.", ""]
    else:
        lines += [
            f"The champion, trial {champ.trial_id}, runs the base code with {len(changed)} kept change(s), "
            "oldest first; each diff is against its parent's code.",
            "",
        ]
    for s in steps:
        score = "not completed" if s.objective is None else f"{metric} {s.objective:.6g} (n={s.n})"
        lines += [f"### {s.trial_id} (generation {s.generation}, {s.source or '?'}): {score}", ""]
        if s.hypothesis:
            lines += [f"> {' '.join(s.hypothesis.split())}", ""]
        lines += [f"- params: {_params_text(s.params)}", f"- parent: {s.parent or 'the base code'}", ""]
        if s.diff:
            lines += ["```diff", s.diff.rstrip("\n"), "```", ""]
    return lines


def _cost_section(c: Compute, llm: Usage) -> list[str]:
    lines = ["## Compute and LLM usage", ""]
    if c.gpu_trials:
        models = ", ".join(f"{name} ×{n}" for name, n in c.gpu_models.items())
        lines.append(f"- GPU-hours: {c.gpu_hours:.3g} over {c.gpu_trials} trial(s) ({models})")
    if c.cpu_trials:
        lines.append(f"- CPU-hours: {c.cpu_hours:.3g} over {c.cpu_trials} trial(s) (CPUs allotted × time)")
    if c.unknown_trials:
        lines.append(
            f"- {c.unknown_hours:.3g} h over {c.unknown_trials} trial(s) without a record of their resources"
        )
    lines.append(f"- trials' own time, all attempts added up: {c.trial_hours:.3g} h")
    if llm.round_trips:
        cost = f"cost ~{llm.cost:.4f}" if llm.cost else "cost not priced ([planner] price_*_per_mtok)"
        lines.append(
            f"- LLM: {llm.round_trips} round trip(s) with {', '.join(llm.models) or '?'}, "
            f"{llm.failed} failed; tokens in {llm.tokens_in:,}, out {llm.tokens_out:,}; {cost}"
        )
    else:
        lines.append("- LLM: none (no llm.jsonl: the campaign was planned without an LLM)")
    return [*lines, ""]


def _failures_section(df: pl.DataFrame) -> list[str]:
    failed = df.filter(pl.col("state") != "completed")
    if not failed.height:
        return []
    reasons = (
        failed.with_columns(pl.col("reason").fill_null("").str.slice(0, 120))
        .group_by("state", "reason")
        .len()
        .sort("len", descending=True)
        .head(10)
    )
    return ["## What did not complete", "", frame_markdown(reasons)]


# ------------------------------------------------------------------------------- report.html

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:13px}
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd}
th{border-bottom:2px solid #444;text-align:left}td{font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:1rem 0}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:12px}
blockquote{color:#555;border-left:3px solid #ccc;margin-left:0;padding-left:1rem}
.add{color:#116329;background:#e6ffec}.del{color:#82071e;background:#ffebe9}nav{font-size:13px}
"""


def report_html(markdown_text: str, images: Mapping[str, bytes], title: str) -> str:
    """``report.md`` as one standalone HTML page: every image whose source is a key of
    ``images`` embedded as a data URI (an image not given is dropped, its alt text kept),
    every heading given an id and listed in a table of contents, raw HTML in the markdown
    escaped, diff lines coloured."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    body = re.sub(r'<img src="([^"]*)" alt="([^"]*)"\s*/?>', lambda m: _embed(m, images), body)
    toc: list[tuple[int, str, str]] = []
    body = re.sub(r"<h([23])>(.*?)</h\1>", lambda m: _anchor(m, toc), body)
    body = re.sub(r'<code class="language-diff">(.*?)</code>', _color_diff, body, flags=re.S)
    nav = "".join(
        f'<li style="margin-left:{(level - 2) * 1.2}rem"><a href="#{hid}">{text}</a></li>'
        for level, hid, text in toc
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<nav><ul>{nav}</ul></nav>\n{body}</body></html>\n"
    )


def _embed(m: re.Match[str], images: Mapping[str, bytes]) -> str:
    src, alt = html.unescape(m.group(1)), m.group(2)
    data = images.get(src)
    if data is None:
        return f"<em>[{alt}]</em>"
    kind = "svg+xml" if src.endswith(".svg") else "png"
    return f'<img src="data:image/{kind};base64,{base64.b64encode(data).decode()}" alt="{alt}">'


def _anchor(m: re.Match[str], toc: list[tuple[int, str, str]]) -> str:
    level, inner = int(m.group(1)), m.group(2)
    slug = (
        re.sub(r"[^a-z0-9]+", "-", re.sub(r"<[^>]+>", "", html.unescape(inner)).lower()).strip("-")
        or "section"
    )
    used = {hid for _, hid, _ in toc}
    hid, k = slug, 2
    while hid in used:
        hid, k = f"{slug}-{k}", k + 1
    toc.append((level, hid, re.sub(r"<[^>]+>", "", inner)))
    return f'<h{level} id="{hid}">{inner}</h{level}>'


def _color_diff(m: re.Match[str]) -> str:
    out = []
    for line in m.group(1).split("\n"):
        if line.startswith("+") and not line.startswith("+++"):
            line = f'<span class="add">{line}</span>'
        elif line.startswith("-") and not line.startswith("---"):
            line = f'<span class="del">{line}</span>'
        out.append(line)
    return '<code class="language-diff">' + "\n".join(out) + "</code>"


# ------------------------------------------------------------------------------- writing it


@dataclass(frozen=True)
class WrittenReport:
    """What :func:`write_report` wrote: report.md, report.html and the figures (PNG + PDF)."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def write_figures(fi: FigureInput, folder: Path, suffixes: Sequence[str] = (".png", ".pdf")) -> list[Path]:
    """Every figure kind that has something to draw, once per suffix, into ``folder``
    (nothing without matplotlib)."""
    if pyplot() is None:
        return []
    out = []
    for kind in KINDS:
        for suffix in suffixes:
            path = make_figure(kind, fi, folder / f"{kind}{suffix}")
            if path is None:
                break
            out.append(path)
    return out


def write_report(results: Path) -> WrittenReport:
    """report.md, report.html and plots/ in the results folder."""
    paths = ResultsPaths(results)
    state = load_state(results)
    spec = spec_of(state)
    df = load_table(paths, state, spec)
    figures = write_figures(FigureInput(df, spec, paths), paths.plots)
    analyses = {}
    for g, rec in state.generations.items():
        if rec.analyzed and paths.analysis(g).exists():
            analyses[g] = paths.analysis(g).read_text(encoding="utf-8")
    pngs = [str(p.relative_to(paths.root)) for p in figures if p.suffix == ".png"]
    text = campaign_report(
        ReportInput(
            state,
            spec,
            df,
            analyses,
            pngs,
            champion_lineage(paths, state, spec),
            compute_used(paths, state),
            llm_used(paths),
        )
    )
    atomic_write_text(paths.report, text)
    images = {rel: (paths.root / rel).read_bytes() for rel in pngs}
    atomic_write_text(paths.report_html, report_html(text, images, f"Campaign report: {spec.name}"))
    return WrittenReport(paths.report, paths.report_html, tuple(figures))
