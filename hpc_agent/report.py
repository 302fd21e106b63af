"""Tables for papers, plots and the campaign report.

Analysis is pure and rendering is separate: :func:`results_table` and :func:`grouped` turn
the trials table into the frame to show (frames in, frames out); the ``render_*`` functions
only format a frame, and are checked against golden files in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent._io import atomic_write_text
from hpc_agent.analysis import parameter_effects
from hpc_agent.errors import UserError
from hpc_agent.metrics import gather_table, write_table
from hpc_agent.paths import ResultsPaths
from hpc_agent.results import load_state, spec_of
from hpc_agent.spec import CampaignSpec
from hpc_agent.state import CampaignState

FORMATS = ("csv", "markdown", "latex", "parquet")


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


RANKED_STATES = ("completed",)  # what a published table ranks unless told otherwise


def results_table(df: pl.DataFrame, spec: CampaignSpec, states: Sequence[str] | None = None) -> pl.DataFrame:
    """The per-trial table to publish, best first, with the columns a reader needs.

    Only completed trials are ranked unless ``states`` says otherwise (``["all"]``: every
    trial): a cancelled, preempted or timed-out trial's partial objective is not a result.
    ``duration_s`` is the time used over all ``attempts``."""
    camp = spec.campaign
    wanted = list(states or RANKED_STATES)
    if "all" not in wanted:
        df = df.filter(pl.col("state").is_in(wanted))
    cols = ["trial_id", "generation", "state", "objective", *spec.space.names]
    if len(camp.seeds) > 1:
        cols.insert(2, "seed")
    cols += [m for m in (camp.metric, *camp.gathered_metrics) if m in df.columns and m not in cols]
    cols += ["duration_s", "attempts", "source"]
    out = df.select([c for c in cols if c in df.columns])
    return out.sort(["objective", "trial_id"], descending=[camp.mode == "max", False], nulls_last=True)


def grouped(df: pl.DataFrame, spec: CampaignSpec, by: Sequence[str]) -> pl.DataFrame:
    """Mean, standard deviation and count of the objective and reported metrics per group
    (``--group-by config_id`` gives mean ± std over seeds)."""
    missing = [b for b in by if b not in df.columns]
    if missing:
        valid = [c for c in df.columns if c not in ("reason", "hypothesis")]
        raise UserError(f"--group-by {missing[0]!r}: no such column", fix=f"use one of: {', '.join(valid)}")
    camp = spec.campaign
    done = df.filter(pl.col("state") == "completed")
    metrics = ["objective", *[m for m in (camp.metric, *camp.gathered_metrics) if m in df.columns]]
    metrics = list(dict.fromkeys(metrics))
    aggs: list[pl.Expr] = [pl.len().alias("n")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std")]
    extra = []
    if "config_id" in by:  # show what the configuration was
        extra = [pl.col(p).first() for p in spec.space.names if p not in by]
    out = done.group_by(list(by)).agg(aggs + extra)
    return out.sort(
        ["objective_mean", *by], descending=[camp.mode == "max"] + [False] * len(by), nulls_last=True
    )


# ------------------------------------------------------------------------------- rendering


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
        return f"{v:.{digits - 1}e}"
    return str(v)


def _cells(df: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted cells; ``x_mean``/``x_std`` pairs become one ``x`` = mean ± std."""
    cols = df.columns
    names: list[str] = []
    getters: list[Any] = []
    skip: set[str] = set()
    for c in cols:
        if c in skip:
            continue
        if c.endswith("_mean") and f"{c[:-5]}_std" in cols:
            base = c[:-5]
            skip.add(f"{base}_std")
            names.append(base)
            getters.append(lambda r, a=c, b=f"{base}_std": _pm(r[a], r[b]))
        else:
            names.append(c)
            getters.append(lambda r, a=c: _fmt(r[a]))
    rows = [[g(r) for g in getters] for r in df.iter_rows(named=True)]
    return names, rows


def _pm(mean: Any, std: Any) -> str:
    if mean is None:
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return _fmt(mean)
    return f"{_fmt(mean)} ± {_fmt(std, 2)}"


