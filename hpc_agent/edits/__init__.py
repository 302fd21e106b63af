"""Code edits: an agent's change to the editable files, applied to a trial's own copy of them
(:mod:`~hpc_agent.edits.patches`: the three forms of an edit, declared once; the trial's code
folder of copies and symlinks).

It imports nothing of hpc_agent but :mod:`hpc_agent.errors` and :mod:`hpc_agent.config` (the
declarations of its edits): the planners check edits with it and the loop applies them with it.
"""
