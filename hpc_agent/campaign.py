"""The generation loop: propose, prepare, submit, wait, gather, analyze.

Every phase first asks the journal whether it already happened, and records an event before
and after its side effect. Running ``hpc-agent run`` again on a results folder, at any moment
and after any failure, continues where the last driver stopped:

* a generation that was planned is not planned again (the LLM is not asked twice);
* a trial folder is prepared only if its ``launch.json`` is missing;
* a submission recorded as *submitting* but never *submitted* (the driver died inside
  ``sbatch``) is looked up by its token before anything is submitted again;
* a finished trial is never run again: its ``status.json`` is the evidence, and the runner
  itself refuses to re-run it;
* a trial whose job is gone without a final status is ``lost`` and goes back to be
  submitted, with the same trial folder and checkpoint directory, until ``max_retries``.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hpc_agent import __version__
from hpc_agent._io import atomic_write_json, atomic_write_text, read_json
from hpc_agent.errors import CampaignError, UserError
from hpc_agent.executors import SECRET_ENV_VARS, Executor, JobStatus, SubmitError, SubmitRequest
from hpc_agent.journal import FileLock, Journal
from hpc_agent.paths import ResultsPaths, trial_id
from hpc_agent.planners.base import AnalysisContext, Plan, PlanContext, Planner, Proposal, config_key, unique
from hpc_agent.space import Space
from hpc_agent.spec import CampaignSpec, spec_from_dict, to_toml
from hpc_agent.state import CampaignState, TrialRecord, TrialState, replay

DRIVER_LOCK_STALE_S = 900.0  # the driver touches its lock every poll; older than this, it died
GONE_CONFIRMATIONS = 2  # polls that must see a job gone before its trial is declared lost
STATUS_INTERVAL_S = 2.0  # the slowest the trials' status files are read
_TERMINAL_SIGNALS = ("SIGINT", "SIGHUP")  # from a terminal, not a scheduler: not counted as retries


class Reporter(Protocol):
    """What the loop tells the user. The CLI renders it with rich; the library logs it."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None: ...

    def generation_done(self, generation: int, analysis: str) -> None: ...


class SilentReporter:
    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def info(self, message: str) -> None:
        if self.stream:
            print(message, file=self.stream)

    def warn(self, message: str) -> None:
        if self.stream:
            print(f"warning: {message}", file=self.stream)

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        pass

    def generation_done(self, generation: int, analysis: str) -> None:
        pass


