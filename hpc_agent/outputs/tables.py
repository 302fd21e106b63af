"""Tables a paper can take as they are: which rows and columns (pure), then the rendering.

:func:`paper_table` turns the trials table (one row per trial, :func:`hpc_agent.store.metrics.trials_table`)
into a :class:`PaperTable`: the rows (completed trials unless told otherwise, best first; one
row per configuration with mean, standard deviation and ``n`` when a campaign runs several
seeds, or per ``--group-by`` group), the columns to show in order (by default the parameters
and the metrics: what fits a paper's column), and for each metric which way is better. The
frame keeps raw numbers; :func:`render` formats it as CSV (raw numbers), Markdown or LaTeX
(booktabs; significant digits; the best value of each metric column in bold; caption, label;
special characters escaped). Checked against golden files (tests/golden/tables/).

A column is a name in ``--columns``: a parameter, a metric, or one of :data:`BOOKKEEPING`.
Another source of columns (a reproduction's value, a confirmation) joins its frame on
``trial_id`` or ``config_id`` and declares its columns the same way (:class:`Column`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent import __version__
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.errors import UserError
from hpc_agent.job.fileio import atomic_write_text

FORMATS = ("csv", "markdown", "latex", "parquet")
RANKED_STATES = ("completed",)  # what a published table ranks unless told otherwise
DEFAULT_DIGITS = 4
BOOKKEEPING = (
    "trial_id",
    "trials",
    "generation",
    "config_id",
    "seed",
    "seeds",
    "n",
    "state",
    "source",
    "attempts",
    "duration_s",
    "steps",
    "objective",
)
# metric names whose better direction is known without being told (NAME:min|max overrides)
_HIGHER_IS_BETTER = re.compile(r"(acc|accuracy|f1|auc|auroc|bleu|rouge|score|precision|recall|map|iou|r2)")
_LOWER_IS_BETTER = re.compile(r"(loss|err|error|perplexity|ppl|mse|mae|rmse|wer|cer|nll|bpb|bpc|time)")


@dataclass(frozen=True)
class Column:
    """One shown column: its name (in ``--columns`` and the header), the frame columns it
    reads (one; or a mean and a standard deviation), and for a metric which way is better
    (``min``/``max``: its best value is set in bold; None: not judged)."""

    name: str
    source: tuple[str, ...]
    best: str | None = None
    numeric: bool = True

    @property
    def paired(self) -> bool:
        """Does the column show ``mean ± std``?"""
        return len(self.source) == 2


@dataclass(frozen=True)
class PaperTable:
    """Rows (``frame``, raw numbers, in order) and the columns to show, in order; ``note``
    says what the rows are (a LaTeX comment, a Markdown line)."""

    frame: pl.DataFrame
    columns: tuple[Column, ...]
    aggregated: bool = False
    note: str = ""


# ------------------------------------------------------------------------------- the rows


def parse_metrics(values: Sequence[str], spec: CampaignSpec) -> list[tuple[str, str | None]]:
    """``--metrics`` (``val_loss``, ``val_acc:max``, comma lists allowed) as (name, better);
    the default: the campaign's metric (its objective: the value the campaign ranked by), its
    ``report_metrics`` and its held-out metrics (never shown to a planner, reported here). A
    metric's direction: as told, else the campaign's mode for its own metric and
    ``objective``, else guessed from its name (accuracy-like: max; loss-like: min), else None
    (not set in bold)."""
    camp = spec.campaign
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if not names:
        first = camp.metric if camp.objective == "last" else "objective"
        names = list(dict.fromkeys([first, *camp.gathered_metrics]))
    out = []
    for item in names:
        name, _, better = item.partition(":")
        if better and better not in ("min", "max"):
            raise UserError(
                f"--metrics {item!r}: expected NAME or NAME:min or NAME:max",
                fix=f"e.g. --metrics {name}:max",
            )
        out.append((name, better or metric_direction(name, spec)))
    return out


def metric_direction(name: str, spec: CampaignSpec) -> str | None:
    """Which way ``name`` is better: the campaign's mode for its metric and ``objective``,
    else a guess from the name (None when the name says nothing)."""
    if name in (spec.campaign.metric, "objective"):
        return spec.campaign.mode
    low = name.lower()
    if _HIGHER_IS_BETTER.search(low):
        return "max"
    if _LOWER_IS_BETTER.search(low):
        return "min"
    return None


def paper_table(
    df: pl.DataFrame,
    spec: CampaignSpec,
    *,
    columns: Sequence[str] = (),
    metrics: Sequence[str] = (),
    group_by: Sequence[str] = (),
    per_trial: bool = False,
    states: Sequence[str] = (),
    top: int | None = None,
) -> PaperTable:
    """The rows and columns of a published table (see the module docstring). Rows: trials in
    ``states`` (default completed; ``all``: every one), one per configuration with mean ± std
    and ``n`` when the campaign has several seeds (unless ``per_trial``), or one per
    ``group_by`` group, best first by the campaign's objective; ``top`` keeps the first N.
    UserError naming the bad value for an unknown column, metric or group."""
    wanted = list(states or RANKED_STATES)
    if "all" not in wanted:
        df = df.filter(pl.col("state").is_in(wanted))
    df, again = _search_and_reruns(df, spec)
    mets = parse_metrics(metrics, spec)
    _check_metrics(df, mets, spec)
    by = list(group_by) or (["config_id"] if len(spec.campaign.seeds) > 1 and not per_trial else [])
    missing = [b for b in by if b not in df.columns]
    if missing:
        valid = [c for c in df.columns if c not in ("reason", "hypothesis")]
        raise UserError(f"--group-by {missing[0]!r}: no such column", fix=f"use one of: {', '.join(valid)}")
    frame = _aggregate(df, spec, by, [m for m, _ in mets]) if by else _per_trial(df, spec)
    if "config_id" in frame.columns and again.height:
        frame = frame.join(again, on="config_id", how="left")
    avail = _available(frame, spec, mets, aggregated=bool(by))
    shown = [
        c for c in RERUN_COLUMNS if c in frame.columns and frame.get_column(c).null_count() < frame.height
    ]
    chosen = _choose(columns, avail, _default_columns(spec, by, mets) + shown)
    if top:
        frame = frame.head(top)
    note = _note(spec, by, wanted)
    return PaperTable(frame, tuple(chosen), bool(by), note)


RERUN_COLUMNS = ("confirmed", "confirmed_n", "reproduced", "reproduced_delta")


def _search_and_reruns(df: pl.DataFrame, spec: CampaignSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The search's trials (controls included), and per configuration what running it again
    gave: ``confirmed`` (mean of its confirmation runs, ``[confirm]``) with their number, and
    ``reproduced`` (``hpc-agent rerun``) with ``reproduced_delta``, its difference from the
    configuration's own mean."""
    if "purpose" not in df.columns:
        return df, pl.DataFrame(schema={"config_id": pl.String()})
    purpose = pl.col("purpose").fill_null("")
    search = df.filter(~purpose.is_in(["confirm", "rerun"]))
    metric = pl.col("objective")
    again = df.filter(purpose.is_in(["confirm", "rerun"]) & pl.col("of").is_not_null())
    if not again.height:
        return search, pl.DataFrame(schema={"config_id": pl.String()})
    confirmed = (
        again.filter(purpose == "confirm")
        .group_by("of")
        .agg(metric.mean().alias("confirmed"), pl.len().cast(pl.Int64).alias("confirmed_n"))
    )
    reproduced = again.filter(purpose == "rerun").group_by("of").agg(metric.mean().alias("reproduced"))
    own = search.group_by("config_id").agg(metric.mean().alias("__own"))
    out = (
        own.join(confirmed.rename({"of": "config_id"}), on="config_id", how="left")
        .join(reproduced.rename({"of": "config_id"}), on="config_id", how="left")
        .with_columns((pl.col("reproduced") - pl.col("__own")).alias("reproduced_delta"))
        .drop("__own")
    )
    return search, out


