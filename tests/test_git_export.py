"""``hpc-agent export RESULTS --format git -o DIR``: the research log as a git branch.

A real campaign (the scripted LLM over HTTP, the local executor) whose proposals patch
``train.py``; its export checked against the ledger and a golden file (messages and each
commit's change), the dates against the journal, the commit ids against a second export;
and a workdir that is a git repository: the branch starts from the user's commit and
``git fetch`` brings it into their repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN

import hpc_agent.llm.transport as transport
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state
from hpc_agent.testing import FakeLLM

GOLDEN = Path(__file__).parent / "golden" / "git_export.txt"
LINE = 'loss = (x - 0.3) ** 2 + (0.0 if y == "a" else 0.1)'
SCRIPT = TINY_TRAIN.replace(LINE, LINE + ' + 0.001 * int(os.environ["HPC_AGENT_SEED"])')
SEEDED = LINE + ' + 0.001 * int(os.environ["HPC_AGENT_SEED"])'
FAST = ("--executor", "local", "--poll-interval", "0.05", "-q")
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def prop(x: float, patch: Any = None, hypothesis: str = "a hypothesis") -> dict[str, Any]:
    return {"hypothesis": hypothesis, "params": {"x": x, "mode": "a"}, "patch": patch}


def reply(*proposals: dict[str, Any], analysis: str = "reasoning") -> dict[str, Any]:
    return {"json": {"analysis": analysis, "proposals": list(proposals)}}


def edit(search: str, replace: str) -> dict[str, str]:
    return {"file": "train.py", "search": search, "replace": replace}


SCRIPTED = [
    reply(
        prop(0.0, hypothesis="x = 0 is a fair start"),
        prop(0.5, [edit("** 2 +", "** 2 * 0.5 +")], "halving the squared error halves the loss"),
    ),
    reply(
        prop(0.3, [edit("** 2 * 0.5", "** 2 * 0.25")], "a quarter of the squared error lowers it further"),
        prop(0.9, hypothesis="far from the optimum, worse"),
    ),
    reply(prop(0.31), prop(0.8, [edit("print(", "print('loss', ")], "a louder print changes nothing")),
    reply(analysis="done"),
]


def git(where: Path, *args: str, raw: bool = False) -> str:
    out = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout if raw else out.stdout.strip()


@pytest.fixture
def campaign(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Run the scripted 3-generation campaign in ``folder`` (a git repository first when
    ``repo``); returns its results folder."""
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.01)

    def run(folder: str = "camp", repo: bool = False) -> Path:
        camp = make_campaign(
            folder=folder,
            script=SCRIPT,
            generations=3,
            campaign="seeds = 2",
            # each better change kept on its own runs (this file tests the export, not the rule)
            extra="\n[rigor]\ncontrol = false\nreplicate = false\nnoise_runs = 1\n",
        )
        if repo:
            root = camp.parent
            git(root, "init", "-q", "-b", "main")
            git(root, "add", "-A")
            git(root, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "my code")
        with FakeLLM(SCRIPTED) as fake:
            monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", "x")
            monkeypatch.setenv("HPC_AGENT_MODEL", "fake-model")
            cli_run("run", str(camp), "--planner", "llm", *FAST)
        return tmp_path / "results" / "tiny"

    return run


def story(dest: Path, branch: str) -> str:
    """Each commit of the branch, oldest first: author, message and the change it makes. The
    margin's multiple of the SE (Student's t at the noise's degrees of freedom when it was
    judged) is written ``k``: how many runs had ended at that moment depends on the lanes'
    timing, and the rule's own tests check the margin."""
    out = []
    for sha in git(dest, "rev-list", "--reverse", branch).split():
        out.append(git(dest, "show", "--format=author: %an <%ae>%n%n%B", "--patch", sha))
    return re.sub(r"> [0-9.]+ SE \(", "> k SE (", "\n\n=====\n".join(out) + "\n")


