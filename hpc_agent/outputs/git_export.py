"""The research log as a git branch: ``hpc-agent export RESULTS --format git -o DIR``.

What autoresearch leaves behind is a branch of kept changes, one commit each, to read and
cherry-pick. :func:`export_git` writes that from a results folder: a git repository in
``DIR`` whose branch ``hpc-agent/<campaign>`` holds

1. the **base** commit: the editable files as the campaign snapshotted them at its first run
   (``results/<name>/base/``);
2. one commit per **kept** configuration (final verdict ``keep``), in the order they were
   kept, whose tree is the code that configuration ran (its first trial's ``code/``) and whose
   message carries its config id, hypothesis, metric (mean ± SE, n), verdict and parameters,
   with ``hpc-agent-config: <id>`` as a git trailer.

When the campaign's workdir was a git repository (``provenance/run-0001.json`` recorded its
commit), that commit's objects are fetched from the repository into ``DIR`` and the branch
starts from it: the base commit is the user's tree with the editable files as snapshotted
(an empty commit when they were committed as they were), so ``git fetch DIR hpc-agent/<name>``
brings the kept changes into the user's repository on top of the code they ran. Otherwise the
tree holds the editable files alone.

The output is deterministic: author and committer are fixed (``hpc-agent``), the base
commit's date is the campaign's opening in the journal and each kept commit's is its verdict's
time, so the same results folder always gives the same commit ids. Everything is done with the
``git`` command line (plumbing: ``hash-object``, ``update-index`` on a private index,
``write-tree``, ``commit-tree``, ``update-ref``); git must be installed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.errors import UserError
from hpc_agent.job.provenance import which
from hpc_agent.science.provenance import read_run_provenance
from hpc_agent.science.rigor import KEEP, confirmations
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state, spec_of
from hpc_agent.store.state import CampaignState, ConfigResult

AUTHOR = ("hpc-agent", "hpc-agent@localhost")
TRAILER = "hpc-agent-config"
GIT_TIMEOUT_S = 120.0
WRAP = 72


@dataclass(frozen=True)
class Commit:
    """One commit to write: its message, its date (unix seconds, from the journal) and the
    editable files' paths (relative to the workdir) -> the file on disk holding their text."""

    message: str
    date: int
    files: Mapping[str, Path]


@dataclass(frozen=True)
class GitExport:
    """What :func:`export_git` wrote: the branch, its commits (oldest first), the user's
    commit it starts from (None: a branch of its own) and any warning."""

    dest: Path
    branch: str
    commits: tuple[str, ...]
    kept: tuple[str, ...]
    base_commit: str | None
    warning: str = ""


def kept_configs(state: CampaignState) -> list[ConfigResult]:
    """The configurations whose final verdict is ``keep``, in the order they were kept."""
    kept = [c for c in state.configs() if c.verdict == KEEP and not c.purpose]
    return sorted(kept, key=lambda c: (float(state.verdicts[c.config_id].get("at") or 0.0), c.config_id))


def plan_commits(paths: ResultsPaths, state: CampaignState, spec: CampaignSpec) -> list[Commit]:
    """The base commit and one per kept configuration (pure but for checking the files)."""
    editable = list(spec.experiment.editable)
    base = Commit(
        base_message(spec), int(state.started_at), _files(paths.base, editable, "the base snapshot")
    )
    commits = [base]
    confirmed = confirmations(state)
    for c in kept_configs(state):
        code = paths.trial(c.trial_ids[0]).code
        date = int(float(state.verdicts[c.config_id].get("at") or state.started_at))
        message = keep_message(c, spec, confirmed.get(c.config_id))
        commits.append(Commit(message, date, _files(code, editable, f"config {c.config_id}'s code")))
    return commits


def _files(root: Path, editable: Sequence[str], what: str) -> dict[str, Path]:
    missing = [n for n in editable if not (root / n).is_file()]
    if missing:
        raise UserError(
            f"{what} has no {', '.join(missing)} (looked in {root})",
            fix="export from the results folder the campaign wrote, with its trial folders intact",
        )
    return {n: root / n for n in editable}


def base_message(spec: CampaignSpec) -> str:
    """The base commit's message."""
    names = ", ".join(spec.experiment.editable)
    body = (
        f"The editable files ({names}) as campaign {spec.name} snapshotted them at its first run "
        f"(results/{spec.name}/base/). Each commit after this one is a configuration the campaign "
        f"kept, in the order it kept them; its metric is {spec.campaign.metric} "
        f"({'lower' if spec.campaign.mode == 'min' else 'higher'} is better)."
    )
    return f"base: the code campaign {spec.name} started from\n\n{_wrap(body)}\n"