def _check_metrics(df: pl.DataFrame, mets: Sequence[tuple[str, str | None]], spec: CampaignSpec) -> None:
    known = metric_columns(df, spec)
    for name, _ in mets:
        if name not in known:
            raise UserError(
                f"--metrics {name!r}: no such metric in this campaign's table",
                fix=f"use one of: {', '.join(known)} (other logged keys: add them to "
                "[campaign] report_metrics or holdout_metrics before the run)",
            )


def metric_columns(df: pl.DataFrame, spec: CampaignSpec) -> list[str]:
    """The numeric columns of the trials table that are metrics: ``objective``, the
    campaign's metric, its report metrics and its held-out metrics (those gathered)."""
    camp = spec.campaign
    return [m for m in dict.fromkeys(["objective", camp.metric, *camp.gathered_metrics]) if m in df.columns]


def _sort(frame: pl.DataFrame, key: str, spec: CampaignSpec, tie: str) -> pl.DataFrame:
    return frame.sort([key, tie], descending=[spec.campaign.mode == "max", False], nulls_last=True)


def _per_trial(df: pl.DataFrame, spec: CampaignSpec) -> pl.DataFrame:
    return _sort(df, "objective", spec, "trial_id")


def _aggregate(
    df: pl.DataFrame, spec: CampaignSpec, by: Sequence[str], metrics: Sequence[str]
) -> pl.DataFrame:
    """One row per group: n, mean and std of each metric (and of the objective, to rank by),
    the trials and seeds it holds, and (grouped by configuration) its parameters."""
    stats = list(dict.fromkeys(["objective", *metrics]))
    aggs: list[pl.Expr] = [pl.len().alias("n")]
    for m in stats:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std")]
    aggs += [
        pl.col("trial_id").sort().str.join(", ").alias("trials"),
        pl.col("seed").sort().cast(pl.String).str.join(", ").alias("seeds"),
        pl.col("generation").min().alias("generation"),
    ]
    if "config_id" in by:  # show what the configuration was
        aggs += [pl.col(p).first() for p in spec.space.names if p not in by and p in df.columns]
        aggs += [pl.col(c).first() for c in ("source",) if c in df.columns]
    out = df.group_by(list(by)).agg([a for a in aggs if a.meta.output_name() not in by])
    return _sort(out, "objective_mean", spec, by[0])


