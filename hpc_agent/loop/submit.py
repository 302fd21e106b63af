"""Submissions (phase 3): a generation's trials handed to the executor, exactly once.

Each submission has a fresh token (it names the jobs, ``hpca.<campaign>.g0003.<token>``) and
is journaled before (``submitting``) and after (``submitted`` / ``submit_failed``) the call.
Before the executor is called, each trial is *assigned* to the token (``assignment.json``): a
job of any other submission leaves it alone. A submission whose outcome a dead driver never
wrote is resolved by :meth:`Submissions.resolve_pending` (docs/reliability.md).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from hpc_agent.errors import UserError
from hpc_agent.executors.base import SECRET_ENV_VARS, SubmitError, SubmitRequest
from hpc_agent.job.trial import assign
from hpc_agent.loop.live import LiveDriver
from hpc_agent.store.events import SubmitFailed, Submitted, Submitting, Widened
from hpc_agent.store.state import TrialRecord

SUBMIT_TIMEOUT_S = 130.0  # an executor's submit call (sbatch) never outlives this


class Submissions:
    """The campaign's submissions, on its driver: ``_write`` records events (the driver's
    journal and live state), ``state`` reads the live state."""

    def __init__(self, driver: LiveDriver) -> None:
        self.driver = driver
        self.paths = driver.paths
        self.spec = driver.spec
        self.executor = driver.executor
        self.reporter = driver.reporter
        self._write = driver.record
        # the API key is never in a job's environment, whatever its variable is called
        self.secret_env = tuple(dict.fromkeys((*SECRET_ENV_VARS, driver.spec.planner.api_key_env)))

    def submit(self, generation: int, planned: Sequence[TrialRecord], width: int = 0) -> None:
        """Submit these trials of generation g as ONE submission under a new token
        (``submitting``, then ``submitted``), at most ``width`` of them at once until
        widened (0: all). The trials are assigned to it before the executor is called
        (:func:`hpc_agent.job.trial.assign`), except in their first submission: a trial no
        submission has held has no ``assignment.json``, and then its first may run it (one
        file less per trial). A refusal is ``submit_failed`` and a UserError (exit 2) naming
        the scheduler's words and the fix; nothing is lost."""
        token = secrets.token_hex(4)
        again = [
            trial.trial_id for trial in planned if trial.token is not None
        ]  # held by a submission before
        width = width if 0 < width < len(planned) else 0
        req = self._request(generation, token, [trial.trial_id for trial in planned], width)
        self._write(
            Submitting(
                generation=generation,
                token=token,
                trials=req.trial_ids,
                executor=self.executor.name,
                width=width,
            )
        )
        self._assign(again, token)
        try:
            sub = self.executor.submit(req)
        except SubmitError as e:
            self._assign(req.trial_ids, None)  # a chunk that did go through must not run them
            self._write(SubmitFailed(token=token, error=e.message[:2000], job_ids=tuple(e.job_ids)))
            if e.job_ids:
                self.executor.cancel(e.job_ids)
            raise UserError(
                f"the scheduler refused generation {generation}'s jobs: {e.message}",
                fix=e.fix
                or "fix the profile or [executor] values it names, then run again "
                "(nothing was lost: the trials are still planned)",
                log=e.script or None,
            ) from None
        self._write(Submitted(token=token, job_ids=tuple(sub.job_ids), trial_jobs=sub.trial_jobs))
        jobs = self.executor.describe_jobs(sub.job_ids)
        self.reporter.info(f"generation {generation}: submitted {len(planned)} trial(s) as {jobs}")

    def widen(self, token: str, width: int, again: bool = False) -> bool:
        """Let up to ``width`` trials of submission ``token`` run at once (``widened`` first,
        then the executor; ``again``: tell the executor the journaled width once more, as a
        driver that starts does). A refusal is a warning, and the width journaled before."""
        sub = self.driver.state.submissions[token]
        before = sub.width
        if not again:
            self._write(Widened(token=token, width=width))
        try:
            req = self._request(sub.generation, token, sub.trial_ids, before)
            self.executor.widen(req, sub.job_ids, width)
        except SubmitError as e:
            self.reporter.warn(f"generation {sub.generation}: {e.message}; its trials wait longer")
            if not again:
                self._write(Widened(token=token, width=before))
            return False
        return True

    def _request(self, generation: int, token: str, ids: Sequence[str], width: int = 0) -> SubmitRequest:
        return SubmitRequest(
            token=token,
            generation=generation,
            campaign=self.spec.name,
            trial_ids=tuple(ids),
            trial_dirs=tuple(str(self.paths.trial(trial).root) for trial in ids),
            queue_dir=str(self.paths.submission(generation, token)),
            submitit_dir=str(self.paths.submitit),
            timeout_min=self.spec.experiment.job_timeout_for(
                max((self.driver.state.trials[trial].budget_multiplier for trial in ids), default=1.0)
            ),
            scrub_env=self.secret_env,
            width=width,
        )

    def _assign(self, trial_ids: Sequence[str], token: str | None) -> None:
        for tid in trial_ids:
            assign(self.paths.trial(tid).root, token)

    def resolve_pending(self, locked_at: float) -> None:
        """The driver died between 'submitting' and 'submitted': find what was submitted.

        "No job found" is believed only once no request of that submission can still reach
        the scheduler: the dead driver's sbatch died with it (PR_SET_PDEATHSIG), and a request
        it had sent is acted on within ``executor.settle_s`` of that death (at the latest when
        the next driver started). Then the trials are unassigned *before* a last look, so that
        a job that appears even later cannot run them, and a job that got in before the last
        look is adopted."""
        for sub in self.driver.state.pending_submissions():
            req = self._request(sub.generation, sub.token, sub.trial_ids)
            found = self._find_settled(req, sub.at, locked_at)
            if not found:
                self._assign(sub.trial_ids, None)
                found = self.executor.find(req)
                if found:
                    self._assign(sub.trial_ids, sub.token)
            if found:
                self.reporter.info(f"re-attached to {len(found)} job(s) of an interrupted submission")
                self._write(Submitted(token=sub.token, job_ids=tuple(found), recovered=True))
            else:
                error = "the driver stopped before the scheduler answered; no job found"
                self._write(SubmitFailed(token=sub.token, error=error))

    def _find_settled(self, req: SubmitRequest, submitting_at: float, locked_at: float) -> list[str]:
        """``executor.find`` until it finds the jobs or the submission has settled."""
        later_runs = [trial for trial in self.driver.state.run_times if trial > submitting_at]
        died_by = min(later_runs[0] if later_runs else locked_at, submitting_at + SUBMIT_TIMEOUT_S)
        settle_until = died_by + self.executor.settle_s
        found = self.executor.find(req)
        if found or time.time() >= settle_until:
            return found
        self.reporter.info(
            f"an interrupted submission ({req.job_name}) has no job yet: looking again for "
            f"{settle_until - time.time():.0f} s before submitting its trials anew"
        )
        while not found and time.time() < settle_until:
            time.sleep(min(2.0, max(0.0, settle_until - time.time())))
            found = self.executor.find(req)
        return found
