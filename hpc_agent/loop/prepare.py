"""Preparing a trial's folder (phase 2): its parameters, its own code, how to launch it.

The code folder mirrors the workdir with symbolic links, except the editable files, which
are real copies: the campaign's snapshot (``base/``, taken at its first run), or the parent
trial's version when the trial carries a code lineage, then its patch. ``launch.json`` is
written last, so that its presence means "prepared" (a driver killed while preparing writes
whatever is missing on the next run). See :mod:`hpc_agent.job.trial` for the folder's contract.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpc_agent.config.spec import ExperimentSection
from hpc_agent.edits.patches import apply_patch, build_code_dir, read_files, snapshot, unified_diff
from hpc_agent.job.fileio import atomic_write_text, write_new
from hpc_agent.job.script import fill_command
from hpc_agent.job.trial import CODE, LAUNCH, PARAMS, PATCH, Launch
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import TrialRecord


def base_files(paths: ResultsPaths, exp: ExperimentSection) -> dict[str, str]:
    """The editable files as the campaign first saw them (snapshotted on first use)."""
    if not exp.editable:
        return {}
    if not all((paths.base / n).exists() for n in exp.editable):
        snapshot(Path(exp.workdir), exp.editable, paths.base)
    return read_files(paths.base, exp.editable)


def prepare_trial(
    paths: ResultsPaths,
    trial: TrialRecord,
    exp: ExperimentSection,
    base: Mapping[str, str],
    unset_env: Sequence[str],
    entries: Sequence[str] | None = None,
    evaluated: tuple[str, ...] = (),
) -> None:
    """Write one trial's folder, unless it is already prepared (``entries``: the workdir's,
    :func:`hpc_agent.edits.patches.workdir_entries`, read once for many trials; ``evaluated``: the
    metrics only the fixed evaluator may report). Its ``checkpoint/`` is the runner's to make."""
    root = paths.trial_dir(trial.trial_id)  # strings, not pathlib: a generation prepares thousands
    try:
        os.mkdir(root)
    except FileExistsError:  # prepared already, or a killed driver's half-written folder
        if os.path.exists(f"{root}/{LAUNCH}"):
            return
    except FileNotFoundError:
        os.makedirs(root, exist_ok=True)
    # no reader before launch.json exists (written last, atomically): no temporary file here
    write_new(f"{root}/{PARAMS}", json.dumps({**dict(trial.params), "seed": trial.seed}) + "\n")
    files = parent_files(paths, trial, base)
    if trial.patch:
        patched, errors = apply_patch(files, trial.patch, exp.editable)
        if errors:  # validated when planned; a changed parent could still break it
            atomic_write_text(f"{root}/{PATCH}", "# patch did not apply:\n# " + "\n# ".join(errors) + "\n")
        else:
            atomic_write_text(f"{root}/{PATCH}", unified_diff(base, patched))
            files = patched
    build_code_dir(Path(exp.workdir), files, f"{root}/{CODE}", skip=[paths.root], entries=entries)
    Launch(
        trial=trial.trial_id,
        command=fill_command(exp.command, trial.params, trial.seed),
        time_budget_s=exp.time_budget_s * trial.budget_multiplier,
        env=dict(exp.env),
        kill_grace_s=exp.kill_grace_s,
        seed=trial.seed,
        unset_env=tuple(unset_env),
        fidelity=trial.budget_multiplier,
        parse=dict(exp.parse),
        parse_stderr=exp.parse_stderr,
        evaluate=fill_command(exp.evaluate, trial.params, trial.seed) if exp.evaluate else (),
        evaluate_cwd=os.path.relpath(paths.evaluator, root) if exp.evaluate else "",
        evaluate_time_s=exp.evaluate_time_s,
        evaluated=evaluated,
    ).write(root)


def parent_files(paths: ResultsPaths, trial: TrialRecord, base: Mapping[str, str]) -> dict[str, str]:
    """The editable files a trial starts from: its parent's version, else the base."""
    if not trial.parent or not base:
        return dict(base)
    parent_code = paths.trial(trial.parent).code
    out = {}
    for name in base:
        try:
            out[name] = (parent_code / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            out[name] = base[name]
    return out


EVALUATOR_COPY_MAX_BYTES = 256 * 1024  # larger files (data) stay links to the workdir
EVALUATOR_COPY_MAX_FILES = 2000
_NOT_COPIED = ("__pycache__", "results", "node_modules", "venv", "checkpoint")


def evaluator_snapshot(paths: ResultsPaths, exp: ExperimentSection, base: Mapping[str, str]) -> None:
    """Make the fixed evaluator's folder once (``results/<name>/evaluator/``): the workdir
    mirrored with the *unpatched* editable files (``base``) and read-only copies of its small
    text files, so that no trial's code, nor a later edit of the workdir, changes the
    yardstick; data stay links. Built aside, then renamed: a killed driver leaves no half."""
    dest = paths.evaluator
    if not exp.evaluate or dest.is_dir():
        return
    workdir = Path(exp.workdir)
    files = dict(_small_text_files(workdir, paths.root))
    files.update(base)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_code_dir(workdir, files, tmp, skip=[paths.root])
    for name in files:
        os.chmod(tmp / name, 0o444)
    os.rename(tmp, dest)


def _small_text_files(workdir: Path, skip: Path) -> list[tuple[str, str]]:
    """(relative name, text) of the workdir's small UTF-8 files (hidden folders, caches and
    the results folder left out), at most :data:`EVALUATOR_COPY_MAX_FILES`."""
    out: list[tuple[str, str]] = []
    skip = skip.resolve()
    for top, dirs, names in os.walk(workdir):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in _NOT_COPIED and (Path(top) / d).resolve() != skip
        )
        for name in sorted(names):
            path = Path(top) / name
            if not path.is_file() or path.stat().st_size > EVALUATOR_COPY_MAX_BYTES:  # links followed
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            out.append((str(path.relative_to(workdir)), text))
            if len(out) >= EVALUATOR_COPY_MAX_FILES:
                return out
    return out
