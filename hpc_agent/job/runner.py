"""What runs inside a job: one trial's command, held to its time budget, and its status file.

Standard library only, and nothing from the user's code: this module is what submitit
unpickles on a compute node (or in a local lane), and it must start fast and never fail for
reasons of its own. Everything a trial needs is in its folder (``launch.json`` says how to
run it), so the pickled call is just ``run_trial("<trial folder>")``.

The outcome lands in ``status.json``, written atomically:

===========  ==============================================================
running      written when the command starts (host, pid, job id, attempt)
completed    the command exited 0 (the driver then checks the metric)
failed       non-zero exit, killed by a signal, or the command not found
timeout      it outlived ``time_budget_s``: SIGTERM, then SIGKILL after the grace
preempted    the runner itself got SIGTERM/SIGINT/SIGHUP/SIGUSR2 (preemption, a
             stopped local driver): the driver requeues it
cancelled    ``scancel`` stopped its SLURM job (slurmstepd says so in the job's log)
===========  ==============================================================

While the command starts, the attempt's environment (host, job ids, seed, Python, torch and
CUDA versions, GPUs, CPUs) is added to ``provenance.json`` (:mod:`hpc_agent.job.provenance`).

A finished trial (completed, failed, timeout) is never run again, even if its job is
submitted twice: the runner returns its recorded state at once. Nor does a job run a trial
that the driver has since given to another submission: ``assignment.json`` names the one
submission (token) that may run it, and a job of any other token leaves it alone
("superseded"), so an orphaned array (a driver killed inside ``sbatch``) can never run a trial
a second time.

On SLURM the runner knows when its job's time limit falls (``deadline``) and stops the
command ``stop_before_s`` earlier on its own clock, with SIGTERM, so that it checkpoints:
``preempted`` with ``interrupted_by = "time_limit"``, and the driver requeues it. SLURM's own
warning (``--signal=B:USR2@N``) may come up to 60 s early (sbatch(1)); with a known deadline
it is only a cross-check. Whether the attempt wrote a checkpoint is recorded
(``checkpoint_advanced``): a requeue after progress is not a failure.

The command runs in its own process group (so a timeout kills its whole tree) and dies with
the runner (``PR_SET_PDEATHSIG``), so a killed job never leaves an orphan that keeps writing
into a trial folder that is about to be requeued.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hpc_agent.job.fileio import tail_text
from hpc_agent.job.provenance import write_trial_provenance
from hpc_agent.job.script import record_parsed, set_aside, take_evaluation
from hpc_agent.job.trial import (
    FINAL_STATES,
    RUNNING,
    SUPERSEDED,
    TIME_LIMIT,
    Launch,
    TrialPaths,
    assigned_to,
    checkpoint_written_since,
    read_status,
    write_status,
)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
STDERR_TAIL_LINES = 30
SLURM_SIGNAL_RESOLUTION_S = 60.0  # sbatch(1): --signal may come up to 60 s early


class _Interrupted:
    """Set by the runner's signal handler; read by the wait loop."""

    signal: str | None = None


def run_trial(
    trial_dir: str,
    token: str = "",
    job_id: str | None = None,
    *,
    deadline: float | None = None,
    stop_before_s: float = 0.0,
    warned_at: float | None = None,
) -> str:
    """Run one trial to its end and return its state. Safe to call twice.

    ``token`` names the submission that runs it (recorded in status.json, so the driver can
    tell this attempt's outcome from an earlier one's); a trial assigned to another
    submission is not run (returns ``"superseded"``, writes nothing). ``deadline`` (a unix
    time: the job's time limit) makes the runner stop the command ``stop_before_s`` before
    it, so that it checkpoints and is requeued; ``warned_at`` is when a USR2 came before the
    runner's handler was in place (see :mod:`hpc_agent.slurm_task`)."""
    root = Path(trial_dir)
    prev = read_status(root)
    if prev is not None and prev.get("state") in FINAL_STATES:
        return str(prev["state"])
    launch = Launch.read(root)
    if launch is None:
        raise RuntimeError(f"{root}/launch.json is missing or unreadable: the trial was never prepared")
    if not assigned_to(root, token):
        print(
            f"hpc-agent: trial {root.name} belongs to another submission than {token}: not run",
            file=sys.stderr,
        )
        return SUPERSEDED
    attempt = int(prev.get("attempt", 0)) + 1 if prev is not None else 1
    trial = _Trial(root, launch, attempt, job_id or _job_id(), token)
    if deadline is not None:
        trial.stop_at = deadline - max(0.0, stop_before_s)
        trial.deadline = deadline
    if warned_at is not None and not trial.warning_expected(warned_at):
        trial.interrupted.signal = "SIGUSR2"
    return trial.run()


