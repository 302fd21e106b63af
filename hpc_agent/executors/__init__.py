"""Executors: where trials run. The registry of executor kinds, in one place.

``local`` runs trials as processes on this machine (:mod:`hpc_agent.executors.local`);
``slurm`` submits one ``sbatch --array`` per generation (:mod:`hpc_agent.executors.slurm`).
``auto`` (the spec's default) is SLURM where ``sbatch`` is on PATH and a controller answers,
else local processes. The seam itself is :class:`hpc_agent.executors.base.Executor`.

An executor module is loaded only when one of its kind is made: importing this package costs
nothing (the spec validates ``[executor] kind`` against :data:`EXECUTOR_KINDS`).

It may import the store, the configuration and the in-job code (the jobs it submits run
:mod:`hpc_agent.job.runner`); never the loop, the planners or the outputs.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from hpc_agent.config.kinds import EXECUTOR_KINDS as EXECUTOR_KINDS
from hpc_agent.errors import UserError

if TYPE_CHECKING:
    from hpc_agent.executors.base import Executor


def slurm_available() -> bool:
    """Is ``sbatch`` on PATH?"""
    return shutil.which("sbatch") is not None


def _check_controller() -> None:
    """``auto`` found sbatch: make sure a controller answers before choosing SLURM. Quietly
    falling back to local processes could run a campaign on a shared login node."""
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        answer = (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        answer = str(e)
    if " is UP" not in answer:
        raise UserError(
            f"--executor auto: sbatch is on PATH but no SLURM controller answers ({answer or 'no answer'})",
            fix="start the cluster (sudo bash scripts/local-slurm.sh start), or run the trials on this "
            "machine with --executor local",
        )


def resolve_kind(kind: str) -> str:
    """``auto`` -> ``slurm`` where sbatch is on PATH (and a controller answers), else ``local``;
    any other kind is checked against the registry (UserError if unknown or unusable here)."""
    if kind == "auto":
        if not slurm_available():
            return "local"
        _check_controller()
        return "slurm"
    if kind not in EXECUTOR_KINDS:
        raise UserError(f"--executor {kind!r}: expected one of auto, {', '.join(EXECUTOR_KINDS)}")
    if kind == "slurm" and not slurm_available():
        raise UserError(
            "--executor slurm: sbatch is not on PATH on this machine",
            fix="run on a cluster login node, or use --executor local",
        )
    return kind


def executor_class(kind: str) -> Any:
    """The class of a registered kind (its module is imported now)."""
    module, name = EXECUTOR_KINDS[kind]
    return getattr(importlib.import_module(module), name)


def make_executor(
    kind: str,
    *,
    parallelism: int = 0,
    poll_interval_s: float = 0.0,
    profile: str = "",
    overrides: dict[str, Any] | None = None,
) -> Executor:
    """An executor of ``kind`` (``auto`` resolved first, see :func:`resolve_kind`)."""
    cls = executor_class(resolve_kind(kind))
    executor: Executor = cls.create(
        parallelism=parallelism, poll_interval_s=poll_interval_s, profile=profile, overrides=overrides or {}
    )
    return executor
