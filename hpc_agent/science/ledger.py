"""The ledger: every configuration the search ran, with its verdict.

In the spirit of autoresearch's ``results.tsv``: one row a configuration, in the order it was
planned: its generation, its metric (mean over its runs, and how many), the verdict of the
promotion rule (``keep``, ``discard``, ``crash``: :mod:`hpc_agent.science.rigor`; ``candidate`` while
its replicate confirms it, ``pending`` while it waits for the noise estimate, ``running``
before it finished), its improvement over the champion of its moment, why, and its hypothesis
in one line. A configuration that
was confirmed (``[confirm]``) carries its confirmed mean and runs, and its held-out metrics
(``[campaign] holdout_metrics``) there: the numbers a paper may report. ``hpc-agent export
--format ledger`` writes it as TSV; the report shows it.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.science.rigor import confirmations, waiting
from hpc_agent.store.state import CampaignState

HYPOTHESIS_CHARS = 100


def ledger_table(state: CampaignState, spec: CampaignSpec, trials: pl.DataFrame) -> pl.DataFrame:
    """The ledger as a frame (``trials``: the trials table, for the held-out metrics)."""
    holdout = [m for m in spec.campaign.holdout_metrics if m in trials.columns]
    confirmed = confirmations(state)
    waits = waiting(state, spec)
    rows = []
    for c in state.configs():
        if c.purpose:
            continue
        conf = confirmed.get(c.config_id)
        verdict, reason = waits.get(c.config_id, (c.verdict, c.verdict_reason))
        row: dict[str, Any] = {
            "config": c.config_id,
            "generation": c.generation,
            "source": c.source,
            spec.campaign.metric: c.objective,
            "runs": c.n_completed,
            "verdict": verdict or ("running" if c.pending else ""),
            "improvement": c.improvement,
            "reason": reason,
            "hypothesis": _one_line(c.hypothesis),
            "confirmed": conf.objective if conf else None,
            "confirmed_runs": conf.n_completed if conf else None,
        }
        for m in holdout:
            row[m] = _mean_of(trials, conf.trial_ids, m) if conf else None
        rows.append(row)
    schema: dict[str, Any] = {
        "config": pl.String(),
        "generation": pl.Int64(),
        "source": pl.String(),
        spec.campaign.metric: pl.Float64(),
        "runs": pl.Int64(),
        "verdict": pl.String(),
        "improvement": pl.Float64(),
        "reason": pl.String(),
        "hypothesis": pl.String(),
        "confirmed": pl.Float64(),
        "confirmed_runs": pl.Int64(),
        **{m: pl.Float64() for m in holdout},
    }
    return pl.DataFrame(rows, schema=schema)


def render_ledger(df: pl.DataFrame) -> str:
    """The ledger as TSV (numbers with 6 significant digits, empty cells for none)."""
    lines = ["\t".join(df.columns)]
    for row in df.iter_rows():
        lines.append("\t".join(_cell(v) for v in row))
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= HYPOTHESIS_CHARS else text[: HYPOTHESIS_CHARS - 1] + "…"


def _mean_of(trials: pl.DataFrame, trial_ids: tuple[str, ...], metric: str) -> float | None:
    done = trials.filter(pl.col("trial_id").is_in(list(trial_ids)) & (pl.col("state") == "completed"))
    values = [v for v in done.get_column(metric).to_list() if v is not None]
    return sum(values) / len(values) if values else None