def _available(
    frame: pl.DataFrame, spec: CampaignSpec, mets: Sequence[tuple[str, str | None]], aggregated: bool
) -> dict[str, Column]:
    """Every column this table could show, by name."""
    out: dict[str, Column] = {}
    directions = dict(mets)
    for name in frame.columns:
        if name.endswith(("_mean", "_std")):
            continue
        numeric = frame.schema[name].is_numeric()
        out[name] = Column(name, (name,), directions.get(name) if numeric else None, numeric)
    if aggregated:
        for name in [c[:-5] for c in frame.columns if c.endswith("_mean")]:
            better = directions.get(name, metric_direction(name, spec))
            out[name] = Column(name, (f"{name}_mean", f"{name}_std"), better)
    else:
        for name, better in mets:
            out[name] = Column(name, (name,), better)
    return {k: v for k, v in out.items() if k not in ("reason", "hypothesis", "parent", "job_id")}


def _default_columns(
    spec: CampaignSpec, by: Sequence[str], mets: Sequence[tuple[str, str | None]]
) -> list[str]:
    """A paper's column: the parameters (or the groups) and the metrics, and n over seeds."""
    head = list(by) if by and "config_id" not in by else list(spec.space.names)
    return head + [m for m, _ in mets] + (["n"] if by else [])


def _choose(columns: Sequence[str], avail: dict[str, Column], default: Sequence[str]) -> list[Column]:
    names = [c.strip() for value in columns for c in value.split(",") if c.strip()] or list(default)
    unknown = [n for n in names if n not in avail]
    if unknown and columns:
        raise UserError(
            f"--columns {unknown[0]!r}: no such column in this table",
            fix=f"choose among: {', '.join(avail)}",
        )
    return [avail[n] for n in dict.fromkeys(names) if n in avail]


def _note(spec: CampaignSpec, by: Sequence[str], states: Sequence[str]) -> str:
    rows = "completed trials" if list(states) == ["completed"] else f"trials ({', '.join(states)})"
    if not by:
        return f"one row per trial; {rows} only" if "all" not in states else "one row per trial"
    group = "configuration" if list(by) == ["config_id"] else ", ".join(by)
    return f"mean ± std over the runs (n) of each {group}; {rows}"