def keep_message(c: ConfigResult, spec: CampaignSpec, confirmed: ConfigResult | None = None) -> str:
    """A kept configuration's commit message: a subject line (config id and hypothesis), then
    the hypothesis, the metric (mean ± SE, n), the verdict, the parameters and the code's
    origin, and the ``hpc-agent-config`` trailer."""
    hypothesis = " ".join(c.hypothesis.split()) or "(no hypothesis given)"
    subject = f"{c.config_id}: {hypothesis}"
    if len(subject) > WRAP:
        subject = subject[: WRAP - 1] + "…"
    lines = [subject, "", _wrap(f"Hypothesis: {hypothesis}"), ""]
    lines.append(f"{spec.campaign.metric}: {metric_text(c)}")
    lines.append(_wrap(f"Verdict: keep ({c.verdict_reason})" if c.verdict_reason else "Verdict: keep"))
    if confirmed is not None:
        lines.append(f"Confirmed: {metric_text(confirmed)} (config {confirmed.config_id})")
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in c.params.items())
    if params:
        lines.append(_wrap(f"Parameters: {params}"))
    lines.append(f"Code: {_code_origin(c)}")
    lines.append(
        f"Generation {c.generation}, proposed by {c.source or 'unknown'}; trials {', '.join(c.trial_ids)}"
    )
    lines += ["", f"{TRAILER}: {c.config_id}"]
    return "\n".join(lines) + "\n"


def metric_text(c: ConfigResult) -> str:
    """``0.1234 ± 0.0012 (mean ± SE, n = 3)``; with one run, its value and ``n = 1``."""
    values = c.values
    if c.objective is None or not values:
        return "no completed run"
    if len(values) < 2:
        return f"{c.objective:.6g} (n = 1: no SE from one run)"
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.6g} ± {sd / math.sqrt(len(values)):.2g} (mean ± SE, n = {len(values)})"


def _code_origin(c: ConfigResult) -> str:
    if c.patch:
        return f"a patch of config {c.parent}'s code" if c.parent else "a patch of the base code"
    return f"config {c.parent}'s code, unchanged" if c.parent else "the base code, unchanged"


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, WRAP, break_long_words=False, break_on_hyphens=False)) or text


# ------------------------------------------------------------------------------- writing


