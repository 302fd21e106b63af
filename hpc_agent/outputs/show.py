"""``hpc-agent show RESULTS TRIAL``: everything about one trial, on one screen.

What it was (params, hypothesis, who proposed it, its parent and its code change against
the base), how it went (state, attempts and requeues, exit code, reason, time over all
attempts), what it logged (a summary of each metric and its learning curve as a text
sparkline), where it ran (the code's git commit for the driver run that submitted it, each
attempt's host, job, versions and GPUs: :mod:`hpc_agent.job.provenance`) and where its logs are.

:func:`trial_view` gathers (reads the journal and the trial's folder); :func:`render_trial`
is pure text, 80 columns wide. Neither Polars nor matplotlib is loaded.
"""

from __future__ import annotations

import bisect
import json
import math
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_agent.job.provenance import read_trial_provenance
from hpc_agent.job.trial import read_status
from hpc_agent.outputs.status import job_log
from hpc_agent.science.provenance import read_run_provenance
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state, resolve_trial
from hpc_agent.store.state import CampaignState, TrialRecord

WIDTH = 80
SPARK = "▁▂▃▄▅▆▇█"
MAX_METRIC_LINES = 1_000_000  # a learning curve is read whole up to this many lines


@dataclass(frozen=True)
class TrialView:
    """One trial, gathered: the journal's record, the campaign's objective, its generation's
    planner, its folder's files (status, patch, metrics over steps, provenance), the
    provenance of the driver run that submitted it, and its log files."""

    record: TrialRecord
    folder: Path
    metric: str
    mode: str
    planner: str = ""
    is_best: bool = False
    status: Mapping[str, Any] | None = None
    patch: str = ""
    curves: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    metric_problem: str = ""
    attempts: Sequence[Mapping[str, Any]] = ()
    run: int | None = None
    run_record: Mapping[str, Any] | None = None
    logs: Sequence[tuple[str, str]] = ()
    verdict: str = ""  # its configuration's verdict under the promotion rule, and why
    again: Sequence[str] = ()  # its configuration run again: confirmations, reproductions


def trial_view(results: Path, text: str) -> TrialView:
    """Everything ``show`` prints about trial ``text`` (see :func:`resolve_trial`)."""
    state = load_state(results)
    tid = resolve_trial(state, text, str(state.spec.get("campaign", {}).get("mode", "min")))
    return view_of(ResultsPaths(results), state, tid)