# ------------------------------------------------------------------------------- numbers


def significant(value: float, digits: int) -> tuple[str, int]:
    """``value`` to ``digits`` significant digits, and the decimals used (-1: scientific
    notation, for magnitudes under 1e-3 or from 1e6)."""
    if value == 0 or not math.isfinite(value):
        return (f"{value:.{max(digits - 1, 0)}f}" if value == 0 else str(value)), max(digits - 1, 0)
    exp = math.floor(math.log10(abs(value)))
    if exp < -3 or exp >= 6:
        return f"{value:.{max(digits - 1, 0)}e}", -1
    decimals = max(0, digits - 1 - exp)
    return f"{value:.{decimals}f}", decimals


def _std_text(std: float, decimals: int) -> str:
    """A standard deviation at the mean's decimals, or at one significant digit when that
    would show it as zero."""
    if decimals >= 0 and (std == 0 or round(std, decimals) != 0):
        return f"{std:.{decimals}f}"
    return significant(std, 1)[0]


@dataclass(frozen=True)
class Cell:
    """A formatted cell: its text pieces (a value; or a mean and a std) and whether bold."""

    value: str
    std: str = ""
    bold: bool = False


def cells(table: PaperTable, digits: int = DEFAULT_DIGITS) -> list[list[Cell]]:
    """Every row's cells, formatted to ``digits`` significant digits, the best value of each
    metric column (ties included) marked bold."""
    best = {c.name: _best_value(table.frame, c) for c in table.columns if c.best}
    rows = []
    for r in table.frame.iter_rows(named=True):
        row = []
        for c in table.columns:
            value = r.get(c.source[0])
            bold = c.name in best and best[c.name] is not None and value == best[c.name]
            row.append(_cell(value, r.get(c.source[1]) if c.paired else None, digits, bold))
        rows.append(row)
    return rows


def _best_value(frame: pl.DataFrame, c: Column) -> Any:
    col = frame.get_column(c.source[0])
    if not col.dtype.is_numeric():
        return None
    col = col.drop_nulls().drop_nans() if col.dtype.is_float() else col.drop_nulls()
    if col.len() == 0:
        return None
    return col.min() if c.best == "min" else col.max()


def _cell(value: Any, std: Any, digits: int, bold: bool) -> Cell:
    if value is None:
        return Cell("")
    if isinstance(value, bool) or not isinstance(value, float):
        return Cell(str(value), bold=bold)
    text, decimals = significant(value, digits)
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return Cell(text, bold=bold)
    return Cell(text, _std_text(float(std), decimals), bold)


# ------------------------------------------------------------------------------- rendering


def render(
    table: PaperTable,
    fmt: str,
    *,
    digits: int = DEFAULT_DIGITS,
    caption: str = "",
    label: str = "",
    source: str = "",
) -> str:
    """``table`` as ``csv`` (raw numbers; a mean ± std column as ``x_mean``, ``x_std``),
    ``markdown`` or ``latex``. ``source`` (the results folder) is named in LaTeX's header
    comment."""
    if fmt == "csv":
        return csv_frame(table).write_csv()
    if fmt == "markdown":
        return render_markdown(table, digits=digits, caption=caption, label=label)
    if fmt == "latex":
        return render_latex(table, digits=digits, caption=caption, label=label, source=source)
    raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def csv_frame(table: PaperTable) -> pl.DataFrame:
    """The shown columns with raw numbers (for CSV and Parquet): ``x_mean`` and ``x_std`` for a
    mean ± std column."""
    cols = [s for c in table.columns for s in c.source]
    return table.frame.select(list(dict.fromkeys(cols)))


def render_markdown(
    table: PaperTable, *, digits: int = DEFAULT_DIGITS, caption: str = "", label: str = ""
) -> str:
    """A pipe table (numbers right-aligned, the best of each metric in bold), then a
    ``Table: caption {#label}`` line (pandoc's caption syntax) when a caption is given."""
    names = [c.name for c in table.columns]
    rows = [[_md_cell(cell) for cell in row] for row in cells(table, digits)]
    out = _pipe_table(names, rows, [c.numeric for c in table.columns])
    if caption or label:
        out += "\n" + ("Table: " + caption).rstrip() + (f" {{#{label}}}" if label else "") + "\n"
    return out


