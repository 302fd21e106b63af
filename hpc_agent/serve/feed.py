"""The campaign as the live page sees it, kept current from the journal's new bytes.

A :class:`Feed` holds one :class:`~hpc_agent.store.state.CampaignState` for every open page. On
each look it asks the journal's size (one ``stat``); only when the journal grew does it read
the new bytes (:meth:`hpc_agent.store.journal.Journal.read_from`) and apply their events, noting
which trials and configurations each event touched at which byte offset. A page asks
:meth:`Feed.delta` for what changed since the offset it last saw: when nothing did, the
answer is a few hundred bytes whatever the campaign's size, so a page open for two days costs
nothing as the campaign grows. The offset is the journal's own, so a page keeps working
across a restart of the server (its ``epoch``, the journal file's identity, says when it must
start again from zero: another journal at the same path).

It reads and never writes: no lock is taken (the journal's readers take none), and nothing
is written into the results folder. What the journal does not hold (which submitted trials
are running, their last logged metric, the driver's liveness, the LLM's last call) is read
from the trial folders and ``llm.jsonl`` for the trials in flight only, at most once a second
however many pages look.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from hpc_agent.job.fileio import tail_bytes
from hpc_agent.job.trial import read_status
from hpc_agent.science.rigor import noise
from hpc_agent.store import events as ev
from hpc_agent.store.journal import Journal
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import driver_info
from hpc_agent.store.state import CampaignState, ConfigResult, TrialRecord, TrialState

FLIGHT_EVERY_S = 1.0  # the trials in flight are read again at most this often
TAIL_BYTES = 64 * 1024  # how far back from a file's end its last line is looked for
LLM_TAIL_BYTES = 4 * 1024 * 1024  # an llm.jsonl record carries its whole prompt


class Feed:
    """One campaign's state for the page, brought up to date on demand (thread-safe)."""

    def __init__(self, results: Path) -> None:
        self.paths = ResultsPaths(Path(results))
        self.journal = Journal(self.paths.journal)
        self.lock = threading.RLock()
        self._gpu: Any = None
        self._spec: tuple[str, Any] = ("", None)
        self._llm: tuple[int, dict[str, Any]] = (-1, {})
        self._reset()

    def _reset(self) -> None:
        self.state = CampaignState()
        self.offset = 0
        self.epoch = self._identity()
        self.error = ""
        self._changes: list[tuple[int, str, str]] = []  # (offset, "trial"|"config", id), in order
        self._open: set[str] = set()  # trials submitted and not ended
        self._kept: list[tuple[float, str]] = []  # (time, config) of each keep verdict
        self._head: tuple[int, dict[str, Any]] = (-1, {})
        self._flight: tuple[float, str, list[dict[str, Any]]] = (0.0, "", [])
        self.cache: dict[str, Any] = {}  # the pages' own (pages.py): the lineage, the analyses

    def _identity(self) -> str:
        try:
            st = self.paths.journal.stat()
        except FileNotFoundError:
            return ""
        return f"{st.st_dev:x}-{st.st_ino:x}"

    # ------------------------------------------------------------------ reading the journal
    def refresh(self) -> None:
        """Apply what the journal gained since the last look (nothing read when its size did
        not change); start again from zero when the file at the path is another journal."""
        with self.lock:
            size = self.journal.size()
            if size == self.offset and self.epoch:
                return
            if size < self.offset or self._identity() != self.epoch:
                self._reset()
            try:
                records, end = self.journal.read_from(self.offset)
            except Exception as e:  # a corrupt line: say so on the page, keep what was read
                self.error = str(e)
                return
            for record, at in zip(records, self._line_ends(self.offset, end)):
                event = ev.parse(record)
                if event is None:
                    self.state.events += 1
                    continue
                self.state.apply(event)
                self._note(event, at)
            self.offset = end

    def _line_ends(self, start: int, end: int) -> list[int]:
        """The offset after each non-blank line between ``start`` and ``end`` (the lines
        ``read_from`` just parsed, one a record): each event is noted at its own offset, so
        that a page that saw part of a batch is sent only the rest."""
        with open(self.paths.journal, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        out, pos = [], start
        for line in data.split(b"\n")[:-1]:
            pos += len(line) + 1
            if line.strip():
                out.append(pos)
        return out

    def _note(self, event: ev.Event, offset: int) -> None:
        """Record which trials and configurations ``event`` changed (at ``offset``)."""
        st = self.state
        trials = list(_touched(event, st))
        configs = {st.trials[t].config_id for t in trials if t in st.trials}
        if isinstance(event, ev.Verdict):
            configs.add(event.config)
            if event.verdict == "keep":
                self._kept.append((event.t, event.config))
        for tid in trials:
            rec = st.trials.get(tid)
            if rec is None:
                continue
            if rec.state is TrialState.SUBMITTED:
                self._open.add(tid)
            else:
                self._open.discard(tid)
            self._changes.append((offset, "trial", tid))
        self._changes += [(offset, "config", c) for c in sorted(configs)]

    # ------------------------------------------------------------------ what a page asks
    def delta(self, since: int = 0, epoch: str = "", flight: str = "") -> dict[str, Any]:
        """What changed after byte ``since`` of the journal (everything when ``since`` is 0
        or ``epoch`` is not this journal's): the head when anything did, the trials and the
        configurations changed, the trials in flight when they differ from those the page
        has (``flight``: the tag it was last sent), and always the driver."""
        self.refresh()
        with self.lock:
            full = since <= 0 or epoch != self.epoch or since > self.offset
            since = 0 if full else since
            out: dict[str, Any] = {
                "epoch": self.epoch,
                "offset": self.offset,
                "full": full,
                "now": round(time.time(), 3),
                "error": self.error,
            }
            if since < self.offset or full:
                trials, configs = self._changed_since(since)
                out["head"] = self.head()
                out["trials"] = [trial_row(self.state.trials[t]) for t in trials]
                out["configs"] = [config_row(c) for c in (self.state.config(c) for c in configs) if c]
            tag, rows = self.flight()
            out["flight_tag"] = tag
            if tag != flight or full:
                out["flight"] = rows
            out["driver"] = driver_info(self.paths)
            return out

    def _changed_since(self, since: int) -> tuple[list[str], list[str]]:
        if since <= 0:
            return list(self.state.trials), [c.config_id for c in self.state.configs()]
        start = bisect.bisect_right(self._changes, (since, "\uffff", ""))
        trials: dict[str, None] = {}
        configs: dict[str, None] = {}
        for _, kind, key in self._changes[start:]:
            (trials if kind == "trial" else configs)[key] = None
        return list(trials), list(configs)

    def head(self) -> dict[str, Any]:
        """The page's head (computed once per journal change): generations, trials by state,
        the champion and its margin, the noise floor, the budget, the planner's last call."""
        with self.lock:
            if self._head[0] == self.offset:
                return self._head[1]
            head = campaign_head(self.state, self._kept, self._budget(), self._llm_last())
            self._head = (self.offset, head)
            return head

    def _llm_last(self) -> dict[str, Any]:
        """The LLM's last exchange (llm.jsonl's last record), read again only when it grew."""
        try:
            size = self.paths.llm_log.stat().st_size
        except FileNotFoundError:
            return {}
        if self._llm[0] != size:
            self._llm = (size, last_json_line(self.paths.llm_log, LLM_TAIL_BYTES))
        return self._llm[1]

    def _budget(self) -> dict[str, Any]:
        """The budget used and its limits ({} when the spec cannot be read by this version)."""
        from hpc_agent.config.spec import journaled_spec
        from hpc_agent.science.budget import GpuMeter, budget_summary

        st = self.state
        if self._spec[0] != st.spec_hash:
            try:  # as journaled, without checks (as hpc-agent status reads it)
                self._spec = (st.spec_hash, journaled_spec(st.spec))
            except (KeyError, TypeError):
                self._spec = (st.spec_hash, None)
        spec = self._spec[1]
        if spec is None:
            return {}
        if self._gpu is None:
            self._gpu = GpuMeter(self.paths)
        return budget_summary(st, spec, self._gpu.hours(st) if spec.stop.max_gpu_hours else 0.0)

    def flight(self) -> tuple[str, list[dict[str, Any]]]:
        """The trials submitted and not ended: job, running or queued (their status file),
        when they started, and the last values they logged (read at most once every
        :data:`FLIGHT_EVERY_S`, whatever the number of pages), with a tag that changes
        when they do."""
        with self.lock:
            at, tag, rows = self._flight
            if time.monotonic() - at < FLIGHT_EVERY_S:
                return tag, rows
            camp = self.state.spec.get("campaign", {})
            metric, hidden = str(camp.get("metric", "")), set(camp.get("holdout_metrics", []) or [])
            rows = [
                flight_row(self.paths, self.state.trials[t], metric, hidden)
                for t in sorted(self._open)
                if t in self.state.trials
            ]
            tag = hashlib.blake2b(json.dumps(rows, sort_keys=True).encode(), digest_size=8).hexdigest()
            self._flight = (time.monotonic(), tag, rows)
            return tag, rows


def _touched(event: ev.Event, st: CampaignState) -> Iterable[str]:
    """The trials an event changes (read from its fields: ``trial``, ``trials``, or the
    submission its ``token`` names)."""
    if isinstance(event, ev.Planned):
        return [p.trial_id for p in event.trials]
    one = getattr(event, "trial", None)
    if isinstance(one, str) and one:
        return [one]
    many = getattr(event, "trials", None)
    if isinstance(many, tuple):
        return [t for t in many if isinstance(t, str)]
    token = getattr(event, "token", None)
    if isinstance(token, str) and token in st.submissions:
        return st.submissions[token].trial_ids
    return []


# ------------------------------------------------------------------------------- rows


def trial_row(t: TrialRecord) -> dict[str, Any]:
    """One trial as the page's tables and plot need it."""
    return {
        "id": t.trial_id,
        "gen": t.generation,
        "config": t.config_id,
        "seed": t.seed,
        "state": t.state.value,
        "objective": _num(t.objective),
        "ended_at": t.ended_at,
        "duration_s": t.total_duration_s,
        "source": t.source,
        "purpose": t.purpose,
        "job_id": t.job_id,
        "attempt": t.attempt,
        "reason": t.reason[:200],
    }


def config_row(c: ConfigResult) -> dict[str, Any]:
    """One configuration as the ledger shows it (held-out metrics are not in it)."""
    return {
        "config": c.config_id,
        "gen": c.generation,
        "source": c.source,
        "objective": _num(c.objective),
        "runs": c.n_completed,
        "verdict": c.verdict or ("pending" if c.pending else ""),
        "improvement": _num(c.improvement),
        "reason": c.verdict_reason,
        "hypothesis": " ".join(c.hypothesis.split())[:300],
        "params": dict(c.params),
        "purpose": c.purpose,
        "trials": list(c.trial_ids),
        "patched": bool(c.patch),
    }


def _num(x: float | None) -> float | None:
    """JSON has no NaN: a non-finite value is sent as null."""
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return float(x)


def flight_row(
    paths: ResultsPaths, t: TrialRecord, metric: str, hidden: Collection[str] = ()
) -> dict[str, Any]:
    """A trial in flight: its job, whether its runner started it (status.json), when, and
    the numbers of the last line of its metrics.jsonl (the held-out metrics, ``hidden``,
    left out)."""
    folder = paths.trial(t.trial_id)
    status = read_status(folder.root) or {}
    running = status.get("state") == "running" and status.get("token") == t.token
    last = last_json_line(folder.metrics)
    started = float(status.get("started_at") or 0) if running else 0.0
    return {
        "id": t.trial_id,
        "gen": t.generation,
        "job_id": t.job_id or status.get("job_id"),
        "state": "running" if running else "queued",
        "attempt": t.attempt,
        "started_at": started or None,
        "last": {
            k: v
            for k, v in last.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in hidden
        },
        "metric": metric,
        "host": status.get("host"),
    }


def last_json_line(path: Path, max_bytes: int = TAIL_BYTES) -> dict[str, Any]:
    """The last complete JSON object of a JSONL file, reading only its last ``max_bytes``
    ({} if none)."""
    tail = tail_bytes(path, max_bytes)
    for raw in reversed(tail[0].split(b"\n") if tail else []):
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return {}


# ------------------------------------------------------------------------------- the head


def campaign_head(
    st: CampaignState,
    kept: list[tuple[float, str]],
    budget: Mapping[str, Any],
    llm_last: Mapping[str, Any],
) -> dict[str, Any]:
    """The page's head, from the state, the keep verdicts in order, the budget and the LLM
    log's last record. Pure."""
    camp = st.spec.get("campaign", {})
    mode = str(camp.get("mode", "min"))
    champ = st.champion(mode)
    verdicts = {"keep": 0, "discard": 0, "crash": 0}
    for v in st.verdicts.values():
        if v.get("verdict") in verdicts:
            verdicts[str(v["verdict"])] += 1
    floor = noise([c for c in st.configs_with_values(2) if not c.purpose])
    return {
        "name": st.name,
        "metric": str(camp.get("metric", "")),
        "mode": mode,
        "goal": str(camp.get("goal", "")).strip().splitlines()[0][:300] if camp.get("goal") else "",
        "schedule": str(camp.get("schedule", "sync")),
        "holdout": list(camp.get("holdout_metrics", []) or []),
        "generations": {
            "planned": len(st.generations),
            "done": st.completed_generations(),
            "target": int(camp.get("generations", 0) or 0),
        },
        "counts": st.counts(),
        "champion": _champion(st, champ, floor.sigma),
        "champions": [_kept(st, t, cid) for t, cid in kept],
        "noise": {"sigma": floor.sigma, "n": floor.n, "from": floor.how, "text": floor.describe()},
        "verdicts": verdicts,
        "budget": dict(budget),
        "planner": _planner(st, llm_last),
        "stopped": st.stopped,
        "stopped_detail": st.stopped_detail,
        "cancelled": st.cancelled,
        "last_run_end": st.last_run_end,
        "runs": st.runs,
        "started_at": st.started_at,
        "analyzed": [g for g, r in st.generations.items() if r.analyzed],
    }


def _champion(st: CampaignState, c: ConfigResult | None, sigma: float | None) -> dict[str, Any] | None:
    """The champion, with its margin: what it gained over the champion it replaced (its
    verdict's improvement), also in units of the noise floor."""
    if c is None:
        return None
    margin = _num(c.improvement)
    return {
        "config": c.config_id,
        "objective": _num(c.objective),
        "runs": c.n_completed,
        "trial": c.trial_ids[0] if c.trial_ids else None,
        "gen": c.generation,
        "margin": margin,
        "margin_sigma": round(margin / sigma, 2) if margin is not None and sigma else None,
        "hypothesis": " ".join(c.hypothesis.split())[:300],
        "params": dict(c.params),
    }


def _kept(st: CampaignState, t: float, cid: str) -> dict[str, Any]:
    c = st.config(cid)
    return {"t": t, "config": cid, "objective": _num(c.objective) if c else None}


def _planner(st: CampaignState, last: Mapping[str, Any]) -> dict[str, Any]:
    """The planner of the last generation planned, how long it took, and the LLM's last
    exchange when there is one."""
    out: dict[str, Any] = {}
    if st.generations:
        g = st.generations[max(st.generations)]
        out = {"generation": g.generation, "name": g.planner, "note": g.note, "seconds": g.planning_s}
        out["planning"] = g.planning and not g.planned
        out["at"] = g.planned_at or g.planning_at
    if last:
        out["llm"] = {
            k: last.get(k)
            for k in ("model", "purpose", "generation", "tokens_in", "tokens_out", "latency_s", "t")
            if k in last
        }
        if last.get("error"):
            out["llm"]["error"] = str(last["error"])[:300]
    return out
