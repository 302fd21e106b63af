"""``hpc-agent cancel``: stop a campaign's jobs, and its driver if one is running.

The cancel is journaled first (``cancelled``), so a running driver sees it on its next poll
and stops without requeueing the trials the cancel interrupts. Trials stopped this way are
recorded ``cancelled`` by the campaign, and run again when the campaign is resumed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hpc_agent.executors import EXECUTOR_KINDS, executor_class
from hpc_agent.loop.reconcile import cancelled_by_campaign
from hpc_agent.store.events import Cancelled
from hpc_agent.store.journal import Journal
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import driver_info, load_state


def cancel_campaign(results: Path) -> tuple[int, int]:
    """Returns (jobs signalled, unfinished trials)."""
    paths = ResultsPaths(results)
    state = load_state(results)
    journal = Journal(paths.journal)
    journal.write([Cancelled(reason="hpc-agent cancel", pid=os.getpid(), host=socket.gethostname())])
    open_trials = [trial for trial in state.trials.values() if not trial.state.is_finished()]
    by_executor: dict[str, list[str]] = {}
    tokens: dict[str, list[str]] = {}
    for sub in state.submissions.values():
        # every token, a failed submission's too: an sbatch orphaned by a killed driver may
        # have submitted it after all (its tasks would not run, but should not wait in queue)
        tokens.setdefault(sub.executor, []).append(sub.token)
        if sub.state == "failed":
            continue
        if not any(
            not state.trials[trial].state.is_finished() for trial in sub.trial_ids if trial in state.trials
        ):
            continue
        by_executor.setdefault(sub.executor, []).extend(sub.job_ids)
    n_jobs = 0
    for kind in sorted(set(by_executor) | set(tokens)):
        if kind not in EXECUTOR_KINDS:
            continue
        job_ids = by_executor.get(kind, [])
        executor_class(kind).create(overrides={}).cancel(job_ids, tokens.get(kind, []))
        n_jobs += len(job_ids)
    if driver_info(paths) is None and open_trials:
        # no driver to record the outcome: record it here
        journal.write([cancelled_by_campaign(trial.trial_id) for trial in open_trials])
    return n_jobs, len(open_trials)