def test_the_kept_configurations_as_a_branch(campaign: Any, cli_run: Any, tmp_path: Path) -> None:
    results = campaign()
    out = cli_run("export", str(results), "--format", "git", "-o", str(tmp_path / "log")).output
    dest = tmp_path / "log"
    assert "branch hpc-agent/tiny, 4 commit(s) (the base and 3 kept configuration(s))" in out
    assert f"git fetch {dest} hpc-agent/tiny:hpc-agent/tiny" in out

    # against the ledger: the kept configurations, in the order they were kept
    ledger = cli_run("export", str(results), "--format", "ledger").output.splitlines()
    rows = [dict(zip(ledger[0].split("\t"), r.split("\t"), strict=True)) for r in ledger[1:]]
    kept = [r for r in rows if r["verdict"] == "keep"]
    shas = git(dest, "rev-list", "--reverse", "hpc-agent/tiny").split()
    assert len(shas) == 1 + len(kept) and git(dest, "rev-list", "--max-parents=0", "HEAD") == shas[0]
    state = load_state(results)
    for sha, row in zip(shas[1:], kept, strict=True):
        msg = git(dest, "log", "-1", "--format=%B", sha)
        assert msg.startswith(f"{row['config']}: ") and f"hpc-agent-config: {row['config']}" in msg
        assert f"loss: {float(row['loss']):.6g} ± " in msg and f"n = {row['runs']})" in msg
        assert "Verdict: keep (" in msg
        # the tree is the code the configuration ran; its date the verdict's time
        config = next(c for c in state.configs() if c.config_id == row["config"])
        code = ResultsPaths(results).trial(config.trial_ids[0]).code
        assert git(dest, "show", f"{sha}:train.py", raw=True) == (code / "train.py").read_text()
        assert git(dest, "ls-tree", "--name-only", sha) == "train.py"
        at = int(state.verdicts[row["config"]]["at"])
        assert git(dest, "log", "-1", "--format=%at %ct", sha) == f"{at} {at}"
    assert git(dest, "show", f"{shas[0]}:train.py", raw=True) == SCRIPT
    assert git(dest, "log", "-1", "--format=%at", shas[0]) == str(int(state.started_at))
    champion = ResultsPaths(results).trial(state.champion("min").trial_ids[0]).code
    assert (dest / "train.py").read_text() == (champion / "train.py").read_text()  # checked out
    assert git(dest, "status", "--porcelain") == ""

    text = story(dest, "hpc-agent/tiny")
    if os.environ.get("HPC_AGENT_REGEN_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()

    # deterministic: the same results folder, the same commit ids
    cli_run("export", str(results), "--format", "git", "-o", str(tmp_path / "again"))
    assert git(tmp_path / "again", "rev-parse", "HEAD") == shas[-1]


def test_a_workdir_in_git_gives_a_branch_on_the_users_commit(
    campaign: Any, cli_run: Any, tmp_path: Path
) -> None:
    results = campaign(folder="repo/exp", repo=True)
    repo = tmp_path / "repo"
    mine = git(repo, "rev-parse", "HEAD")
    out = cli_run("export", str(results), "--format", "git", "-o", str(tmp_path / "log")).output
    assert f"on top of your commit {mine[:12]}" in out
    dest = tmp_path / "log"
    shas = git(dest, "rev-list", "--reverse", "hpc-agent/tiny").split()
    assert shas[0] == mine  # the branch starts from the user's commit
    assert git(dest, "rev-list", "--max-parents=0", "HEAD") == mine
    # the base commit: the user's tree, the editable files as snapshotted (the same: empty)
    assert git(dest, "rev-parse", f"{shas[1]}^{{tree}}") == git(repo, "rev-parse", "HEAD^{tree}")
    # each kept change touches exp/train.py, the editable file at its place in the repository
    assert git(dest, "diff", "--name-only", shas[1], shas[-1]) == "exp/train.py"
    assert (
        git(dest, "show", f"{shas[-1]}:exp/campaign.toml", raw=True)
        == (repo / "exp" / "campaign.toml").read_text()
    )

    git(repo, "fetch", "-q", str(dest), "hpc-agent/tiny:research")
    assert git(repo, "merge-base", "--is-ancestor", mine, "research") == ""
    assert git(repo, "rev-list", "--count", f"{mine}..research") == str(len(shas) - 1)
    assert "0001-0000: a quarter of the squared error" in git(repo, "log", "--format=%s", "research")


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ("not-empty", "exists and is not an empty folder"),
        ("no-output", "--format git writes a repository: it needs -o DIR"),
        ("no-editable", "has no editable files"),
        ("no-git", "git is not installed (export --format git runs it)"),
    ],
)
def test_bad_exports_exit_2(
    setup: str,
    error: str,
    make_campaign: Callable[..., Path],
    cli_run: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    camp = make_campaign(editable="[]" if setup == "no-editable" else '["train.py"]')
    cli_run("run", str(camp), "--planner", "random", *FAST)
    if setup == "no-git":
        monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    dest = tmp_path / "log"
    dest.mkdir()
    if setup == "not-empty":
        (dest / "x").write_text("mine")
    args = ["-o", str(dest)] if setup != "no-output" else []
    out = cli_run("export", str(tmp_path / "results" / "tiny"), "--format", "git", *args, code=2).output
    assert error in out and "fix:" in out and "Traceback" not in out
    if setup == "not-empty":
        assert (dest / "x").read_text() == "mine" and not (dest / ".git").exists()
    if setup == "no-editable":
        assert "--format ledger" in out


def test_a_commit_gone_from_the_repository_gives_a_branch_of_its_own(
    campaign: Any, cli_run: Any, tmp_path: Path
) -> None:
    results = campaign(folder="repo/exp", repo=True)
    subprocess.run(["rm", "-rf", str(tmp_path / "repo" / ".git")], check=True)  # the history is gone
    out = cli_run("export", str(results), "--format", "git", "-o", str(tmp_path / "log")).output
    assert "warning: the workdir's commit" in out and "the branch starts from the base snapshot alone" in out
    dest = tmp_path / "log"
    shas = git(dest, "rev-list", "--reverse", "hpc-agent/tiny").split()
    assert len(shas) == 4 and git(dest, "ls-tree", "--name-only", shas[-1]) == "train.py"
