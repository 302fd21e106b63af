"""What runs inside a job, and the trial folder's contract: the runner (the trial's command in
its own process group, its time budget, the job's time limit, signals, ``status.json``), the
trial folder's file names and status states (:mod:`~hpc_agent.job.trial`), a trial attempt's
provenance, and the small file helpers everyone uses (:mod:`~hpc_agent.job.fileio`: atomic
writes, small reads with bare system calls).

It may import the standard library and nothing else of hpc_agent but :mod:`hpc_agent.errors`
and the tracking API (:mod:`hpc_agent.track`): every job imports it, so it must load in
milliseconds. ``tests/test_structure.py`` enforces it.
"""