def export_git(results: Path, dest: Path) -> GitExport:
    """Write the branch described in the module docstring into a new repository at ``dest``.
    Raises UserError (exit 2) for a ``dest`` that exists and is not empty, a campaign without
    editable files or before its first trial was prepared, or git missing."""
    git = which("git", os.environ.get("PATH"))
    if git is None:
        raise UserError(
            "git is not installed (export --format git runs it)", fix="install git (apt install git)"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(
            f"{dest} exists and is not an empty folder; export --format git writes a new repository",
            fix="pass -o with a new folder name (or remove that folder)",
        )
    state = load_state(results)
    spec = spec_of(state)
    if not spec.experiment.editable:
        raise UserError(
            f"campaign {spec.name} has no editable files: its configurations differ by parameters only, "
            "so there is no code to commit",
            fix=f"export the verdicts as a table: hpc-agent export {results} --format ledger",
        )
    paths = ResultsPaths(results)
    if not paths.base.is_dir():
        raise UserError(
            f"campaign {spec.name} has no base snapshot yet ({paths.base}): no trial was prepared",
            fix=f"run the campaign first: hpc-agent run {spec.experiment.workdir}",
        )
    commits = plan_commits(paths, state, spec)
    branch = _branch_name(git, spec.name)
    existed = dest.exists()
    try:
        return _Writer(git, dest, branch).write(
            commits, _user_commit(paths), [c.config_id for c in kept_configs(state)]
        )
    except BaseException:  # no half-written repository left behind
        shutil.rmtree(dest if not existed else dest / ".git", ignore_errors=True)
        raise


def _user_commit(paths: ResultsPaths) -> tuple[Path, str, str] | None:
    """(repository, commit, the workdir's path inside it) of the first run that recorded one."""
    for _, rec in sorted(read_run_provenance(paths).items()):
        if rec.get("git") == "ok" and rec.get("commit") and rec.get("repository"):
            repo = Path(str(rec["repository"]))
            try:
                inside = Path(str(rec["workdir"])).resolve().relative_to(repo.resolve())
            except (ValueError, OSError):
                inside = Path()
            return repo, str(rec["commit"]), "" if str(inside) == "." else inside.as_posix()
    return None


def _branch_name(git: str, name: str) -> str:
    branch = f"hpc-agent/{name}"
    ok = subprocess.run([git, "check-ref-format", "--branch", branch], capture_output=True, text=True)
    return branch if ok.returncode == 0 else "hpc-agent/campaign"


class _Writer:
    """git plumbing on a new repository, with a private index and a fixed identity."""

    def __init__(self, git: str, dest: Path, branch: str) -> None:
        self.git, self.dest, self.branch = git, dest, branch
        self.env = {
            **os.environ,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,  # the user's settings (signing, hooks) stay out of it
            "GIT_AUTHOR_NAME": AUTHOR[0],
            "GIT_AUTHOR_EMAIL": AUTHOR[1],
            "GIT_COMMITTER_NAME": AUTHOR[0],
            "GIT_COMMITTER_EMAIL": AUTHOR[1],
        }
        self.env.pop("GIT_DIR", None)
        self.env.pop("GIT_WORK_TREE", None)

    def run(self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> str:
        """Run git in ``dest``; a failure is a UserError with git's message."""
        try:
            out = subprocess.run(
                [self.git, "-C", str(self.dest), *args],
                input=stdin,
                capture_output=True,
                text=True,
                env={**self.env, **(env or {})},
                timeout=GIT_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise UserError(f"git {args[0]} failed: {e}", fix="check that git works: git --version") from e
        if out.returncode != 0:
            raise UserError(
                f"git {' '.join(args[:2])} failed in {self.dest}: {(out.stderr or out.stdout).strip()[:500]}",
                fix="check that git works here (git --version) and that the folder is writable",
            )
        return out.stdout.strip()

    def write(
        self, commits: Sequence[Commit], user: tuple[Path, str, str] | None, kept: Sequence[str]
    ) -> GitExport:
        """Initialise ``dest``, write the commits on the branch and check it out."""
        self.dest.mkdir(parents=True, exist_ok=True)
        self.run("init", "-q", f"--initial-branch={self.branch}")
        index = {"GIT_INDEX_FILE": str(self.dest / ".git" / "hpc-agent-index")}
        parent, prefix, warning = self._start(user, index)
        shas = []
        for c in commits:
            parent = self._commit(c, parent, prefix, index)
            shas.append(parent)
        self.run("update-ref", f"refs/heads/{self.branch}", shas[-1])
        Path(index["GIT_INDEX_FILE"]).unlink(missing_ok=True)
        (self.dest / ".git" / "FETCH_HEAD").unlink(missing_ok=True)
        self.run("reset", "-q", "--hard")
        return GitExport(
            self.dest,
            self.branch,
            tuple(shas),
            tuple(kept),
            user[1] if user and not warning else None,
            warning,
        )

    def _start(
        self, user: tuple[Path, str, str] | None, index: Mapping[str, str]
    ) -> tuple[str | None, str, str]:
        """(the parent of the base commit, the workdir's path in the tree, a warning): the
        user's commit, fetched from their repository, when there is one to fetch."""
        if user is None:
            return None, "", ""
        repo, commit, prefix = user
        try:
            self.run("fetch", "-q", "--no-tags", str(repo), commit)
            self.run("read-tree", commit, env=index)
        except UserError as e:
            return (
                None,
                "",
                (
                    f"the workdir's commit {commit[:12]} could not be fetched from {repo} ({e.message}); "
                    "the branch starts from the base snapshot alone"
                ),
            )
        return commit, prefix, ""

    def _commit(self, c: Commit, parent: str | None, prefix: str, index: Mapping[str, str]) -> str:
        names = list(c.files)
        shas = self.run(
            "hash-object",
            "-w",
            "--stdin-paths",
            stdin="".join(f"{os.path.abspath(c.files[n])}\n" for n in names),
        )
        lines = []
        for name, sha in zip(names, shas.split(), strict=True):
            mode = "100755" if os.access(c.files[name], os.X_OK) else "100644"
            lines.append(f"{mode} {sha}\t{f'{prefix}/{name}' if prefix else name}\n")
        self.run("update-index", "--add", "--index-info", stdin="".join(lines), env=index)
        tree = self.run("write-tree", env=index)
        date = f"@{c.date} +0000"
        args = ["commit-tree", tree, *(["-p", parent] if parent else []), "-F", "-"]
        return self.run(*args, stdin=c.message, env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