def _job_id() -> str:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())


class _Trial:
    """One attempt at one trial: start the command, wait for it, write its status."""

    def __init__(self, root: Path, launch: Launch, attempt: int, job_id: str, token: str) -> None:
        self.paths = TrialPaths(root)
        self.token = token
        self.launch = launch
        self.attempt = attempt
        self.job_id = job_id
        self.started = time.time()
        self.interrupted = _Interrupted()
        self.deadline: float | None = None  # the job's time limit (unix time), when known
        self.stop_at: float | None = None  # when to stop the command for the time limit
        self.slurm_warning_at: float | None = None  # when SLURM's USR2 came (a cross-check only)
        self._proc: subprocess.Popen[bytes] | None = None
        self._out_start = 0  # where this attempt's stdout begins (its parse patterns start there)
        self._err_start = 0  # where this attempt's stderr begins
        self._err_path = self.paths.stderr  # the stderr of the command running now

    # ------------------------------------------------------------------ status
    def _status(self, state: str, **fields: Any) -> None:
        now = time.time()
        data: dict[str, Any] = {
            "trial": self.launch.trial,
            "state": state,
            "attempt": self.attempt,
            "token": self.token,
            "job_id": self.job_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": round(self.started, 3),
            "updated_at": round(now, 3),
        }
        if state != RUNNING:
            data["ended_at"] = round(now, 3)
            data["duration_s"] = round(now - self.started, 3)
        data.update(fields)
        write_status(self.paths.root, data)

    # ------------------------------------------------------------------ run
    def run(self) -> str:
        """Start the command, wait for it (budget, time limit, signals), record the end."""
        budget, grace = self.launch.time_budget_s, self.launch.kill_grace_s
        env = self._environment(budget)
        self.paths.checkpoint.mkdir(parents=True, exist_ok=True)
        previous = {s: signal.getsignal(s) for s in FORWARDED_SIGNALS}
        for s in FORWARDED_SIGNALS:
            signal.signal(s, self._on_signal)
        try:
            if self.launch.evaluate and self.paths.trained.exists():
                return _evaluate(self, env)  # trained in an earlier attempt: the evaluation is left
            with open(self.paths.stdout, "ab") as out, open(self.paths.stderr, "ab") as err:
                self._out_start, self._err_start = out.tell(), err.tell()
                if self.attempt > 1:
                    self._banner(out, err)
                proc = self._start(env, out, err, self.launch.command, self.launch.cwd)
                if proc is None:
                    return "failed"
                # while the command starts: its environment, for the tables' provenance
                write_trial_provenance(self.paths.root, env, self.attempt, self.job_id, self.launch.seed)
                rc, timed_out, killed = self._wait(proc, budget, grace, self.started)
            return self._finish(rc, timed_out, killed, budget, grace, env)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _banner(self, out: Any, err: Any) -> None:
        banner = f"\n=== hpc-agent: attempt {self.attempt} ({time.ctime()}) ===\n".encode()
        for f in (out, err):
            f.write(banner)
            f.flush()
        self._out_start, self._err_start = out.tell(), err.tell()

    def _start(
        self, env: dict[str, str], out: Any, err: Any, argv: tuple[str, ...], where: str, **status: Any
    ) -> subprocess.Popen[bytes] | None:
        """The command ``argv`` (run in ``where``, relative to the trial folder) in its own
        process group, tied to the runner's life; None when it could not start (recorded
        ``failed`` with the reason)."""
        cwd = os.path.normpath(str(self.paths.root / where))
        command = _resolve_command(list(argv))
        try:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except FileNotFoundError:
            self._unstartable(
                f"command not found: {command[0]!r} (cwd {cwd}); check [experiment] command", 127
            )
            return None
        except PermissionError:
            self._unstartable(f"command not executable: {command[0]!r}; check its permissions", 126)
            return None
        except OSError as e:
            self._unstartable(f"cannot start {command[0]!r}: {e}", 126)
            return None
        self._proc = proc
        self._status(
            RUNNING,
            child_pid=proc.pid,
            command=command,
            cwd=cwd,
            budget_s=self.launch.time_budget_s,
            **status,
        )
        if self.interrupted.signal:  # a signal raced the start
            _signal_group(proc, signal.SIGTERM)
        return proc

    def _environment(self, budget: float) -> dict[str, str]:
        env = dict(os.environ)
        for name in self.launch.unset_env:
            env.pop(name, None)
        # the job's own SUBMITIT_* and pickling details are none of the experiment's business
        for name in [k for k in env if k.startswith("SUBMITIT_")]:
            env.pop(name)
        env.update(self.launch.env)
        p = self.paths
        env.update(
            HPC_AGENT_TRIAL_DIR=str(p.root),
            HPC_AGENT_TRIAL_ID=self.launch.trial,
            HPC_AGENT_PARAMS=str(p.params),
            HPC_AGENT_METRICS=str(p.metrics),
            HPC_AGENT_CHECKPOINT_DIR=str(p.checkpoint),
            HPC_AGENT_TIME_BUDGET_S=f"{budget:g}",
            HPC_AGENT_START_TIME=f"{self.started:.3f}",
            HPC_AGENT_SEED=str(self.launch.seed),
            HPC_AGENT_ATTEMPT=str(self.attempt),
            HPC_AGENT_FIDELITY=f"{self.launch.fidelity:g}",
            PYTHONUNBUFFERED="1",
        )
        return env

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGUSR2 and self.warning_expected(time.time()):
            self.slurm_warning_at = time.time()  # our own clock stops the command at stop_at
            return
        if self.interrupted.signal is None:
            self.interrupted.signal = signal.Signals(signum).name
            if self._proc is not None:  # pass it on at once: the experiment may checkpoint
                _signal_group(self._proc, signal.SIGTERM)

    def warning_expected(self, now: float) -> bool:
        """Is a USR2 at ``now`` SLURM's time-limit warning for the limit we know of (it comes
        up to 60 s before ``stop_at``)? Then it changes nothing. One much earlier means the
        limit moved (``scontrol update``): it interrupts like any signal."""
        if self.stop_at is None:
            return False
        return now >= self.stop_at - SLURM_SIGNAL_RESOLUTION_S - 10.0

    def _wait(
        self, proc: subprocess.Popen[bytes], budget: float, grace: float, started: float
    ) -> tuple[int, bool, bool]:
        """Wait for the command (started at ``started``); enforce the budget and the job's time
        limit, and forward an interruption. Returns (exit code, timed out, killed by us with
        SIGKILL)."""
        deadline = started + budget
        if self.stop_at is not None:
            deadline = min(deadline, self.stop_at)
        term_sent_at: float | None = None
        timed_out = killed = False
        waiter = _ExitWaiter(proc)
        try:
            while True:
                now = time.time()
                if term_sent_at is None:
                    stop = self._why_stop(now, deadline)
                    if stop:
                        timed_out = stop == "budget"
                        term_sent_at = now
                        _signal_group(proc, signal.SIGTERM)
                elif not killed and now >= term_sent_at + grace:
                    killed = True
                    _signal_group(proc, signal.SIGKILL)
                if term_sent_at is None:
                    wait_s = max(0.0, min(deadline - now, 1.0))
                else:
                    wait_s = max(0.0, min(term_sent_at + grace - now, 0.2)) if not killed else 0.2
                rc = waiter.wait(wait_s)
                if rc is None:
                    continue
                # the leader exited: make sure no stragglers of its group keep the trial alive
                if timed_out or self.interrupted.signal:
                    _signal_group(proc, signal.SIGKILL)
                return rc, timed_out, killed
        finally:
            waiter.close()

    def _why_stop(self, now: float, deadline: float) -> str:
        """Why the command must be stopped now: "signal", "time_limit", "budget", or ""."""
        if self.interrupted.signal:
            return "signal"
        if self.stop_at is not None and now >= self.stop_at:
            self.interrupted.signal = TIME_LIMIT
            return TIME_LIMIT
        return "budget" if now >= deadline else ""

    def _finish(
        self, rc: int, timed_out: bool, killed: bool, budget: float, grace: float, env: dict[str, str]
    ) -> str:
        """The training command's end: its parsed metrics recorded, then its status, or, when it
        completed and an evaluator is declared, the evaluation."""
        state, reason, fields = self._outcome(rc, timed_out, killed, budget, grace)
        launch = self.launch
        if launch.parse:
            record_parsed(self.paths, launch.parse, launch.parse_stderr, self._out_start, self._err_start)
        if state == "completed" and launch.evaluate:
            if self._proc is not None:  # no straggler of the training may write after this
                _signal_group(self._proc, signal.SIGKILL)
            self.paths.trained.write_text(f'{{"attempt": {self.attempt}, "at": {time.time():.3f}}}\n')
            return _evaluate(self, env)
        if launch.evaluated:
            fields["ignored_metrics"] = set_aside(self.paths.metrics, launch.evaluated)
        self._status(state, reason=reason, **fields)
        return state

    def _outcome(
        self, rc: int, timed_out: bool, killed: bool, budget: float, grace: float
    ) -> tuple[str, str, dict[str, Any]]:
        """(state, reason, status fields) of a command that ended with ``rc``."""
        tail = tail_text(self._err_path, STDERR_TAIL_LINES, start=self._err_start)
        fields: dict[str, Any] = {"exit_code": rc, "stderr_tail": tail}
        if rc < 0:
            fields["signal"] = (
                signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            )
        if self.interrupted.signal or timed_out:
            fields["checkpoint_advanced"] = checkpoint_written_since(self.paths.checkpoint, self.started)
        if self.interrupted.signal:
            fields["interrupted_by"] = self.interrupted.signal
            state, reason = self._interruption()
        elif timed_out:
            how = f"SIGKILL {grace:g} s after SIGTERM" if killed else "stopped on SIGTERM"
            state, reason = "timeout", f"exceeded time_budget_s={budget:g} ({how})"
        else:
            state, reason = _exit_outcome(rc, fields.get("signal", ""), tail)
        return state, reason, fields

    def _interruption(self) -> tuple[str, str]:
        """(state, reason) of an attempt stopped by a signal or by the job's time limit."""
        sig = self.interrupted.signal
        if sig == TIME_LIMIT:
            stop_before = round((self.deadline or 0.0) - (self.stop_at or 0.0), 1)
            limit_min = round(((self.deadline or self.started) - self.started) / 60, 1)
            return "preempted", (
                f"stopped {stop_before:g} s before the job's time limit (~{limit_min:g} min) to checkpoint; "
                "requeued"
            )
        if sig == "SIGTERM" and cancelled_by_scancel():
            return "cancelled", "job cancelled (scancel) while running"
        return "preempted", f"interrupted by {sig} (preemption, a stopped driver, a cancel)"

    def _unstartable(self, reason: str, code: int) -> None:
        with open(self._err_path, "a", encoding="utf-8") as err:
            err.write(f"hpc-agent: {reason}\n")
        tail = tail_text(self._err_path, STDERR_TAIL_LINES, start=self._err_start)
        self._status("failed", reason=reason, exit_code=code, stderr_tail=tail)


