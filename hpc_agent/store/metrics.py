"""The metrics schema and the Polars gather.

Every trial appends JSON lines to its ``metrics.jsonl``: ``{"step": 3, "val_loss": 0.41, ...}``.
The gather reads them all with one lazy ``scan_ndjson`` and an explicit schema: ``step`` plus
the campaign's metric and its ``report_metrics``, all Float64 (other keys are ignored, so the
user may log anything else too). Two things a real cluster produces make this harder than it
looks, and both are handled here, not left to crash the driver:

* a trial killed mid-write leaves a torn last line, which Polars refuses even with
  ``ignore_errors``: torn files are cut at their last newline, in memory;
* one bad file (a non-numeric value, ``NaN`` written by ``json.dumps``) fails the whole scan:
  the file list is bisected until the bad files are isolated, and those are read line by line
  with the standard json module, which also reports *what* is wrong with them.

The outcome of a trial is decided by :func:`outcome`: a trial that exited 0 but never logged
its metric is ``failed`` with the reason "metric 'val_loss' never logged".
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.job.fileio import read_bytes
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState, TrialRecord

FilePath = str | os.PathLike[str]  # a metrics file: the driver's hot paths pass strings

TRIAL_COL = "trial_id"
_PATH_COL = "__path"


@dataclass(frozen=True)
class MetricSummary:
    """What one trial's metrics.jsonl says, reduced to what the campaign needs."""

    trial_id: str
    n_lines: int = 0
    last_step: int | None = None
    objective: float | None = None  # last (or best) value of the campaign's metric
    last: Mapping[str, float | None] | None = None  # last value of every schema metric
    error: str = ""  # why the file could not be read cleanly (non-numeric value, bad line)


def schema(metric: str, report_metrics: Sequence[str] = ()) -> dict[str, pl.DataType]:
    """The columns the gather reads: ``step`` and the metrics, all Float64."""
    out: dict[str, pl.DataType] = {"step": pl.Float64()}
    for m in (metric, *report_metrics):
        out[m] = pl.Float64()
    return out


def scan(
    files: Mapping[str, FilePath], columns: Mapping[str, pl.DataType]
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Read the metrics of many trials: one frame (``trial_id`` + schema columns, in file
    order) and the errors of the files that could not be read as they are."""
    clean: list[tuple[str, FilePath]] = []
    frames: list[pl.DataFrame] = []
    errors: dict[str, str] = {}
    for tid, path in files.items():
        size, whole = _tail(path)
        if size == 0:
            continue  # never logged anything
        if whole:
            clean.append((tid, path))
        else:
            df, err = _read_torn(tid, path, columns)
            if df is not None:
                frames.append(df)
            if err:
                errors[tid] = err
    if clean:
        df, errs = _collect(clean, columns)
        frames.append(df)
        errors.update(errs)
    if not frames:
        return _empty(columns), errors
    return pl.concat(frames, how="vertical_relaxed"), errors


def _empty(columns: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema={TRIAL_COL: pl.String(), **columns})


def _tail(path: FilePath) -> tuple[int, bool]:
    """(size, whether it ends with a newline) of a metrics file, in one open: (0, False)
    when it does not exist (never logged anything)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0, False
    try:
        return _tail_of(fd)
    finally:
        os.close(fd)


def _tail_of(fd: int) -> tuple[int, bool]:
    size = os.fstat(fd).st_size
    return size, size > 0 and os.pread(fd, 1, size - 1) == b"\n"


def _tails(files: Mapping[str, FilePath]) -> tuple[dict[str, tuple[int, bool]], dict[str, bytes] | None]:
    """Each file's (size, whether it ends with a newline), in one open each; and while they
    add up to at most SMALL_BATCH_BYTES, their contents too (then read whole: the json
    module's path), else None (the Polars scan's)."""
    tails: dict[str, tuple[int, bool]] = {}
    small: dict[str, bytes] | None = {}
    total = 0
    for tid, path in files.items():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            tails[tid] = (0, False)
            continue
        try:
            if small is not None:
                data = read_bytes(path, fd)
                total += len(data)
                tails[tid] = (len(data), data.endswith(b"\n"))
                small[tid] = data
                if total > SMALL_BATCH_BYTES:
                    small = None
            else:
                tails[tid] = _tail_of(fd)
        finally:
            os.close(fd)
    return tails, small


def _collect(
    files: list[tuple[str, FilePath]], columns: Mapping[str, pl.DataType]
) -> tuple[pl.DataFrame, dict[str, str]]:
    """One lazy scan over all files; on failure, bisect to find the files that break it."""
    try:
        by_path = {str(p): tid for tid, p in files}
        lf = pl.scan_ndjson(list(by_path), schema=dict(columns), include_file_paths=_PATH_COL)
        df = lf.collect()
        ids = df.get_column(_PATH_COL).replace_strict(by_path, return_dtype=pl.String())
        return df.drop(_PATH_COL).insert_column(0, ids.alias(TRIAL_COL)), {}
    except pl.exceptions.PolarsError:
        if len(files) == 1:
            tid, path = files[0]
            df, problem = _read_slowly(tid, read_bytes(path), columns)
            return df, ({tid: problem} if problem else {})
        mid = len(files) // 2
        a, ea = _collect(files[:mid], columns)
        b, eb = _collect(files[mid:], columns)
        return pl.concat([a, b], how="vertical_relaxed"), {**ea, **eb}


def _read_torn(
    tid: str, path: FilePath, columns: Mapping[str, pl.DataType]
) -> tuple[pl.DataFrame | None, str]:
    data = read_bytes(path)
    cut = data.rfind(b"\n") + 1  # drop the torn tail: that line was never finished
    if cut == 0:
        return None, ""
    try:
        df = pl.read_ndjson(io.BytesIO(data[:cut]), schema=dict(columns))
        return df.insert_column(0, pl.lit(tid, dtype=pl.String()).alias(TRIAL_COL)), ""
    except pl.exceptions.PolarsError:
        return _read_slowly(tid, data[:cut], columns)


def _read_slowly(tid: str, data: bytes, columns: Mapping[str, pl.DataType]) -> tuple[pl.DataFrame, str]:
    """Line by line with the json module: keeps what is valid, says what is not."""
    parsed, problem = parse_lines(data, tuple(columns))
    rows = [{TRIAL_COL: tid, **row} for row in parsed]
    df = pl.DataFrame(rows, schema={TRIAL_COL: pl.String(), **columns}) if rows else _empty(columns)
    return df, problem


def parse_lines(data: bytes, columns: Sequence[str]) -> tuple[list[dict[str, float | None]], str]:
    """A metrics file's rows (the schema's columns, as floats or None) and what is wrong
    with it ("": nothing). A torn last line is skipped: that line was never finished."""
    rows: list[dict[str, float | None]] = []
    problems: list[str] = []
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            if n == len(lines):
                continue  # a torn last line
            problems.append(f"line {n} is not JSON: {raw[:60]!r}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {n} is not a JSON object")
            continue
        row: dict[str, float | None] = {}
        for key in columns:
            value = obj.get(key)
            if value is None:
                row[key] = None
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = float(value)
            else:
                row[key] = None
                problems.append(f"{key}={value!r} on line {n} is not a number")
        rows.append(row)
    return rows, "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")