def view_of(paths: ResultsPaths, state: CampaignState, tid: str) -> TrialView:
    """Trial ``tid`` of a campaign whose state is already at hand (``hpc-agent serve``
    keeps one): its record and its folder's files, gathered."""
    camp = state.spec.get("campaign", {})
    metric, mode = str(camp.get("metric", "")), str(camp.get("mode", "min"))
    t = state.trials[tid]
    tp = paths.trial(tid)
    curves, problem = read_curves(tp.metrics)
    run = _run_of(state, t)
    best = state.best(mode)
    configs = state.configs()
    own = next((c for c in configs if c.config_id == t.config_id), None)
    again = [
        f"{c.purpose} {c.config_id}: "
        + (
            f"{metric} {c.objective:.6g} over {c.n_completed} run(s)"
            if c.objective is not None
            else "no result yet"
        )
        + (f" at {c.budget_multiplier:g}x the budget" if c.budget_multiplier != 1 else "")
        for c in configs
        if c.of == t.config_id
    ]
    logs = [("stdout", str(tp.stdout)), ("stderr", str(tp.stderr))]
    slurm_log = job_log(paths, t.generation, t.token, t.job_id)
    if slurm_log:
        logs.append(("job log", slurm_log))
    return TrialView(
        record=t,
        folder=tp.root,
        metric=metric,
        mode=mode,
        planner=state.generations[t.generation].planner if t.generation in state.generations else "",
        is_best=best is not None and best.trial_id == tid,
        status=read_status(tp.root),
        patch=_read(tp.patch),
        curves=curves,
        metric_problem=problem,
        attempts=read_trial_provenance(tp.root),
        run=run,
        run_record=read_run_provenance(paths).get(run) if run else None,
        logs=logs,
        verdict=f"{own.verdict}: {own.verdict_reason}" if own and own.verdict else "",
        again=again,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return ""


def _run_of(state: CampaignState, t: TrialRecord) -> int | None:
    """The driver run (1, 2, ...) that made the trial's current submission."""
    sub = state.submissions.get(t.token or "")
    if sub is None or not state.run_times:
        return None
    return bisect.bisect_right(list(state.run_times), sub.at) or None


def read_curves(path: Path) -> tuple[dict[str, list[tuple[float, float]]], str]:
    """Every numeric key of a metrics.jsonl over its steps (the line number where no ``step``
    was logged; the first :data:`MAX_METRIC_LINES` lines), and what was wrong with the file
    ("" when nothing)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return {}, ""
    out: dict[str, list[tuple[float, float]]] = {}
    bad = 0
    for n, line in enumerate(text.splitlines()[:MAX_METRIC_LINES]):
        try:
            obj = json.loads(line) if line.strip() else {}
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            bad += 1
            continue
        step = float(obj["step"]) if _number(obj.get("step")) else float(n)
        for key, value in obj.items():
            if key != "step" and _number(value):
                out.setdefault(key, []).append((step, float(value)))
    return out, (f"{bad} line(s) not JSON objects" if bad else "")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------------- rendering


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """``values`` as a line of block characters, at most ``width`` wide (each character the
    mean of its share of the values); a non-finite value is a space."""
    if not values:
        return ""
    if len(values) > width:
        buckets = [values[i * len(values) // width : (i + 1) * len(values) // width] for i in range(width)]
        finite = [[v for v in b if math.isfinite(v)] for b in buckets]
        values = [sum(b) / len(b) if b else math.nan for b in finite]
    seen = [v for v in values if math.isfinite(v)]
    if not seen:
        return " " * len(values)
    lo, hi = min(seen), max(seen)
    top = len(SPARK) - 1
    return "".join(
        " " if not math.isfinite(v) else SPARK[round((v - lo) / (hi - lo) * top) if hi > lo else top // 2]
        for v in values
    )


def _g(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _field(name: str, *texts: str) -> list[str]:
    """``name`` in a 14-column margin, each of ``texts`` on its own lines, wrapped at words
    to the width."""
    lines = [
        line
        for text in texts
        for line in textwrap.wrap(
            " ".join(str(text).split()), WIDTH - 14, break_long_words=False, break_on_hyphens=False
        )
    ]
    return [f"{name if i == 0 else '':<14}{line}" for i, line in enumerate(lines or [""])]


def render_trial(v: TrialView) -> str:
    """The text ``hpc-agent show`` prints (80 columns)."""
    t = v.record
    head = f"trial {t.trial_id} · generation {t.generation} · {t.state.value}"
    if t.objective is not None:
        head += f" · {v.metric} {t.objective:.6g}" + (" (the best trial)" if v.is_best else "")
    lines = [head, str(v.folder), ""]
    lines += [*_what(v), "", *_how(v), "", *_metrics(v), "", *_code(v), *_provenance(v), ""]
    lines += ["logs"] + [f"  {name:<12}{path}" for name, path in v.logs]
    return "\n".join(lines).rstrip() + "\n"


def _what(v: TrialView) -> list[str]:
    t = v.record
    who = t.source or "?"
    if v.planner and v.planner != t.source:
        who += f" (generation {t.generation} planned by {v.planner})"
    params = ", ".join(f"{k}={_g(val)}" for k, val in t.params.items())
    out = _field("proposed by", who) + _field("hypothesis", t.hypothesis or "-")
    out += _field("params", f"{params}, seed={t.seed}" if params else f"seed={t.seed}")
    out += _field("config", t.config_id + (f" ({t.purpose} of {t.of})" if t.of else ""))
    if v.verdict:
        out += _field("verdict", v.verdict)
    for line in v.again:
        out += _field("run again", line)
    out += _field("parent", f"{t.parent} (this trial edits its code)" if t.parent else "none (the base code)")
    return out


def _how(v: TrialView) -> list[str]:
    t = v.record
    requeues = t.attempt - 1 if t.attempt else 0
    attempts = f"{t.attempt} attempt(s)"
    if requeues:
        attempts += (
            f": {requeues} requeue(s), {t.progress_requeues} after progress, "
            f"{t.retries} counted against max_retries"
        )
    total = f"{t.total_duration_s:.1f} s over all attempts" if t.total_duration_s else "no time recorded"
    out = _field("state", f"{t.state.value}; {attempts}") + _field("time", total)
    if t.exit_code is not None:
        out += _field("exit code", str(t.exit_code))
    if t.reason:
        out += _field("reason", t.reason)
    if t.job_id:
        out += _field("job", t.job_id)
    return out


def _metrics(v: TrialView) -> list[str]:
    if not v.curves:
        return ["metrics       none logged" + (f" ({v.metric_problem})" if v.metric_problem else "")]
    n = max(len(c) for c in v.curves.values())
    out = [f"metrics ({n} line(s); ▁ low, █ high)" + (f"; {v.metric_problem}" if v.metric_problem else "")]
    for name in sorted(v.curves, key=lambda k: (k != v.metric, k)):
        pts = v.curves[name]
        ys = [y for _, y in pts]
        out.append(f"  {name}  {sparkline(ys, WIDTH - 6 - len(name))}")
        out.append(f"    first {_g(ys[0])}, last {_g(ys[-1])} (step {_g(pts[-1][0])})")
        finite = [(s, y) for s, y in pts if math.isfinite(y)]
        if finite:
            (s_lo, lo), (s_hi, hi) = min(finite, key=lambda p: p[1]), max(finite, key=lambda p: p[1])
            out.append(f"    min {_g(lo)} at step {_g(s_lo)}, max {_g(hi)} at step {_g(s_hi)}")
    return out


def _code(v: TrialView) -> list[str]:
    if not v.patch.strip():
        return ["code          the base code (no patch.diff)", ""]
    added = sum(1 for ln in v.patch.splitlines() if ln.startswith("+") and not ln.startswith("+++"))
    removed = sum(1 for ln in v.patch.splitlines() if ln.startswith("-") and not ln.startswith("---"))
    files = sum(1 for ln in v.patch.splitlines() if ln.startswith("+++ "))
    out = [f"code          patch.diff against the base: {files} file(s), +{added} -{removed}"]
    return out + ["  " + ln for ln in v.patch.rstrip("\n").splitlines()] + [""]


def _provenance(v: TrialView) -> list[str]:
    out = ["provenance"]
    r = v.run_record
    if r is None:
        out += _field("  code", "not recorded (run by an older hpc-agent, or not yet submitted)")
    elif r.get("git") != "ok":
        out += _field("  code", f"{r.get('workdir')}: git {r.get('git')} (no commit recorded)")
    else:
        dirty = f"dirty, {len(r.get('changed') or [])} file(s) changed" if r.get("dirty") else "clean"
        where = f"driver run {v.run}"
        diff = f"diff: {r['diff_file']} ({where})" if r.get("diff_file") else where
        out += _field("  code", f"git {str(r.get('commit'))[:12]} ({r.get('branch')}), {dirty}", diff)
    if not v.attempts:
        out += _field("  attempts", "no provenance.json (run by an older hpc-agent, or never started)")
    for a in v.attempts:
        out += _field(f"  attempt {a.get('attempt')}", *_attempt_text(a))
    return out


def _attempt_text(a: Mapping[str, Any]) -> tuple[str, str, str]:
    """One attempt's provenance as three lines: when, where and which job; the versions; the
    hardware."""
    gpus = a.get("gpus")
    if gpus:
        names = sorted({g.get("name", "?") for g in gpus})
        gpu = f"{len(gpus)}x {', '.join(names)} (driver {gpus[0].get('driver', '?')})"
    elif a.get("gpu_count"):
        gpu = f"{a['gpu_count']} GPU(s) ({a.get('gpu_note') or 'model unknown'})"
    else:
        gpu = "no GPU"
    slurm = a.get("slurm") or {}
    job = f"SLURM job {slurm.get('job_id')}" if slurm else f"job {a.get('job_id')}"
    if slurm.get("array_job_id"):
        job += f" (array {slurm['array_job_id']}_{slurm.get('array_task_id')})"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(a.get("started_at") or 0)))
    torch = "no torch"
    if a.get("torch"):
        torch = f"torch {a['torch']}" + (f" (CUDA {a['torch_cuda']})" if a.get("torch_cuda") else "")
    return (
        f"{started} on {a.get('host')}, {job}, seed {a.get('seed')}",
        f"Python {a.get('python')}, {torch}",
        f"{gpu}; {a.get('cpus')} CPU(s)",
    )