def _evaluate(trial: _Trial, env: dict[str, str]) -> str:
    """The fixed evaluator (``[experiment] evaluate``), after the training command completed:
    run from the campaign's unpatched snapshot with the trial's environment (its metrics file
    ``evaluation.jsonl``, its own budget ``evaluate_time_s``); its metrics become the trial's
    record and the training's values of the evaluated metrics are set aside. A failure is
    ``failed`` with the evaluator's stderr; an interruption is ``preempted`` (the next attempt
    runs the evaluator only: ``trained.json``)."""
    launch, paths = trial.launch, trial.paths
    budget, grace = launch.evaluate_time_s, launch.kill_grace_s
    paths.evaluation.unlink(missing_ok=True)  # nothing the training left there counts
    ignored = set_aside(paths.metrics, launch.evaluated)
    started = time.time()
    eval_env = dict(
        env,
        HPC_AGENT_METRICS=str(paths.evaluation),
        HPC_AGENT_TIME_BUDGET_S=f"{budget:g}",
        HPC_AGENT_START_TIME=f"{started:.3f}",
        HPC_AGENT_PHASE="evaluate",
        HPC_AGENT_CODE_DIR=str(paths.code),
    )
    trial._err_path = paths.evaluate_err
    with open(paths.evaluate_out, "ab") as out, open(paths.evaluate_err, "ab") as err:
        out_start = out.tell()
        trial._err_start = err.tell()
        proc = trial._start(eval_env, out, err, launch.evaluate, launch.evaluate_cwd, phase="evaluate")
        if proc is None:
            return "failed"
        rc, timed_out, killed = trial._wait(proc, budget, grace, started)
    state, reason, fields = trial._outcome(rc, timed_out, killed, budget, grace)
    if state == "timeout":
        state, reason = "failed", f"the evaluator exceeded evaluate_time_s={budget:g}"
    elif state == "failed":
        reason = f"the evaluator failed: {reason}"
    fields["ignored_metrics"] = ignored
    fields.update(evaluated_by=list(launch.evaluate), evaluate_s=round(time.time() - started, 3))
    if state == "completed":
        take_evaluation(paths, launch.parse, out_start)
    trial._status(state, reason=reason, **fields)
    return state


