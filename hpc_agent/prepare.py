"""Preparing a trial's folder (phase 2): its parameters, its own code, how to launch it.

The code folder mirrors the workdir with symbolic links, except the editable files, which
are real copies: the campaign's snapshot (``base/``, taken at its first run), or the parent
trial's version when the trial carries a code lineage, then its patch. ``launch.json`` is
written last, so that its presence means "prepared" (a driver killed while preparing writes
whatever is missing on the next run). See :mod:`hpc_agent.trial` for the folder's contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hpc_agent._io import atomic_write_json, atomic_write_text
from hpc_agent.patches import apply_patch, build_code_dir, read_files, snapshot, unified_diff
from hpc_agent.paths import ResultsPaths
from hpc_agent.spec import ExperimentSection
from hpc_agent.state import TrialRecord
from hpc_agent.trial import Launch


def base_files(paths: ResultsPaths, exp: ExperimentSection) -> dict[str, str]:
    """The editable files as the campaign first saw them (snapshotted on first use)."""
    if not exp.editable:
        return {}
    if not all((paths.base / n).exists() for n in exp.editable):
        snapshot(Path(exp.workdir), exp.editable, paths.base)
    return read_files(paths.base, exp.editable)


def prepare_trial(
    paths: ResultsPaths,
    t: TrialRecord,
    exp: ExperimentSection,
    base: Mapping[str, str],
    unset_env: Sequence[str],
    entries: Sequence[str] | None = None,
) -> None:
    """Write one trial's folder, unless it is already prepared (``entries``: the workdir's,
    :func:`hpc_agent.patches.workdir_entries`, read once for many trials). Its ``checkpoint/``
    is the runner's to make."""
    tp = paths.trial(t.trial_id)
    if tp.launch.exists():
        return
    tp.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(tp.params, {**dict(t.params), "seed": t.seed}, compact=True)
    files = parent_files(paths, t, base)
    if t.patch:
        patched, errors = apply_patch(files, t.patch, exp.editable)
        if errors:  # validated when planned; a changed parent could still break it
            atomic_write_text(tp.patch, "# patch did not apply:\n# " + "\n# ".join(errors) + "\n")
        else:
            atomic_write_text(tp.patch, unified_diff(base, patched))
            files = patched
    build_code_dir(Path(exp.workdir), files, tp.code, skip=[paths.root], entries=entries)
    Launch(
        trial=t.trial_id,
        command=exp.command,
        time_budget_s=exp.time_budget_s * t.budget_multiplier,
        env=dict(exp.env),
        kill_grace_s=exp.kill_grace_s,
        seed=t.seed,
        unset_env=tuple(unset_env),
        fidelity=t.budget_multiplier,
    ).write(tp.root)


def parent_files(paths: ResultsPaths, t: TrialRecord, base: Mapping[str, str]) -> dict[str, str]:
    """The editable files a trial starts from: its parent's version, else the base."""
    if not t.parent or not base:
        return dict(base)
    parent_code = paths.trial(t.parent).code
    out = {}
    for name in base:
        try:
            out[name] = (parent_code / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            out[name] = base[name]
    return out