def render_markdown(df: pl.DataFrame) -> str:
    """A frame as a Markdown table (numbers right-aligned; ``x_mean``/``x_std`` as ``x`` = mean ±
    std)."""
    names, rows = _cells(df)
    numeric = [df.schema[c].is_numeric() if c in df.schema else True for c in names]
    esc = [[cell.replace("|", "\\|").replace("\n", " ") for cell in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in esc]) for i, n in enumerate(names)]
    head = "| " + " | ".join(n.ljust(w) for n, w in zip(names, widths)) + " |"
    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric))
        + "|"
    )
    body = [
        "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)) + " |"
        for r in esc
    ]
    return "\n".join([head, rule, *body]) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(
    df: pl.DataFrame, caption: str = "", label: str = "", bold_best: str | None = None, mode: str = "min"
) -> str:
    """A booktabs table; the best value of ``bold_best`` in bold."""
    names, rows = _cells(df)
    numeric = [df.schema[c].is_numeric() if c in df.schema else True for c in names]
    best_row = None
    if bold_best and bold_best in df.columns and df.height:
        col = df.get_column(bold_best)
        if col.null_count() < df.height:
            best_row = int((col.arg_min() if mode == "min" else col.arg_max()) or 0)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}",
        r"\toprule",
        " & ".join(latex_escape(n) for n in names) + r" \\",
        r"\midrule",
    ]
    # a mean shows as one "mean ± std" column named after its metric
    bold_names = {bold_best, bold_best.removesuffix("_mean")} if bold_best else set()
    for i, row in enumerate(rows):
        cells = []
        for name, cell in zip(names, row):
            text = latex_escape(cell).replace("±", r"$\pm$")
            if i == best_row and name in bold_names:
                text = r"\textbf{" + text + "}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def export(
    df: pl.DataFrame,
    fmt: str,
    out: Path | None,
    *,
    caption: str = "",
    label: str = "",
    bold_best: str | None = "objective",
    mode: str = "min",
) -> str | None:
    """Render ``df`` as ``fmt``; write it to ``out`` (or return the text for stdout)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise UserError("--format parquet writes a binary file", fix="add -o FILE.parquet")
        df.write_parquet(out)
        return None
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "markdown":
        text = render_markdown(df)
    else:
        bold = (
            bold_best
            if bold_best in df.columns
            else ("objective_mean" if "objective_mean" in df.columns else None)
        )
        text = render_latex(df, caption, label, bold, mode)
    if out is None:
        return text
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return None


# ------------------------------------------------------------------------------- the report


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


def campaign_report(
    state: CampaignState,
    spec: CampaignSpec,
    df: pl.DataFrame,
    analyses: dict[int, str],
    figures: Sequence[str],
) -> str:
    """report.md: what was run, what was found, how it evolved, what failed. Pure."""
    camp = spec.campaign
    lines = _report_head(state, spec, df)
    lines += ["## Best configurations", ""]
    if df.filter(pl.col("state") == "completed").height:
        by = ["config_id"] if len(camp.seeds) > 1 else None
        table = grouped(df, spec, by).head(5) if by else results_table(df, spec, ["completed"]).head(5)
        lines += [render_markdown(table)]
    else:
        lines += ["No trial completed.", ""]
    lines += ["## Progress", "", render_markdown(progress_table(df, camp.mode))]
    for fig in figures:
        lines += [f"![{Path(fig).stem}]({fig})", ""]
    done = df.filter((pl.col("state") == "completed") & pl.col("objective").is_not_null())
    effects = parameter_effects(done, spec.space.names, camp.mode)
    if effects:
        lines += ["## Parameter effects", ""] + [f"- {e}" for e in effects] + [""]
    lines += _failures_section(df)
    if analyses:
        lines += ["## Analyses, generation by generation", ""]
        for g in sorted(analyses):
            # nest the analysis's headings under this section's
            body = "\n".join(
                "#" + ln if ln.startswith("#") else ln for ln in analyses[g].strip().splitlines()
            )
            lines += [body, ""]
    return "\n".join(lines).rstrip() + "\n"


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
    return ["## What did not complete", "", render_markdown(reasons)]


def _pyplot() -> Any:
    """matplotlib's pyplot on a file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_progress(df: pl.DataFrame, spec: CampaignSpec, out: Path) -> Path | None:
    """Objective of every completed trial by trial order, and the best so far."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    camp = spec.campaign
    done = df.filter((pl.col("state") == "completed") & pl.col("objective").is_not_null()).sort("trial_id")
    if done.height == 0:
        return None
    y = done.get_column("objective").to_list()
    gen = done.get_column("generation").to_list()
    best, cur = [], None
    for v in y:
        cur = v if cur is None else (min(cur, v) if camp.mode == "min" else max(cur, v))
        best.append(cur)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    sc = ax.scatter(range(len(y)), y, c=gen, cmap="viridis", s=18, label="trial")
    ax.step(range(len(y)), best, where="post", color="crimson", label="best so far")
    ax.set_xlabel("completed trial (in trial order)")
    ax.set_ylabel(f"{camp.metric} ({camp.objective})")
    ax.set_title(f"{camp.name}: {camp.metric}, {'lower' if camp.mode == 'min' else 'higher'} is better")
    if len(set(gen)) > 1:
        bar = fig.colorbar(sc, ax=ax, label="generation")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_params(df: pl.DataFrame, spec: CampaignSpec, out: Path) -> Path | None:
    """One panel per parameter: its value against the objective."""
    plt = _pyplot()
    if plt is None:
        return None
    done = df.filter((pl.col("state") == "completed") & pl.col("objective").is_not_null())
    names = [n for n in spec.space.names if n in done.columns]
    if done.height == 0 or not names:
        return None
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=110, squeeze=False)
    y = done.get_column("objective").to_list()
    for ax, name in zip(axes.flat, names):
        param = spec.space[name]
        x = done.get_column(name).to_list()
        if param.kind == "choice":
            labels = [str(v) for v in param.values]  # type: ignore[union-attr]
            ax.scatter([labels.index(str(v)) if str(v) in labels else -1 for v in x], y, s=14)
            ax.set_xticks(range(len(labels)), labels)
        else:
            ax.scatter(x, y, s=14)
            if getattr(param, "log", False):
                ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(spec.campaign.metric)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_report(results: Path) -> tuple[Path, list[Path]]:
    """report.md and plots/ in the results folder; returns their paths."""
    paths = ResultsPaths(results)
    state = load_state(results)
    spec = spec_of(state)
    df = load_table(paths, state, spec)
    figures = [
        p
        for p in (
            plot_progress(df, spec, paths.plots / "progress.png"),
            plot_params(df, spec, paths.plots / "params.png"),
        )
        if p is not None
    ]
    analyses = {}
    for g, rec in state.generations.items():
        if rec.analyzed and paths.analysis(g).exists():
            analyses[g] = paths.analysis(g).read_text(encoding="utf-8")
    rel = [str(p.relative_to(paths.root)) for p in figures]
    text = campaign_report(state, spec, df, analyses, rel)
    atomic_write_text(paths.report, text)
    return paths.report, figures