def _exit_outcome(rc: int, sig: str, tail: str) -> tuple[str, str]:
    """(state, reason) of a command that ended on its own."""
    if rc == 0:
        return "completed", ""
    if rc < 0:
        reason = f"killed by {sig}"
        return "failed", reason + (" (out of memory? see the job's log)" if sig == "SIGKILL" else "")
    last = _last_error_line(tail)
    return "failed", f"exit code {rc}" + (f": {last}" if last else "")


class _ExitWaiter:
    """Wait for a child's exit with a timeout, waking at once when it exits.

    Linux's pidfd makes the wait a ``poll`` on a file descriptor (no sleep-and-retry loop,
    which costs a millisecond a trial); elsewhere, Popen's own polling wait."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, timeout: float) -> int | None:
        if self.fd is not None:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            poller.poll(max(0, int(timeout * 1000)))
            return self.proc.poll()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def cancelled_by_scancel() -> bool:
    """Did ``scancel`` (not a preemption, a time limit or a requeue) stop this job?

    slurmstepd writes ``*** JOB 123 ON node CANCELLED AT <time> ***`` to the job's stderr
    *before* it signals the job, with ``DUE TO PREEMPTION`` / ``DUE TO TIME LIMIT`` / ``DUE TO
    JOB REQUEUE`` when the scheduler itself stopped it. Reading our own stderr file needs
    neither a controller call nor accounting."""
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):  # a terminal or a pipe: not a SLURM job log
            return False
        with open("/proc/self/fd/2", "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 8192))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return False
    lines = [line for line in tail.splitlines() if "*** JOB" in line and " CANCELLED AT " in line]
    return bool(lines) and " DUE TO " not in lines[-1]


def _resolve_command(command: list[str]) -> list[str]:
    """``python`` at the start of a command means the interpreter the runner runs in: the
    driver's Python and virtual environment (write an absolute path to use another one)."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


def _last_error_line(tail: str) -> str:
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if line and not line.startswith("==="):
            return line[:300]
    return ""


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_PR_SET_PDEATHSIG = 1
try:  # loaded here, not in the child: between fork and exec only the prctl call itself runs
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn``: the child gets SIGKILL when the thread that started it dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
