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

A finished trial (completed, failed, timeout) is never run again, even if its job is
submitted twice: the runner returns its recorded state at once.

The command runs in its own process group (so a timeout kills its whole tree) and dies with
the runner (``PR_SET_PDEATHSIG``), so a killed job never leaves an orphan that keeps writing
into a trial folder that is about to be requeued.
"""

from __future__ import annotations

import ctypes
import json
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

from hpc_agent._io import atomic_write_json, read_json, tail_text

FINAL_STATES = ("completed", "failed", "timeout")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
STDERR_TAIL_LINES = 30


class _Interrupted:
    """Set by the runner's signal handler; read by the wait loop."""

    signal: str | None = None


def run_trial(trial_dir: str, token: str = "", job_id: str | None = None) -> str:
    """Run one trial to its end and return its state. Safe to call twice.

    ``token`` names the submission that runs it (recorded in status.json, so the driver can
    tell this attempt's outcome from an earlier one's)."""
    root = Path(trial_dir)
    launch = read_json(root / "launch.json")
    if not isinstance(launch, dict):
        raise RuntimeError(f"{root}/launch.json is missing or unreadable: the trial was never prepared")
    status_path = root / "status.json"
    prev = read_json(status_path)
    if isinstance(prev, dict) and prev.get("state") in FINAL_STATES:
        return str(prev["state"])
    attempt = int(prev.get("attempt", 0)) + 1 if isinstance(prev, dict) else 1
    return _Trial(root, launch, attempt, job_id or _job_id(), token).run()


def _job_id() -> str:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())


