"""Where a driver run's code came from: ``results/<name>/provenance/run-0002.json``.

Written by :func:`write_run_provenance` when a driver opens a run: the git commit of the
experiment's folder, whether it was dirty (untracked files included, the results folder
excluded), and the diff against that commit saved beside it (``run-0002.diff``). ``git``
missing, or a folder outside any repository, is recorded as such; it never stops a campaign.
A trial attempt's own record (host, job ids, versions, GPUs) is :mod:`hpc_agent.job.provenance`.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_agent.job.fileio import atomic_write_json, atomic_write_text, read_json
from hpc_agent.job.provenance import which
from hpc_agent.store.paths import ResultsPaths

GIT_TIMEOUT_S = 20.0
MAX_DIFF_BYTES = 5_000_000  # a larger diff is cut (and says so): a results folder is no archive


# ------------------------------------------------------------------------------- a driver run


def code_provenance(workdir: Path, exclude: Sequence[Path] = ()) -> tuple[dict[str, Any], str]:
    """The experiment folder's git state and its diff against HEAD: (record, diff text).

    ``record["git"]`` is ``"ok"``, ``"not installed"``, ``"not a repository"`` or the error
    git gave; ``dirty`` counts untracked files too, except those under ``exclude`` (the
    results folder). Untracked files are listed by name; their contents are not saved."""
    record: dict[str, Any] = {"workdir": str(workdir), "git": "ok"}
    git = which("git", os.environ.get("PATH"))
    if git is None:
        record["git"] = "not installed"
        return record, ""
    top = _git(git, workdir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        err = top.stderr.strip()
        record["git"] = "not a repository" if "not a git repository" in err else f"git failed: {err[:300]}"
        return record, ""
    root = Path(top.stdout.strip())
    record["repository"] = str(root)
    head = _git(git, workdir, "rev-parse", "HEAD")
    record["commit"] = head.stdout.strip() if head.returncode == 0 else None  # None: no commit yet
    branch = _git(git, workdir, "rev-parse", "--abbrev-ref", "HEAD")
    record["branch"] = branch.stdout.strip() if branch.returncode == 0 else None
    spec = [f":(exclude){p.resolve().relative_to(root.resolve())}" for p in exclude if _inside(p, root)]
    status = _git(git, root, "status", "--porcelain=v1", "--", ".", *spec)
    changed = [line for line in status.stdout.splitlines() if line.strip()]
    record["dirty"] = bool(changed)
    record["changed"] = changed[:200]
    diff = ""
    if record["commit"] and changed:
        out = _git(git, root, "diff", "HEAD", "--", ".", *spec)
        diff = out.stdout if out.returncode == 0 else ""
        if len(diff) > MAX_DIFF_BYTES:
            diff = diff[:MAX_DIFF_BYTES] + f"\n# hpc-agent: diff cut at {MAX_DIFF_BYTES} bytes\n"
    return record, diff


def _git(git: str, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [git, "-C", str(where), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess([git, *args], 1, "", str(e))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def write_run_provenance(
    paths: ResultsPaths, run: int, workdir: Path, extra: Mapping[str, Any] | None = None
) -> Path | None:
    """``provenance/run-NNNN.json`` (and ``run-NNNN.diff`` when the folder was dirty) for the
    driver's run number ``run``; returns the json's path, or None when it could not be
    written. Never raises: provenance must not stop a campaign."""
    try:
        record, diff = code_provenance(workdir, exclude=[paths.root])
        record.update(
            run=run,
            at=round(time.time(), 3),
            host=socket.gethostname(),
            python=".".join(str(v) for v in sys.version_info[:3]),
            **dict(extra or {}),
        )
        if diff:
            diff_path = paths.run_provenance(run, ".diff")
            atomic_write_text(diff_path, diff)
            record["diff_file"] = str(diff_path.relative_to(paths.root))
        path = paths.run_provenance(run)
        atomic_write_json(path, record)
        return path
    except Exception as e:
        print(
            f"hpc-agent: could not record the code's provenance in {paths.provenance}: {e}", file=sys.stderr
        )
        return None


def read_run_provenance(paths: ResultsPaths) -> dict[int, dict[str, Any]]:
    """Run number -> its record, for every ``provenance/run-NNNN.json`` of a results folder."""
    out: dict[int, dict[str, Any]] = {}
    if not paths.provenance.is_dir():
        return out
    for path in sorted(paths.provenance.glob("run-*.json")):
        data = read_json(path)
        m = re.fullmatch(r"run-(\d+)\.json", path.name)
        if isinstance(data, dict) and m:
            out[int(m.group(1))] = data
    return out