@dataclass(frozen=True)
class RunResult:
    status: str  # done | cancelled | exhausted
    results: Path
    generations_done: int
    best: TrialRecord | None
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Trials ran, and not one completed: almost always a broken command or environment."""
        return (
            self.status != "cancelled" and sum(self.counts.values()) > 0 and not self.counts.get("completed")
        )


# ------------------------------------------------------------------------------- opening


def open_results(spec: CampaignSpec, results: Path, force: bool = False) -> tuple[Journal, list[str]]:
    """Check that ``results`` is this campaign's folder (or a new one) and record the spec.

    Returns the journal and messages worth showing (spec changes). Raises UserError when the
    folder belongs to another campaign and ``force`` is not given: nothing is written then.
    """
    paths = ResultsPaths(results)
    journal = Journal(paths.journal)
    messages: list[str] = []
    data = spec.to_dict()
    ident, full = spec.identity_hash(), spec.spec_hash()
    if journal.exists():
        state = replay(journal.iter())
        if state.identity_hash and state.identity_hash != ident:
            changed = _diff_keys(state.spec, data)
            if not force:
                raise UserError(
                    f"{results} belongs to a different campaign spec "
                    f"(changed: {', '.join(changed[:6]) or 'the experiment files'})",
                    fix=f"use another folder (--results DIR), or --force to continue in {results} "
                    "with the new spec (its earlier trials stay in the history)",
                )
            messages.append(f"--force: continuing {results} with a changed spec ({', '.join(changed[:6])})")
            journal.append(
                "spec", name=spec.name, spec=data, spec_hash=full, identity_hash=ident, forced=True
            )
        elif state.spec_hash != full:
            changed = _diff_keys(state.spec, data)
            messages.append(f"spec changed since the last run: {', '.join(changed[:6])}")
            journal.append(
                "spec", name=spec.name, spec=data, spec_hash=full, identity_hash=ident, forced=False
            )
    else:
        if results.exists() and any(p.name not in (".DS_Store",) for p in results.iterdir()) and not force:
            raise UserError(
                f"{results} exists and is not an hpc-agent results folder (no journal.jsonl)",
                fix="choose an empty or new folder with --results DIR, or --force to use it anyway",
            )
        results.mkdir(parents=True, exist_ok=True)
        journal.append("campaign", name=spec.name, spec=data, spec_hash=full, identity_hash=ident)
    atomic_write_text(paths.spec, f"# resolved spec, as run (hpc-agent {__version__})\n" + to_toml(data))
    return journal, messages


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_diff_keys(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} -> {_short(b)}")
    return out


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def load_state(results: Path) -> CampaignState:
    journal = Journal(ResultsPaths(results).journal)
    if not journal.exists():
        raise UserError(
            f"{results} is not a campaign results folder (no journal.jsonl)",
            fix="pass the folder `hpc-agent run` wrote to, e.g. results/<campaign name>",
        )
    return replay(journal.iter())


def spec_of(state: CampaignState) -> CampaignSpec:
    return spec_from_dict(state.spec)


# ------------------------------------------------------------------------------- the loop


class Campaign:
    """One campaign's driver: owns the journal while it runs (one driver per results folder)."""

    def __init__(
        self,
        spec: CampaignSpec,
        results: Path,
        executor: Executor,
        planner: Planner,
        reporter: Reporter | None = None,
        *,
        fallback_planner: Callable[[], Planner] | None = None,
    ) -> None:
        self.spec = spec
        self.paths = ResultsPaths(results.resolve())  # jobs run elsewhere: every path absolute
        self.journal = Journal(self.paths.journal)
        self.executor = executor
        self.planner = planner
        self.reporter: Reporter = reporter or SilentReporter()
        self.fallback_planner = fallback_planner
        self._events: list[dict[str, Any]] = list(self.journal.iter())
        self._state: CampaignState | None = None
        self._journal_size = self._size()
        self._lock = FileLock(self.paths.driver_lock, stale_s=DRIVER_LOCK_STALE_S, timeout_s=0.0)
        self._status_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._gone_seen: dict[str, int] = {}
        self._job_info: dict[str, JobStatus] = {}
        self._secret_env = tuple(dict.fromkeys((*SECRET_ENV_VARS, spec.planner.api_key_env)))

    # ------------------------------------------------------------------ journal + state
    @property
    def state(self) -> CampaignState:
        if self._state is None:
            self._state = replay(self._events)
        return self._state

    def _record(self, event: str, **fields: Any) -> None:
        self._events.append(self.journal.append(event, **fields))
        self._state = None
        self._journal_size = self._size()

    def _record_many(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        if events:
            self._events.extend(self.journal.append_many(events))
            self._state = None
            self._journal_size = self._size()

    def _size(self) -> int:
        try:
            return self.paths.journal.stat().st_size
        except FileNotFoundError:
            return 0

    def _refresh_if_changed(self) -> None:
        """Another process (``hpc-agent cancel``) may append to the journal while we run."""
        if self._size() != self._journal_size:
            self._events = list(self.journal.iter())
            self._state = None
            self._journal_size = self._size()

    # ------------------------------------------------------------------ run
    def run(self, argv: Sequence[str] = ()) -> RunResult:
        self._take_driver_lock()
        try:
            return self._run(argv)
        except KeyboardInterrupt:
            self._record("run_ended", status="interrupted")
            raise
        except BaseException as e:
            self._record("run_ended", status="failed", error=f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            self.executor.close()
            self._lock.release()

    def _take_driver_lock(self) -> None:
        try:
            self._lock.acquire()
        except CampaignError:
            holder = ""
            try:
                holder = self.paths.driver_lock.read_text().strip()
            except OSError:
                pass
            host, _, pid = holder.partition(" ")
            raise UserError(
                f"another hpc-agent driver (pid {pid or '?'} on {host or '?'}) is running this campaign "
                f"({self.paths.root})",
                fix="watch it with `hpc-agent status`, or stop it first; if it is dead, remove "
                f"{self.paths.driver_lock}",
            ) from None

    def _run(self, argv: Sequence[str]) -> RunResult:
        self._record(
            "run",
            pid=os.getpid(),
            host=socket.gethostname(),
            executor=self.executor.describe(),
            planner=self.planner.describe(),
            version=__version__,
            argv=list(argv),
        )
        self._resume_after_cancel()
        self._resolve_pending_submissions()
        status = "done"
        while True:
            g = self.state.next_generation()
            gen = self.state.generations.get(g)
            if g >= self.spec.campaign.generations and not (gen and gen.planned):
                break
            if not (gen and gen.planned):
                plan_ok = self._plan(g)
                if not plan_ok:
                    status = "exhausted"
                    break
            self._prepare(g)
            finished = self._drive(g)
            if not finished:
                status = "cancelled"
                break
            self._gather()
            if not self.state.generations[g].analyzed:
                self._analyze(g)
            self._record("generation_done", generation=g)
        if status != "cancelled":
            self._gather()
        self._record("run_ended", status=status)
        st = self.state
        return RunResult(
            status, self.paths.root, st.completed_generations(), st.best(self.spec.campaign.mode), st.counts()
        )

    # ------------------------------------------------------------------ 1 propose
    def _plan(self, g: int) -> bool:
        spec = self.spec
        st = self.state
        n = spec.campaign.batch_size
        space = spec.space
        seen: set[str] = {config_key(c.params, c.patch, c.parent) for c in st.configs()}
        head: list[Proposal] = []
        baseline = space.defaults()
        if g == 0 and spec.campaign.baseline and baseline is not None and Space.key(baseline) not in seen:
            head.append(
                Proposal(baseline, hypothesis="baseline: the defaults declared in [space]", source="baseline")
            )
            seen.add(Space.key(baseline))
        planner_name = self.planner.describe()
        self._record("planning", generation=g, planner=planner_name)
        ctx = PlanContext(
            spec=spec,
            generation=g,
            n=n - len(head),
            history=tuple(st.configs()),
            champion=st.champion(spec.campaign.mode),
            analyses=tuple(self._analyses(g)),
            generations_left=max(1, spec.campaign.generations - g),
            results_dir=self.paths.root,
            seed=spec.campaign.seed,
            extra_seen=frozenset(seen),
        )
        notes: list[str] = []
        rationale = ""
        if ctx.n > 0:
            plan = self._propose(ctx)
            notes.append(plan.note)
            rationale = plan.rationale
            proposals = self._validated(plan.proposals, notes)
        else:
            proposals = []
        fresh, dups = unique(proposals, set(seen))
        if dups:
            notes.append(f"dropped {len(dups)} duplicate proposal(s)")
        proposals = head + fresh
        if not proposals:
            note = "; ".join(n for n in notes if n) or "the planner proposed nothing"
            self.reporter.warn(f"generation {g}: nothing left to propose ({note}); the campaign ends here")
            return False
        trials = []
        seeds = spec.campaign.seeds
        for i, p in enumerate(proposals):
            config = trial_id(g, i * len(seeds))
            for k, seed in enumerate(seeds):
                trials.append(
                    {
                        "id": trial_id(g, i * len(seeds) + k),
                        "index": i * len(seeds) + k,
                        "config": config,
                        "seed": seed,
                        "params": dict(p.params),
                        "hypothesis": p.hypothesis,
                        "parent": p.parent,
                        "source": p.source,
                        "patch": [dict(e) for e in p.patch] if p.patch else None,
                    }
                )
        note = "; ".join(n for n in notes if n)
        atomic_write_json(
            self.paths.plan(g),
            {
                "generation": g,
                "planner": planner_name,
                "note": note,
                "rationale": rationale,
                "trials": trials,
            },
        )
        self._record("planned", generation=g, planner=planner_name, note=note, trials=trials)
        if note:
            self.reporter.info(f"generation {g}: {note}")
        return True

    def _propose(self, ctx: PlanContext) -> Plan:
        try:
            return self.planner.propose(ctx)
        except UserError:
            raise
        except Exception as e:  # a planner bug must not cost a night on the cluster
            if self.fallback_planner is None:
                raise
            self.reporter.warn(
                f"planner {self.planner.describe()} failed ({type(e).__name__}: {e}); using TPE"
            )
            plan = self.fallback_planner().propose(ctx)
            return Plan(
                plan.proposals, f"planner failed ({type(e).__name__}: {e}); TPE planned this generation"
            )

    def _validated(self, proposals: Sequence[Proposal], notes: list[str]) -> list[Proposal]:
        out = []
        for p in proposals:
            params, errors = self.spec.space.validate(p.params)
            if errors:
                notes.append(f"dropped an invalid proposal ({'; '.join(errors)})")
                continue
            out.append(Proposal(params, p.hypothesis, p.patch, p.parent, p.source))
        return out

    def _analyses(self, before: int) -> list[tuple[int, str]]:
        out = []
        for g in sorted(self.state.generations):
            if g < before and self.state.generations[g].analyzed:
                try:
                    out.append((g, self.paths.analysis(g).read_text(encoding="utf-8")))
                except FileNotFoundError:
                    pass
        return out

    # ------------------------------------------------------------------ 2 prepare
    def _prepare(self, g: int) -> None:
        from hpc_agent.patches import apply_patch, build_code_dir, read_files, snapshot, unified_diff

        exp = self.spec.experiment
        workdir = Path(exp.workdir)
        base = self.paths.base
        if exp.editable and not all((base / n).exists() for n in exp.editable):
            snapshot(workdir, exp.editable, base)
        base_files = read_files(base, exp.editable) if exp.editable else {}
        for t in self.state.trials_of(g):
            tp = self.paths.trial(t.trial_id)
            if tp.launch.exists():
                continue
            tp.root.mkdir(parents=True, exist_ok=True)
            tp.checkpoint.mkdir(exist_ok=True)
            atomic_write_json(tp.params, {**dict(t.params), "seed": t.seed})
            files = self._parent_files(t, base_files)
            if t.patch:
                patched, errors = apply_patch(files, t.patch, exp.editable)
                if errors:  # validated when planned; a changed parent could still break it
                    atomic_write_text(tp.patch, "# patch did not apply:\n# " + "\n# ".join(errors) + "\n")
                else:
                    atomic_write_text(tp.patch, unified_diff(base_files, patched))
                    files = patched
            build_code_dir(workdir, files, tp.code, skip=[self.paths.root])
            atomic_write_json(
                tp.launch,
                {
                    "trial": t.trial_id,
                    "command": list(exp.command),
                    "cwd": "code",  # relative to the trial folder: results folders can move
                    "env": dict(exp.env),
                    "time_budget_s": exp.time_budget_s,
                    "kill_grace_s": exp.kill_grace_s,
                    "seed": t.seed,
                    "unset_env": list(self._secret_env),
                },
            )

    def _parent_files(self, t: TrialRecord, base_files: Mapping[str, str]) -> dict[str, str]:
        """The editable files a trial starts from: its parent's version, else the base."""
        if not t.parent or not base_files:
            return dict(base_files)
        parent_code = self.paths.trial(t.parent).code
        out = {}
        for name in base_files:
            try:
                out[name] = (parent_code / name).read_text(encoding="utf-8")
            except FileNotFoundError:
                out[name] = base_files[name]
        return out

    # ------------------------------------------------------------------ 3+4 submit and wait
    def _drive(self, g: int) -> bool:
        """Submit what is planned and reconcile until every trial of g is finished.
        Returns False when the campaign was cancelled meanwhile.

        Two clocks: the trials' status files are cheap to read and are checked often (from
        50 ms, backing off to STATUS_INTERVAL_S while nothing changes); the scheduler is
        asked at most once per ``executor.poll_interval_s``."""
        delay = 0.05
        last_touch = last_poll = time.monotonic()
        while True:
            self._refresh_if_changed()
            if self.state.cancelled:
                self._stop_cancelled(g)
                return False
            st = self.state
            planned = [t for t in st.trials_of(g) if t.state is TrialState.PLANNED]
            if planned:
                self._submit(g, planned)
                last_poll = time.monotonic()
                continue
            open_trials = [t for t in st.trials_of(g) if not t.state.is_finished()]
            if not open_trials:
                self._report_progress(g)
                return True
            now = time.monotonic()
            ask_scheduler = now - last_poll >= self.executor.poll_interval_s
            if ask_scheduler:
                last_poll = now
            changed = self._reconcile(open_trials, ask_scheduler)
            self._report_progress(g)
            if now - last_touch > 30:
                os.utime(self.paths.driver_lock)  # the driver is alive: keep its lock fresh
                last_touch = now
            delay = 0.05 if changed else min(delay * 1.5, STATUS_INTERVAL_S, self.executor.poll_interval_s)
            time.sleep(delay)

    def _submit(self, g: int, trials: Sequence[TrialRecord]) -> None:
        token = secrets.token_hex(4)
        req = self._request(g, token, [t.trial_id for t in trials])
        self._record(
            "submitting", generation=g, token=token, trials=list(req.trial_ids), executor=self.executor.name
        )
        try:
            sub = self.executor.submit(req)
        except SubmitError as e:
            self._record("submit_failed", token=token, error=e.message[:2000], job_ids=e.job_ids)
            if e.job_ids:
                self.executor.cancel(e.job_ids)
            raise UserError(
                f"the scheduler refused generation {g}'s jobs: {e.message}",
                fix=e.fix
                or "fix the profile or [executor] values it names, then run again "
                "(nothing was lost: the trials are still planned)",
                log=e.script or None,
            ) from None
        self._record("submitted", token=token, job_ids=list(sub.job_ids), trial_jobs=sub.trial_jobs)
        self.reporter.info(
            f"generation {g}: submitted {len(trials)} trial(s) as {self._describe_jobs(sub.job_ids)}"
        )

    @staticmethod
    def _describe_jobs(job_ids: Sequence[str]) -> str:
        arrays = sorted({j.split("_")[0] for j in job_ids})
        if len(arrays) <= 3:
            return "job " + ", ".join(arrays)
        return f"{len(arrays)} jobs"

    def _request(self, g: int, token: str, ids: Sequence[str]) -> SubmitRequest:
        return SubmitRequest(
            token=token,
            generation=g,
            campaign=self.spec.name,
            trial_ids=tuple(ids),
            trial_dirs=tuple(str(self.paths.trial(t).root) for t in ids),
            queue_dir=str(self.paths.submission(g, token)),
            submitit_dir=str(self.paths.submitit),
            timeout_min=self.spec.experiment.job_timeout_min,
            scrub_env=self._secret_env,
        )

    def _resolve_pending_submissions(self) -> None:
        """The driver died between 'submitting' and 'submitted': find what was submitted."""
        for sub in self.state.pending_submissions():
            req = self._request(sub.generation, sub.token, sub.trial_ids)
            found = self.executor.find(req)
            if found:
                self.reporter.info(f"re-attached to {len(found)} job(s) of an interrupted submission")
                self._record("submitted", token=sub.token, job_ids=found, trial_jobs=None, recovered=True)
            else:
                self._record(
                    "submit_failed",
                    token=sub.token,
                    error="the driver stopped before the scheduler answered; no job found",
                )

    def _resume_after_cancel(self) -> None:
        """Trials stopped by `hpc-agent cancel` in an unfinished generation run again."""
        again = [
            ("requeued", {"trial": t.trial_id, "reason": "resumed after hpc-agent cancel", "counted": False})
            for t in self.state.trials.values()
            if t.by_campaign_cancel
            and t.state is TrialState.CANCELLED
            and not self.state.generations[t.generation].done
        ]
        if again:
            self.reporter.info(f"resuming {len(again)} trial(s) stopped by `hpc-agent cancel`")
            self._record_many(again)

    def _reconcile(self, open_trials: Sequence[TrialRecord], ask_scheduler: bool = True) -> bool:
        """Learn what happened to open trials: status files first, then the scheduler."""
        ended: list[tuple[TrialRecord, dict[str, Any]]] = []
        waiting: list[TrialRecord] = []
        for t in open_trials:
            status = self._read_status(t.trial_id)
            if _is_final(status, t):
                assert status is not None
                ended.append((t, status))
            else:
                waiting.append(t)
        lost = self._check_jobs(waiting) if waiting and ask_scheduler else []
        if not ended and not lost:
            return False
        self._conclude(ended, lost)
        return True

    def _read_status(self, tid: str) -> dict[str, Any] | None:
        path = self.paths.trial(tid).status
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        cached = self._status_cache.get(tid)
        if cached and cached[0] == mtime:
            return cached[1]
        data = read_json(path)
        data = data if isinstance(data, dict) else None
        self._status_cache[tid] = (mtime, data)
        return data

    def _check_jobs(self, waiting: Sequence[TrialRecord]) -> list[tuple[TrialRecord, str, str]]:
        """One batched poll for the jobs of trials without a final status. Returns the trials
        whose job is gone: (trial, state, reason)."""
        st = self.state
        by_job: dict[str, list[TrialRecord]] = {}
        for t in waiting:
            sub = st.submissions.get(t.token or "")
            if sub is None or sub.state != "submitted":
                continue
            jobs = [t.job_id] if t.job_id else list(sub.job_ids)
            for j in jobs:
                by_job.setdefault(j, []).append(t)
        if not by_job:
            return []
        info = self.executor.poll(list(by_job))
        self._job_info.update(info)
        alive_trials = {
            t.trial_id for j, ts in by_job.items() if info.get(j, JobStatus(j, "gone")).alive for t in ts
        }
        out = []
        for t in waiting:
            if t.trial_id in alive_trials:
                self._gone_seen.pop(t.trial_id, None)
                continue
            seen = self._gone_seen.get(t.trial_id, 0) + 1
            self._gone_seen[t.trial_id] = seen
            if seen < GONE_CONFIRMATIONS:
                continue  # a status file may still be on its way (NFS attribute caches)
            self._status_cache.pop(t.trial_id, None)
            status = self._read_status(t.trial_id)
            if _is_final(status, t):
                continue  # it did finish: picked up on the next pass
            job = info.get(t.job_id or "") if t.job_id else None
            state, reason = _gone_outcome(job, status)
            out.append((t, state, reason))
            self._gone_seen.pop(t.trial_id, None)
        return out

    def _conclude(
        self,
        ended: Sequence[tuple[TrialRecord, dict[str, Any]]],
        lost: Sequence[tuple[TrialRecord, str, str]],
    ) -> None:
        from hpc_agent.metrics import outcome, summarize

        camp = self.spec.campaign
        self._refresh_if_changed()
        stopping = self.state.cancelled  # `hpc-agent cancel` interrupted these: not a requeue
        files = {t.trial_id: self.paths.trial(t.trial_id).metrics for t, _ in ended}
        summaries = (
            summarize(files, camp.metric, camp.mode, camp.objective, camp.report_metrics) if files else {}
        )
        max_retries = self.spec.experiment.max_retries
        events: list[tuple[str, Mapping[str, Any]]] = []
        for t, status in ended:
            raw_state = str(status["state"])
            state, objective, metric_reason = outcome(raw_state, summaries.get(t.trial_id), camp.metric)
            reason = metric_reason or str(status.get("reason", ""))
            if stopping and state in ("preempted", "cancelled"):
                events.append(("trial_ended", cancelled_by_campaign(t.trial_id)))
                continue
            if state == "preempted":
                counted = status.get("interrupted_by") not in _TERMINAL_SIGNALS
                if not counted or t.retries < max_retries:
                    events.append(("requeued", {"trial": t.trial_id, "reason": reason, "counted": counted}))
                    continue
                reason += f" (gave up after {t.retries} requeue(s))"
            events.append(
                (
                    "trial_ended",
                    {
                        "trial": t.trial_id,
                        "state": state,
                        "objective": objective,
                        "reason": reason,
                        "exit_code": status.get("exit_code"),
                        "duration_s": status.get("duration_s"),
                        "job_id": status.get("job_id"),
                        "attempt": status.get("attempt"),
                    },
                )
            )
        for t, state, reason in lost:
            if TrialState(state).is_retryable() and t.retries < max_retries:
                events.append(("requeued", {"trial": t.trial_id, "reason": reason, "counted": True}))
                continue
            if TrialState(state).is_retryable():
                reason += f" (gave up after {t.retries} requeue(s))"
            events.append(
                ("trial_ended", {"trial": t.trial_id, "state": state, "objective": None, "reason": reason})
            )
        self._record_many(events)
        for name, ev in events:
            if name == "requeued":
                self.reporter.info(f"trial {ev['trial']} requeued: {ev['reason']}")

    def _stop_cancelled(self, g: int) -> None:
        events = [
            ("trial_ended", cancelled_by_campaign(t.trial_id))
            for t in self.state.trials_of(g)
            if not t.state.is_finished()
        ]
        self._record_many(events)
        self.reporter.warn(f"campaign cancelled: {len(events)} unfinished trial(s) of generation {g} stopped")

    def _report_progress(self, g: int) -> None:
        counts = self.state.counts(g)
        running = 0
        for t in self.state.trials_of(g):
            if t.state is TrialState.SUBMITTED:
                cached = self._status_cache.get(t.trial_id)
                status = cached[1] if cached else None
                if status and status.get("state") == "running" and status.get("token") == t.token:
                    running += 1  # this attempt's, not an earlier one's that died running
        counts["submitted"] -= running
        counts["running"] = running
        best = self.state.best(self.spec.campaign.mode)
        self.reporter.progress(g, counts, best.objective if best else None)

    # ------------------------------------------------------------------ 5 gather
    def _gather(self) -> None:
        from hpc_agent.metrics import write_table
        from hpc_agent.report import build_table

        write_table(build_table(self.paths, self.state, self.spec), self.paths.trials_table)

    # ------------------------------------------------------------------ 6 analyze
    def _analyze(self, g: int) -> None:
        import polars as pl

        table = pl.read_parquet(self.paths.trials_table)
        ctx = AnalysisContext(self.spec, g, self.state, table, tuple(self._analyses(g)), self.paths.root)
        try:
            text = self.planner.analyze(ctx)
            # a planner that wrote the deterministic analysis itself says why (the LLM planner)
            fallback = str(getattr(self.planner, "analysis_fallback", "") or "")
        except Exception as e:
            from hpc_agent.analysis import deterministic_analysis

            self.reporter.warn(
                f"analysis by {self.planner.describe()} failed ({e}); writing the deterministic one"
            )
            text = deterministic_analysis(ctx)
            fallback = f"analysis by {self.planner.describe()} failed ({e})"
        atomic_write_text(self.paths.analysis(g), text.rstrip() + "\n")
        author = (
            {"author": "deterministic", "fallback": fallback}
            if fallback
            else {"author": self.planner.describe()}
        )
        self._record("analyzed", generation=g, **author)
        self.reporter.generation_done(g, text)


def cancelled_by_campaign(trial: str) -> dict[str, Any]:
    """The trial_ended event of a trial stopped by `hpc-agent cancel` (resumed by `run`)."""
    return {
        "trial": trial,
        "state": "cancelled",
        "objective": None,
        "reason": "campaign cancelled (hpc-agent cancel)",
        "by_campaign_cancel": True,
    }


def _is_final(status: Mapping[str, Any] | None, t: TrialRecord) -> bool:
    """Does this status.json end the trial's current attempt? A verdict (completed, failed,
    timeout) ends it whenever it was written; an interruption (preempted, cancelled) only when
    it is this submission's (an older one was already requeued)."""
    if not status:
        return False
    state = status.get("state")
    if state in ("completed", "failed", "timeout"):
        return True
    return state in ("preempted", "cancelled") and status.get("token") == t.token


def _gone_outcome(job: JobStatus | None, status: Mapping[str, Any] | None) -> tuple[str, str]:
    """What became of a trial whose job vanished without a final status.json."""
    where = (
        "while running" if status and status.get("state") in ("running", "cancelled") else "before it started"
    )
    if job is None or not job.scheduler_state:
        return "lost", f"its job ended {where}, without a final status (killed, or the node failed)"
    s = job.scheduler_state.split()[0].upper()
    detail = f" ({job.reason})" if job.reason else ""
    if s == "CANCELLED":
        return "cancelled", f"job cancelled (scancel) {where}{detail}"
    if s == "TIMEOUT":
        return "timeout", f"SLURM's time limit ended the job {where}{detail}; raise [experiment] timeout_min"
    if s == "OUT_OF_MEMORY":
        return "failed", f"out of memory (SLURM OUT_OF_MEMORY) {where}; raise mem_gb in the profile"
    if s in ("PREEMPTED", "REQUEUED"):
        return "preempted", f"job preempted {where}{detail}"
    if s in ("NODE_FAIL", "BOOT_FAIL"):
        return "lost", f"node failure ({s}) {where}{detail}"
    return "lost", f"job ended as {s} {where} without a final status{detail}"


def exit_message(result: RunResult) -> str:
    lines = [f"{result.status}: {result.generations_done} generation(s) in {result.results}"]
    if result.failed:
        lines.append(
            "failed: no trial completed; see `hpc-agent status` for the reasons and the trials' stderr.log"
        )
    if result.best is not None:
        lines.append(
            f"best: {result.best.objective:.6g} (trial {result.best.trial_id}, {dict(result.best.params)})"
        )
    return "\n".join(lines)