SMALL_BATCH_BYTES = 256 * 1024  # below this, the json module summarizes faster than a Polars scan


def summarize(
    files: Mapping[str, FilePath],
    metric: str,
    mode: str,
    objective: str = "last",
    report_metrics: Sequence[str] = (),
) -> dict[str, MetricSummary]:
    """Per trial: lines logged, last step, objective (``last`` or ``best``), last values.

    One lazy Polars scan for everything, aggregated per file before the file is mapped to its
    trial; a handful of small files (what the driver concludes between two polls) is read with
    the json module instead, with the same result."""
    cols = schema(metric, report_metrics)
    tails, small = _tails(files)
    if small is not None:
        out = {
            tid: _summary_of_rows(tid, *parse_lines(data, tuple(cols)), metric, mode, objective)
            for tid, data in small.items()
            if data
        }
    else:
        logged = {t: files[t] for t, (size, _) in tails.items() if size}
        clean = {t for t, (size, newline) in tails.items() if newline}
        out = _summarize_scan(logged, clean, cols, metric, mode, objective)
    for tid in files:
        if tid not in out:
            out[tid] = MetricSummary(trial_id=tid)
    return out


def _summary_of_rows(
    tid: str, rows: list[dict[str, float | None]], error: str, metric: str, mode: str, objective: str
) -> MetricSummary:
    """What :func:`summarize` says of one trial's parsed rows (the same as the Polars path)."""

    def last(col: str) -> float | None:
        return next((r[col] for r in reversed(rows) if r[col] is not None), None)

    if objective == "last":
        obj = last(metric)
    else:
        finite = [v for r in rows if (v := r[metric]) is not None and not math.isnan(v)]
        obj = (min(finite) if mode == "min" else max(finite)) if finite else None
    step = last("step")
    if not rows:
        return MetricSummary(trial_id=tid, error=error)
    return MetricSummary(
        trial_id=tid,
        n_lines=len(rows),
        last_step=int(step) if step is not None and math.isfinite(step) else None,
        objective=obj,
        last={c: last(c) for c in rows[0] if c != "step"},
        error=error,
    )