def _md_cell(cell: Cell) -> str:
    text = f"{cell.value} ± {cell.std}" if cell.std else cell.value
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if cell.bold and text else text


def _pipe_table(names: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    head = "| " + " | ".join(n.ljust(w) for n, w in zip(names, widths)) + " |"
    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric))
        + "|"
    )
    body = [
        "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)) + " |"
        for r in rows
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
    "±": r"$\pm$",
}
_LABEL = re.compile(r"^[A-Za-z0-9:._/+-]+$")
LATEX_PREAMBLE = r"\usepackage{booktabs}"


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (for text mode)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_number(text: str) -> str:
    """A formatted number in LaTeX: scientific notation as ``$1.2\\times10^{-5}$``."""
    m = re.fullmatch(r"(-?[0-9.]+)e([+-])0*(\d+)", text)
    if m:
        sign = "-" if m.group(2) == "-" else ""
        return f"${m.group(1)}\\times10^{{{sign}{m.group(3)}}}$"
    return latex_escape(text)


def render_latex(
    table: PaperTable, *, digits: int = DEFAULT_DIGITS, caption: str = "", label: str = "", source: str = ""
) -> str:
    """A booktabs table for ``\\input{}``: a comment naming the preamble it needs and what its
    rows are, the caption and label above the tabular, the best value of each metric column
    in bold. UserError for a label LaTeX would not accept."""
    if label and not _LABEL.match(label):
        raise UserError(
            f"--label {label!r}: a LaTeX label of letters, digits and : . _ / + -",
            fix="e.g. --label tab:results",
        )
    align = "".join("r" if c.numeric else "l" for c in table.columns)
    lines = [
        f"% Generated by hpc-agent {__version__}" + (f" from {source}" if source else ""),
        f"% Needs in the preamble: {LATEX_PREAMBLE}",
        f"% Rows: {table.note}" if table.note else "",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_escape(caption) + "}" if caption else "",
        r"\label{" + label + "}" if label else "",
        r"\begin{tabular}{" + align + "}",
        r"\toprule",
        " & ".join(latex_escape(c.name) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for row in cells(table, digits):
        lines.append(" & ".join(_latex_cell(cell) for cell in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(line for line in lines if line) + "\n"


def _latex_cell(cell: Cell) -> str:
    text = _latex_number(cell.value)
    if cell.std:
        text += r" $\pm$ " + _latex_number(cell.std)
    return r"\textbf{" + text + "}" if cell.bold and text else text


# ------------------------------------------------------------------------------- plain frames


def frame_markdown(df: pl.DataFrame, digits: int = DEFAULT_DIGITS) -> str:
    """Any frame as a pipe table (numbers right-aligned, floats to ``digits`` significant
    digits): the report's progress and failure tables."""
    rows = [
        ["" if v is None else significant(v, digits)[0] if isinstance(v, float) else str(v) for v in r]
        for r in df.iter_rows()
    ]
    rows = [[c.replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    return _pipe_table(df.columns, rows, [df.schema[c].is_numeric() for c in df.columns])


def export(
    table: PaperTable,
    fmt: str,
    out: Path | None,
    *,
    digits: int = DEFAULT_DIGITS,
    caption: str = "",
    label: str = "",
    source: str = "",
) -> str | None:
    """Render ``table`` as ``fmt`` and write it to ``out`` (atomically), or return the text
    for stdout; Parquet (raw numbers, like CSV) needs ``out``."""
    if fmt == "parquet":
        if out is None:
            raise UserError("--format parquet writes a binary file", fix="add -o FILE.parquet")
        out.parent.mkdir(parents=True, exist_ok=True)
        csv_frame(table).write_parquet(out)
        return None
    text = render(table, fmt, digits=digits, caption=caption, label=label, source=source)
    if out is None:
        return text
    atomic_write_text(out, text)
    return None
