"""Where a number came from: the code and the environment of every run and every trial.

Standard library only: the runner imports this module inside every job, so it must load in
a few milliseconds and never fail for reasons of its own. Two records, both captured at run
time (a table's provenance cannot be reconstructed afterwards):

* per driver run, ``results/<name>/provenance/run-0002.json``: the code's git state, written
  by the driver (:mod:`hpc_agent.science.provenance`).
* per trial, ``provenance.json`` in the trial's folder (:func:`write_trial_provenance`,
  called by the runner once the command has started): for each attempt, the host, the
  scheduler's job and array ids, the seed, Python's version, torch's version and the CUDA
  version it was built for (read from its files, never imported), the GPUs visible to the
  command (``CUDA_VISIBLE_DEVICES``; ``nvidia-smi`` is asked for their model only when GPUs
  are visible), and the CPUs. The versions are those of the runner's interpreter, which runs
  the command when it starts with ``python`` (``versions_of`` names it).

The time used over all attempts is the journal's (``TrialRecord.total_duration_s``): an
attempt cannot know the ones after it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hpc_agent.job.fileio import atomic_write_json, read_json
from hpc_agent.job.trial import PROVENANCE

PROVENANCE_VERSION = 1
NVIDIA_SMI_TIMEOUT_S = 5.0
_NO_GPUS = ("", "-1", "none", "NoDevFiles")
_SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "partition": "SLURM_JOB_PARTITION",
    "nodelist": "SLURM_JOB_NODELIST",
    "restart_count": "SLURM_RESTART_COUNT",
}


# ------------------------------------------------------------------------------- a trial


def trial_environment(env: Mapping[str, str], attempt: int, job_id: str, seed: int) -> dict[str, Any]:
    """One attempt's record: where it ran and with what (``env``: the command's environment)."""
    slurm = {k: env[v] for k, v in _SLURM_VARS.items() if env.get(v)}
    torch_version, cuda = torch_versions()
    gpus, gpu_note = visible_gpus(env)
    record: dict[str, Any] = {
        "attempt": attempt,
        "started_at": round(time.time(), 3),
        "host": socket.gethostname(),
        "job_id": job_id,
        "slurm": slurm or None,
        "seed": seed,
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "versions_of": sys.executable,
        "torch": torch_version,
        "torch_cuda": cuda,
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "gpus": gpus,
        "gpu_count": len(gpus) if gpus is not None else _count_devices(env.get("CUDA_VISIBLE_DEVICES")),
        "cpus": _cpus(),
    }
    if gpu_note:
        record["gpu_note"] = gpu_note
    return record


def write_trial_provenance(
    trial_dir: str | os.PathLike[str], env: Mapping[str, str], attempt: int, job_id: str, seed: int
) -> None:
    """Add this attempt's record (:func:`trial_environment`) to the trial's ``provenance.json``
    (``{"v", "attempts": [...]}``, one entry per attempt, a repeated attempt number replacing
    its entry). Never raises: a trial's provenance must not fail the trial."""
    path = Path(trial_dir) / PROVENANCE
    try:
        record = trial_environment(env, attempt, job_id, seed)
        old = read_json(path)
        attempts = [
            a
            for a in (old.get("attempts", []) if isinstance(old, dict) else [])
            if isinstance(a, dict) and a.get("attempt") != record.get("attempt")
        ]
        attempts.append(record)
        atomic_write_json(path, {"v": PROVENANCE_VERSION, "attempts": attempts})
    except Exception as e:  # a full disk or a read-only folder: the run still counts
        print(f"hpc-agent: could not write {path}: {e}", file=sys.stderr)


def read_trial_provenance(trial_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The attempts recorded in a trial's ``provenance.json``, oldest first ([] when none)."""
    data = read_json(Path(trial_dir) / PROVENANCE)
    if not isinstance(data, dict):
        return []
    return [a for a in data.get("attempts", []) if isinstance(a, dict)]


def torch_versions() -> tuple[str | None, str | None]:
    """(torch's version, the CUDA version it was built for) in this interpreter's environment,
    read from ``torch/version.py`` without importing torch; (None, None) when it is absent."""
    try:
        spec = find_spec("torch")
    except (ImportError, ValueError):
        return None, None
    if spec is None or not spec.submodule_search_locations:
        return None, None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except (OSError, StopIteration):
        return _torch_metadata_version(), None
    version = re.search(r"""^__version__\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]""", text, re.M)
    cuda = re.search(r"""^cuda\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]""", text, re.M)
    return (version.group(1) if version else _torch_metadata_version()), (cuda.group(1) if cuda else None)


def _torch_metadata_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def visible_gpus(env: Mapping[str, str]) -> tuple[list[dict[str, str]] | None, str]:
    """The GPUs the command sees (index, uuid, name, driver) and a note; ``[]`` when
    ``CUDA_VISIBLE_DEVICES`` hides them all or there is no ``nvidia-smi`` and no variable;
    None when they are visible but ``nvidia-smi`` cannot name them."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in _NO_GPUS:
        return [], ""
    smi = which("nvidia-smi", env.get("PATH"))
    if smi is None:
        return ([], "") if visible is None else (None, "nvidia-smi not found")
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,uuid,name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi failed: {e}"
    if out.returncode != 0:
        return None, f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:200]}"
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            gpus.append({"index": parts[0], "uuid": parts[1], "name": parts[2], "driver": parts[3]})
    if visible is None:
        return gpus, ""
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    chosen = [g for w in wanted for g in gpus if w in (g["index"], g["uuid"])]
    if len(chosen) != len(wanted):  # MIG devices and the like: name them by count only
        return None, f"CUDA_VISIBLE_DEVICES={visible} does not match nvidia-smi's GPUs"
    return chosen, ""


def which(program: str, path: str | None) -> str | None:
    """``program``'s full path on ``path`` (a PATH value), or None: :func:`shutil.which`
    without importing shutil (and its compression modules) into every job."""
    for folder in (path or os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _count_devices(visible: str | None) -> int:
    if visible is None or visible.strip() in _NO_GPUS:
        return 0
    return len([v for v in visible.split(",") if v.strip()])


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