def _aggregations(cols: Mapping[str, pl.DataType], metric: str, mode: str, objective: str) -> list[pl.Expr]:
    m = pl.col(metric)
    finite = m.filter(m.is_not_nan())
    best = finite.min() if mode == "min" else finite.max()
    return [
        pl.len().alias("__n"),
        pl.col("step").drop_nulls().last().alias("__step"),
        (m.drop_nulls().last() if objective == "last" else best).alias("__objective"),
        *[pl.col(c).drop_nulls().last().alias(c) for c in cols if c != "step"],
    ]


def _summarize_scan(
    files: Mapping[str, FilePath],
    whole: set[str],
    cols: Mapping[str, pl.DataType],
    metric: str,
    mode: str,
    objective: str,
) -> dict[str, MetricSummary]:
    """The Polars path: clean files (``whole``: their last line is whole) in ONE lazy scan
    grouped by file (the file -> trial mapping is done on the group keys, not on every row);
    torn or broken files apart."""
    aggs = _aggregations(cols, metric, mode, objective)
    clean = {tid: p for tid, p in files.items() if tid in whole}
    frames: list[pl.DataFrame] = []
    errors: dict[str, str] = {}
    by_path = {str(p): tid for tid, p in clean.items()}
    if clean:
        try:
            lf = pl.scan_ndjson(list(by_path), schema=dict(cols), include_file_paths=_PATH_COL)
            grouped = lf.group_by(_PATH_COL, maintain_order=True).agg(aggs).collect()
            frames.append(grouped.rename({_PATH_COL: TRIAL_COL}))  # paths: mapped to trials below
        except pl.exceptions.PolarsError:  # a bad file: find it by bisection, read it slowly
            df, errs = _collect(list(clean.items()), cols)
            frames.append(df.group_by(TRIAL_COL, maintain_order=True).agg(aggs))
            errors.update(errs)
    others = {tid: p for tid, p in files.items() if tid not in clean}
    if others:
        df, errs = scan(others, cols)
        frames.append(df.group_by(TRIAL_COL, maintain_order=True).agg(aggs))
        errors.update(errs)
    out: dict[str, MetricSummary] = {}
    names = [c for c in cols if c != "step"]
    for frame in frames:  # column by column: a thousand rows' worth of Python, not a frame's
        keys, n, steps, objectives, *values = (
            frame.get_column(c).to_list() for c in (TRIAL_COL, "__n", "__step", "__objective", *names)
        )
        for i, key in enumerate(keys):
            tid = by_path.get(key, key)  # a path of the one scan, else already a trial id
            step = steps[i]
            out[tid] = MetricSummary(
                trial_id=tid,
                n_lines=int(n[i]),
                last_step=int(step) if step is not None and math.isfinite(step) else None,
                objective=objectives[i],
                last={c: v[i] for c, v in zip(names, values)},
                error=errors.get(tid, ""),
            )
    for tid, err in errors.items():
        if tid not in out:
            out[tid] = MetricSummary(trial_id=tid, error=err)
    return out


def outcome(state: str, summary: MetricSummary | None, metric: str) -> tuple[str, float | None, str]:
    """The final (state, objective, reason) of a trial whose runner reported ``state``.

    Only a completed run is judged on its metric; a failed or timed-out one keeps its
    objective when it logged one (it is shown, but a planner does not count it as a success).
    """
    obj = summary.objective if summary else None
    err = summary.error if summary else ""
    if state != "completed":
        return state, obj if obj is not None and math.isfinite(obj) else None, ""
    if obj is None:
        if err:
            return "failed", None, f"metric {metric!r} unreadable: {err}"
        return "failed", None, f"metric {metric!r} never logged"
    if not math.isfinite(obj):
        return "failed", None, f"metric {metric!r} is {obj} at its last log (the run diverged)"
    return "completed", float(obj), ""


# ------------------------------------------------------------------------------- the table

CORE_COLUMNS = (
    "trial_id",
    "generation",
    "config_id",
    "seed",
    "state",
    "objective",
    "reason",
    "source",
    "parent",
    "purpose",
    "of",
    "hypothesis",
    "attempts",
    "job_id",
    "exit_code",
    "duration_s",
    "steps",
)


# The trials table's own columns and their types (parameters and metrics follow them).
TRIAL_COLUMN_TYPES: dict[str, pl.DataType] = {
    "trial_id": pl.String(),
    "generation": pl.Int64(),
    "config_id": pl.String(),
    "seed": pl.Int64(),
    "state": pl.String(),
    "objective": pl.Float64(),
    "reason": pl.String(),
    "source": pl.String(),
    "parent": pl.String(),
    "purpose": pl.String(),
    "of": pl.String(),
    "hypothesis": pl.String(),
    "attempts": pl.Int64(),
    "job_id": pl.String(),
    "exit_code": pl.Int64(),
    "duration_s": pl.Float64(),
    "steps": pl.Int64(),
}


