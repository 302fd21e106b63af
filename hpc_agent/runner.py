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
SUPERSEDED = "superseded"  # what run_trial returns for a trial assigned to another submission
TIME_LIMIT = "time_limit"  # interrupted_by: stopped on the runner's clock before the job's limit
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
STDERR_TAIL_LINES = 30
SLURM_SIGNAL_RESOLUTION_S = 60.0  # sbatch(1): --signal may come up to 60 s early
_CHECKPOINT_SCAN_LIMIT = 10_000  # entries looked at to tell whether a checkpoint was written


class _Interrupted:
    """Set by the runner's signal handler; read by the wait loop."""

    signal: str | None = None


def assigned_to(trial_dir: str | os.PathLike[str], token: str) -> bool:
    """May the submission ``token`` run this trial? Yes unless ``assignment.json`` names
    another one (or none: a submission being resolved). A trial prepared by an older
    hpc-agent has no assignment file: any submission may run it."""
    data = read_json(Path(trial_dir) / "assignment.json")
    if not isinstance(data, dict) or not token:
        return True
    return data.get("token") == token


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
    launch = read_json(root / "launch.json")
    if not isinstance(launch, dict):
        raise RuntimeError(f"{root}/launch.json is missing or unreadable: the trial was never prepared")
    status_path = root / "status.json"
    prev = read_json(status_path)
    if isinstance(prev, dict) and prev.get("state") in FINAL_STATES:
        return str(prev["state"])
    if not assigned_to(root, token):
        print(
            f"hpc-agent: trial {root.name} belongs to another submission than {token}: not run",
            file=sys.stderr,
        )
        return SUPERSEDED
    attempt = int(prev.get("attempt", 0)) + 1 if isinstance(prev, dict) else 1
    trial = _Trial(root, launch, attempt, job_id or _job_id(), token)
    if deadline is not None:
        trial.stop_at = deadline - max(0.0, stop_before_s)
        trial.deadline = deadline
    if warned_at is not None and not trial._warning_expected(warned_at):
        trial.interrupted.signal = "SIGUSR2"
    return trial.run()


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
        self.deadline: float | None = None  # the job's time limit (unix time), when known
        self.stop_at: float | None = None  # when to stop the command for the time limit
        self.slurm_warning_at: float | None = None  # when SLURM's USR2 came (a cross-check only)
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
                        preexec_fn=die_with_parent,
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
        if signum == signal.SIGUSR2 and self._warning_expected(time.time()):
            self.slurm_warning_at = time.time()  # our own clock stops the command at stop_at
            return
        if self.interrupted.signal is None:
            self.interrupted.signal = signal.Signals(signum).name
            if self._proc is not None:  # pass it on at once: the experiment may checkpoint
                _signal_group(self._proc, signal.SIGTERM)

    def _warning_expected(self, now: float) -> bool:
        """Is a USR2 at ``now`` SLURM's time-limit warning for the limit we know of (it comes
        up to 60 s before ``stop_at``)? Then it changes nothing. One much earlier means the
        limit moved (``scontrol update``): it interrupts like any signal."""
        if self.stop_at is None:
            return False
        return now >= self.stop_at - SLURM_SIGNAL_RESOLUTION_S - 10.0

    def _wait(self, proc: subprocess.Popen[bytes], budget: float, grace: float) -> tuple[int, bool, bool]:
        """Wait for the command; enforce the budget and the job's time limit, and forward an
        interruption.

        Returns (exit code, timed out, killed by us with SIGKILL)."""
        deadline = self.started + budget
        if self.stop_at is not None:
            deadline = min(deadline, self.stop_at)
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
                    elif self.stop_at is not None and now >= self.stop_at:
                        self.interrupted.signal = TIME_LIMIT
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
        if self.interrupted.signal or timed_out:
            fields["checkpoint_advanced"] = checkpoint_written_since(self.root / "checkpoint", self.started)
        if self.interrupted.signal == TIME_LIMIT:
            fields["interrupted_by"] = TIME_LIMIT
            state = "preempted"
            limit_min = round(((self.deadline or self.started) - self.started) / 60, 1)
            reason = (
                f"stopped {self._stop_before():g} s before the job's time limit (~{limit_min:g} min) "
                "to checkpoint; requeued"
            )
        elif self.interrupted.signal:
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

    def _stop_before(self) -> float:
        if self.deadline is None or self.stop_at is None:
            return 0.0
        return round(self.deadline - self.stop_at, 1)

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


def checkpoint_written_since(folder: Path, since: float) -> bool:
    """Did anything in ``folder`` (a trial's checkpoint directory) change after ``since``?
    A requeue after which the checkpoint advanced is progress, not a failure. At most
    ``_CHECKPOINT_SCAN_LIMIT`` entries are looked at."""
    pending = [folder]
    seen = 0
    while pending and seen < _CHECKPOINT_SCAN_LIMIT:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                if entry.stat(follow_symlinks=False).st_mtime > since:
                    return True
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
            except OSError:
                continue
    return False


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