class _Trial:
    def __init__(self, root: Path, launch: dict[str, Any], attempt: int, job_id: str, token: str) -> None:
        self.root = root
        self.token = token
        self.launch = launch
        self.attempt = attempt
        self.job_id = job_id
        self.status_path = root / "status.json"
        self.started = time.time()
        self.interrupted = _Interrupted()
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ status
    def _status(self, state: str, **fields: Any) -> dict[str, Any]:
        now = time.time()
        data: dict[str, Any] = {
            "trial": self.launch.get("trial", self.root.name),
            "state": state,
            "attempt": self.attempt,
            "token": self.token,
            "job_id": self.job_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": round(self.started, 3),
            "updated_at": round(now, 3),
        }
        if state != "running":
            data["ended_at"] = round(now, 3)
            data["duration_s"] = round(now - self.started, 3)
        data.update(fields)
        atomic_write_json(self.status_path, data)
        return data

    # ------------------------------------------------------------------ run
    def run(self) -> str:
        budget = float(self.launch["time_budget_s"])
        grace = float(self.launch.get("kill_grace_s", 10.0))
        cwd = str(self.root / self.launch.get("cwd", "code"))
        command = _resolve_command(list(self.launch["command"]))
        env = self._environment(budget)
        Path(env["HPC_AGENT_CHECKPOINT_DIR"]).mkdir(parents=True, exist_ok=True)
        out_path, err_path = self.root / "stdout.log", self.root / "stderr.log"
        err_start = err_path.stat().st_size if err_path.exists() else 0
        previous = {s: signal.getsignal(s) for s in _FORWARDED}
        for s in _FORWARDED:
            signal.signal(s, self._on_signal)
        try:
            with open(out_path, "ab") as out, open(err_path, "ab") as err:
                if self.attempt > 1:
                    banner = f"\n=== hpc-agent: attempt {self.attempt} ({time.ctime()}) ===\n".encode()
                    out.write(banner)
                    err.write(banner)
                    out.flush()
                    err.flush()
                    err_start = err.tell()
                try:
                    proc = subprocess.Popen(
                        command,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
                except FileNotFoundError:
                    return self._finish_unstartable(
                        f"command not found: {command[0]!r} (cwd {cwd}); check [experiment] command",
                        127,
                        err_path,
                        err_start,
                    )
                except PermissionError:
                    return self._finish_unstartable(
                        f"command not executable: {command[0]!r}; check its permissions",
                        126,
                        err_path,
                        err_start,
                    )
                except OSError as e:
                    return self._finish_unstartable(
                        f"cannot start {command[0]!r}: {e}", 126, err_path, err_start
                    )
                self._proc = proc
                self._status("running", child_pid=proc.pid, command=command, cwd=cwd, budget_s=budget)
                if self.interrupted.signal:  # a signal raced the start
                    _signal_group(proc, signal.SIGTERM)
                rc, timed_out, killed = self._wait(proc, budget, grace)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return self._finish(rc, timed_out, killed, budget, grace, err_path, err_start)

    def _environment(self, budget: float) -> dict[str, str]:
        env = dict(os.environ)
        for name in self.launch.get("unset_env", []):
            env.pop(name, None)
        # the job's own SUBMITIT_* and pickling details are none of the experiment's business
        for name in [k for k in env if k.startswith("SUBMITIT_")]:
            env.pop(name)
        env.update({str(k): str(v) for k, v in self.launch.get("env", {}).items()})
        root = str(self.root)
        env.update(
            HPC_AGENT_TRIAL_DIR=root,
            HPC_AGENT_TRIAL_ID=str(self.launch.get("trial", self.root.name)),
            HPC_AGENT_PARAMS=str(self.root / "params.json"),
            HPC_AGENT_METRICS=str(self.root / "metrics.jsonl"),
            HPC_AGENT_CHECKPOINT_DIR=str(self.root / "checkpoint"),
            HPC_AGENT_TIME_BUDGET_S=f"{budget:g}",
            HPC_AGENT_START_TIME=f"{self.started:.3f}",
            HPC_AGENT_SEED=str(self.launch.get("seed", 0)),
            HPC_AGENT_ATTEMPT=str(self.attempt),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted.signal is None:
            self.interrupted.signal = signal.Signals(signum).name
            if self._proc is not None:  # pass it on at once: the experiment may checkpoint
                _signal_group(self._proc, signal.SIGTERM)

    def _wait(self, proc: subprocess.Popen[bytes], budget: float, grace: float) -> tuple[int, bool, bool]:
        """Wait for the command; enforce the budget and forward an interruption.

        Returns (exit code, timed out, killed by us with SIGKILL)."""
        deadline = self.started + budget
        term_sent_at: float | None = None
        timed_out = killed = False
        waiter = _ExitWaiter(proc)
        try:
            while True:
                now = time.time()
                if term_sent_at is None:
                    if self.interrupted.signal:
                        term_sent_at = now
                        _signal_group(proc, signal.SIGTERM)
                    elif now >= deadline:
                        timed_out = True
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

    def _finish(
        self,
        rc: int,
        timed_out: bool,
        killed: bool,
        budget: float,
        grace: float,
        err_path: Path,
        err_start: int,
    ) -> str:
        tail = tail_text(err_path, STDERR_TAIL_LINES, start=err_start)
        fields: dict[str, Any] = {"exit_code": rc, "stderr_tail": tail}
        if rc < 0:
            fields["signal"] = (
                signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            )
        if self.interrupted.signal:
            fields["interrupted_by"] = self.interrupted.signal
            if self.interrupted.signal == "SIGTERM" and cancelled_by_scancel():
                state, reason = "cancelled", "job cancelled (scancel) while running"
            else:
                state = "preempted"
                reason = f"interrupted by {self.interrupted.signal} (preemption, a stopped driver, a cancel)"
        elif timed_out:
            state = "timeout"
            how = f"SIGKILL {grace:g} s after SIGTERM" if killed else "stopped on SIGTERM"
            reason = f"exceeded time_budget_s={budget:g} ({how})"
        elif rc == 0:
            state, reason = "completed", ""
        elif rc < 0:
            state = "failed"
            reason = f"killed by {fields['signal']}"
            if fields["signal"] == "SIGKILL":
                reason += " (out of memory? see the job's log)"
        else:
            state = "failed"
            last = _last_error_line(tail)
            reason = f"exit code {rc}" + (f": {last}" if last else "")
        self._status(state, reason=reason, **fields)
        return state

    def _finish_unstartable(self, reason: str, code: int, err_path: Path, err_start: int) -> str:
        with open(err_path, "a", encoding="utf-8") as err:
            err.write(f"hpc-agent: {reason}\n")
        tail = tail_text(err_path, STDERR_TAIL_LINES, start=err_start)
        self._status("failed", reason=reason, exit_code=code, stderr_tail=tail)
        return "failed"


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


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


# ------------------------------------------------------------------------------- local lanes


def run_lane(queue_file: str, lane: int) -> int:
    """A local worker: take trials from a submission's queue, one at a time, until none is left.

    submitit's local executor starts every array element at once; hpc-agent submits one
    element per lane instead (as many lanes as the parallelism allows), and each lane claims
    the next trial by creating ``claims/<trial id>`` with ``O_EXCL``. Returns how many trials
    this lane ran.
    """
    queue_path = Path(queue_file)
    queue = json.loads(queue_path.read_text())
    gpus = queue.get("lane_gpus") or []
    if lane < len(gpus):  # submitit's local executor hides every GPU; give this lane its share
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[lane]
    claims = queue_path.parent / "claims"
    claims.mkdir(exist_ok=True)
    # the submitit job id of a local lane is its controller's pid (our parent)
    job_id = os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getppid())
    atomic_write_json(
        queue_path.parent / f"lane-{lane}.json",
        {
            "lane": lane,
            "pid": os.getpid(),
            "ppid": job_id,
            "host": socket.gethostname(),
            "started_at": time.time(),
        },
    )
    stop = _Interrupted()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.signal = signal.Signals(signum).name

    for s in _FORWARDED:
        signal.signal(s, _stop)
    ran = 0
    for trial_dir in queue["trials"]:
        if stop.signal:
            break
        name = Path(trial_dir).name
        try:
            fd = os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.write(fd, f"{lane} {os.getpid()}\n".encode())
        os.close(fd)
        state = run_trial(trial_dir, token=str(queue.get("token", "")), job_id=job_id)
        ran += 1
        if state == "preempted":  # the lane was told to stop: leave the rest to a requeue
            break
    return ran