def trials_table(
    records: Iterable[TrialRecord],
    param_names: Sequence[str],
    summaries: Mapping[str, MetricSummary],
    metrics: Sequence[str],
) -> pl.DataFrame:
    """One row per trial: the journal's record, its parameters and its last metric values."""
    rows = []
    for r in records:
        s = summaries.get(r.trial_id)
        row: dict[str, Any] = {
            "trial_id": r.trial_id,
            "generation": r.generation,
            "config_id": r.config_id,
            "seed": r.seed,
            "state": r.state.value,
            "objective": r.objective,
            "reason": r.reason,
            "source": r.source,
            "parent": r.parent,
            "purpose": r.purpose,  # "" (the search), control, confirm, rerun
            "of": r.of,  # the configuration a confirm or rerun trial ran again
            "hypothesis": r.hypothesis,
            "attempts": r.attempt,
            "job_id": r.job_id,
            "exit_code": r.exit_code,
            "duration_s": r.total_duration_s,  # over every attempt
            "steps": s.n_lines if s else 0,
        }
        for p in param_names:
            row[p] = r.params.get(p)
        for m in metrics:
            row[m] = s.last.get(m) if s and s.last else None
        rows.append(row)
    col_types: dict[str, pl.DataType] = dict(TRIAL_COLUMN_TYPES)
    for m in metrics:
        col_types[m] = pl.Float64()
    if not rows:
        return pl.DataFrame(schema={**col_types, **{p: pl.String() for p in param_names}})
    df = pl.DataFrame(rows, schema_overrides=col_types, infer_schema_length=None, strict=False)
    ordered = [c for c in CORE_COLUMNS if c in df.columns]
    ordered += [p for p in param_names if p not in ordered]
    ordered += [m for m in metrics if m not in ordered]
    return df.select(ordered)


class EndedRows:
    """The trials table's rows of trials that ended for good, kept between gathers (their
    records and metric files no longer change), so that a gather builds only the new rows."""

    def __init__(self) -> None:
        self.frame: pl.DataFrame | None = None
        self.records: dict[str, TrialRecord] = {}  # trial id -> the record its row was made of

    def table(
        self,
        trials: Sequence[TrialRecord],
        known: Mapping[str, MetricSummary],
        make: Callable[[Sequence[TrialRecord]], pl.DataFrame],
    ) -> pl.DataFrame:
        """Every trial's row: the kept ones, the new ended ones (kept from now on) and the
        open ones, in ``trials``' order (by trial id)."""
        if any(self.records.get(t.trial_id, t) is not t for t in trials):
            self.frame, self.records = None, {}  # a kept record changed (never, but not trusted)
        new = [t for t in trials if t.trial_id not in self.records and t.trial_id in known]
        if new:
            part = make(new)
            self.frame = part if self.frame is None else pl.concat([self.frame, part], how="diagonal_relaxed")
            self.records.update((t.trial_id, t) for t in new)
        rest = [t for t in trials if t.trial_id not in self.records]
        if self.frame is None:
            return make(rest)
        df = pl.concat([self.frame, make(rest)], how="diagonal_relaxed") if rest else self.frame
        return df.sort("trial_id")


def gather_table(
    paths: ResultsPaths,
    state: CampaignState,
    spec: CampaignSpec,
    known: Mapping[str, MetricSummary] | None = None,
    ended: EndedRows | None = None,
) -> pl.DataFrame:
    """The trials table: every trial's metrics (one lazy scan) joined with the journal's
    record. ``known``: summaries of finished trials already read (their files no longer
    change), so that a campaign's bookkeeping does not grow with its history; ``ended``:
    their rows, kept by the caller between gathers."""
    camp = spec.campaign
    known = known or {}
    trials = sorted(state.trials.values(), key=lambda t: t.trial_id)
    files = {t.trial_id: paths.trial(t.trial_id).metrics for t in trials if t.trial_id not in known}
    fresh = summarize(files, camp.metric, camp.mode, camp.objective, camp.gathered_metrics)
    # not merged: that would copy the whole history (read only: a ChainMap writes to its first map)
    summaries = ChainMap(fresh, known)  # type: ignore[arg-type]
    metrics = (camp.metric, *camp.gathered_metrics)

    def make(records: Sequence[TrialRecord]) -> pl.DataFrame:
        return trials_table(records, spec.space.names, summaries, metrics)

    if ended is None:
        return make(trials)
    return ended.table(trials, known, make)


def write_table(df: pl.DataFrame, path: Path) -> None:
    """Write the trials table atomically (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)
