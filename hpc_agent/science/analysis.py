"""The deterministic analysis of a generation, written when no LLM is in the loop (and as the
LLM's fallback): best so far and its change, failures and their reasons, and which
parameters seem to matter. Pure: a frame in, markdown out.

Parameter effects are deliberately simple and explainable: Spearman's rank correlation
between a numeric parameter and the objective, and the mean objective per value of a choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.store.state import CampaignState


@dataclass(frozen=True)
class AnalysisContext:
    """What a planner's ``analyze`` is given: the finished generation, the campaign's state,
    its trials table (every trial so far, one row each) and the earlier analyses; and the
    generation its proposals would be for (a planner that plans while it analyzes, as the
    LLM's does), with the budget left."""

    spec: CampaignSpec
    generation: int
    state: CampaignState
    table: pl.DataFrame
    analyses: tuple[tuple[int, str], ...] = ()  # (generation, analysis.md), oldest first
    results_dir: Path | None = None
    plan_for: int | None = None  # the generation the analysis may propose for (None: no more search)
    generations_left: int = 0  # exploration generations left, ``plan_for``'s included
    budget: str = ""  # the budget used and left, in words (hpc_agent.science.budget.describe)


def deterministic_analysis(ctx: AnalysisContext) -> str:
    """Generation ``ctx.generation`` in markdown: its states, its best and the change against
    the best before it, its failures, and the parameter effects over every completed trial."""
    spec = ctx.spec
    metric, mode = spec.campaign.metric, spec.campaign.mode
    df = ctx.table
    g = ctx.generation
    gen = df.filter(pl.col("generation") == g)
    done_all = df.filter((pl.col("state") == "completed") & pl.col("objective").is_not_null())
    before = done_all.filter(pl.col("generation") < g)
    now = done_all.filter(pl.col("generation") == g)
    better = "lower" if mode == "min" else "higher"
    lines = [f"# Generation {g}: analysis", ""]
    counts = gen.group_by("state").len().sort("state")
    states = ", ".join(f"{r['len']} {r['state']}" for r in counts.iter_rows(named=True)) or "no trials"
    kind = spec.campaign.objective
    lines.append(f"{gen.height} trials: {states}. Objective: {metric} ({better} is better, {kind} value).")
    lines.append("")

    def best_of(frame: pl.DataFrame) -> dict[str, Any] | None:
        if frame.height == 0:
            return None
        frame = frame.sort("objective", descending=(mode == "max"), nulls_last=True)
        return frame.row(0, named=True)

    b_now, b_before = best_of(now), best_of(before)
    if b_now is None:
        lines.append("No trial of this generation completed with a valid objective.")
    else:
        where = f"{b_now['trial_id']}, {_params(b_now, spec)}"
        lines.append(f"Best of this generation: **{b_now['objective']:.6g}** ({where}).")
        if b_before is not None:
            delta = b_now["objective"] - b_before["objective"]
            improved = delta < 0 if mode == "min" else delta > 0
            verdict = "improved on" if improved else "did not beat"
            prev = f"{b_before['objective']:.6g} ({b_before['trial_id']})"
            lines.append(f"It {verdict} the previous best {prev} by {abs(delta):.4g}.")
    champion = best_of(done_all)
    if champion is not None:
        lines.append(f"Best so far: **{champion['objective']:.6g}** ({champion['trial_id']}).")
    lines.append("")

    failed = gen.filter(pl.col("state") != "completed")
    if failed.height:
        lines.append("## Failures")
        for r in failed.head(10).iter_rows(named=True):
            lines.append(f"- {r['trial_id']} {r['state']}: {r['reason'] or 'no reason recorded'}")
        if failed.height > 10:
            lines.append(f"- ... and {failed.height - 10} more")
        lines.append("")

    effects = parameter_effects(done_all, spec.space.names, mode)
    if effects:
        lines.append(f"## Parameter effects (all {done_all.height} completed trials)")
        lines.extend(f"- {e}" for e in effects)
        lines.append("")
    return "\n".join(lines)


def _params(row: dict[str, Any], spec: Any) -> str:
    return ", ".join(f"{p}={_fmt(row.get(p))}" for p in spec.space.names)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def parameter_effects(done: pl.DataFrame, names: Any, mode: str) -> list[str]:
    """One line per parameter that seems to matter (Spearman's ρ for numbers, the mean
    objective per value for choices); nothing below three completed trials."""
    if done.height < 3:
        return []
    out = []
    for name in names:
        if name not in done.columns:
            continue
        col = done.get_column(name)
        if col.dtype.is_numeric():
            pair = done.select(pl.col(name).cast(pl.Float64), pl.col("objective")).drop_nulls()
            if pair.height < 3 or pair.get_column(name).n_unique() < 2:
                continue
            rho = pair.select(pl.corr(name, "objective", method="spearman")).item()
            if rho is None or (isinstance(rho, float) and math.isnan(rho)):
                continue
            good = (rho < 0) if mode == "min" else (rho > 0)
            direction = "higher" if good else "lower"
            strength = "strong" if abs(rho) >= 0.6 else "moderate" if abs(rho) >= 0.3 else "weak"
            out.append(f"{name}: {strength} effect (Spearman ρ = {rho:+.2f}); {direction} values did better")
        else:
            means = (
                done.group_by(pl.col(name).cast(pl.String))
                .agg(pl.col("objective").mean().alias("mean"), pl.len().alias("n"))
                .sort("mean", descending=(mode == "max"))
            )
            if means.height < 2:
                continue
            parts = ", ".join(f"{r[name]}: {r['mean']:.4g} (n={r['n']})" for r in means.iter_rows(named=True))
            out.append(f"{name}: mean objective by value, best first: {parts}")
    return out
