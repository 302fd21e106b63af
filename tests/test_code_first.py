"""Issue 18: code-first campaigns, the user's script unchanged, the fixed evaluator.

End to end through the CLI, on the local executor and on the real local SLURM, with the
scripted OpenAI-compatible server (a real HTTP server) as the agent."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_agent.llm import transport
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state
from hpc_agent.testing import FakeLLM

FAST = ("--poll-interval", "0.05", "-q")
SLURM = ("--executor", "slurm", "--profile", "local", "-q")

# karpathy's autoresearch shape: hyperparameters are constants, the metric a printed line
CODE_TRAIN = textwrap.dedent(
    """
    LR = 0.5
    loss = (LR - 0.3) ** 2 + 0.01
    print(f"loss: {loss:.6f}")
    """
)
CODE_CAMPAIGN = textwrap.dedent(
    """
    [campaign]
    name = "cf"
    metric = "loss"
    generations = 2
    batch_size = 2

    [experiment]
    command = "python train.py"
    editable = ["train.py"]
    parse = { loss = '^loss:\\s*([-+0-9.eE]+)' }
    time_budget_s = 60
    kill_grace_s = 2

    [rigor]
    control = false
    replicate = false  # this file tests the lineage and the script's contract, not the rule
    noise_runs = 1
    """
)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.01)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeLLM]]:
    started: list[FakeLLM] = []

    def start(script: list[Any]) -> FakeLLM:
        fake = FakeLLM(script, api_key="sk-test").start()
        started.append(fake)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("HPC_AGENT_MODEL", "fake-model")
        return fake

    yield start
    for f in started:
        f.stop()


def code_campaign(root: Path, toml: str = CODE_CAMPAIGN, train: str = CODE_TRAIN) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(train)
    (root / "campaign.toml").write_text(toml)
    return root


def edit(search: str, replace: str) -> dict[str, str]:
    return {"file": "train.py", "search": search, "replace": replace}


def reply(*proposals: dict[str, Any], analysis: str = "reasoning") -> dict[str, Any]:
    return {"json": {"analysis": analysis, "proposals": list(proposals)}}


def prop(hypothesis: str, *edits: dict[str, str]) -> dict[str, Any]:
    return {"hypothesis": hypothesis, "params": {}, "patch": list(edits)}


@pytest.mark.parametrize("where", ["local", "slurm"])
def test_a_code_first_campaign_follows_the_lineage_of_kept_patches(
    where: str, tmp_path: Path, cli_run: Any, serve: Any, request: pytest.FixtureRequest
) -> None:
    if where == "slurm":
        request.getfixturevalue("slurm")
    camp = code_campaign(tmp_path / "camp")
    crash = 'raise RuntimeError("boom: the patch compiles but fails")\nprint(f"loss: {loss:.6f}")'
    fake = serve([
        # generation 0: the baseline (the unmodified code) and one change
        reply(prop("a lower LR", edit("LR = 0.5", "LR = 0.35"))),
        # analysis of 0 + generation 1, on the champion's code (LR = 0.35)
        reply(
            prop("lower still", edit("LR = 0.35", "LR = 0.32")),
            prop("a change that fails at run time", edit('print(f"loss: {loss:.6f}")', crash)),
            analysis="The lower LR helped.",
        ),
        reply(analysis="0.32 is best."),
    ])  # fmt: skip
    executor = SLURM if where == "slurm" else ("--executor", "local", *FAST)
    out = cli_run("run", str(camp), "--planner", "llm", *executor)
    assert "done: 2 generation(s)" in out.output
    results = tmp_path / "results" / "cf"
    paths = ResultsPaths(results)
    assert len(fake.chat_requests) == 3
    code = {
        t: (paths.trial(t).code / "train.py").read_text() for t in ("0000-0000", "0000-0001", "0001-0000")
    }
    assert code["0000-0000"] == CODE_TRAIN  # the baseline: the unmodified code
    assert "LR = 0.35" in code["0000-0001"]
    assert "LR = 0.32" in code["0001-0000"] and "LR = 0.35" not in code["0001-0000"]
    crashed = (paths.trial("0001-0001").code / "train.py").read_text()
    assert "LR = 0.35" in crashed and "boom" in crashed  # the champion's code, then the patch
    plans = [json.loads(paths.plan(g).read_text()) for g in range(2)]
    assert plans[0]["trials"][0]["source"] == "baseline"
    assert plans[0]["trials"][0]["hypothesis"] == "baseline: the unmodified code"
    assert [t["parent"] for t in plans[1]["trials"]] == ["0000-0001", "0000-0001"]

    state = load_state(results)
    configs = {c.config_id: c for c in state.configs()}
    assert configs["0000-0001"].verdict == "keep"
    assert configs["0001-0000"].verdict == "keep"
    assert configs["0001-0001"].verdict == "crash"
    assert "boom: the patch compiles but fails" in configs["0001-0001"].verdict_reason
    status = json.loads(paths.trial("0001-0001").status.read_text())
    assert status["state"] == "failed" and "RuntimeError: boom" in status["stderr_tail"]
    assert state.champion("min").config_id == "0001-0000"
    assert state.champion("min").objective == pytest.approx(0.0104)
    assert (camp / "train.py").read_text() == CODE_TRAIN  # the user's file is never touched

    system = str(fake.chat_requests[0].messages[0]["content"])
    assert '"params" is {}: this campaign has no search space.' in system
    assert "None: a code-first campaign" in str(fake.chat_requests[0].messages[-1]["content"])


@pytest.mark.parametrize("where", ["local", "slurm"])
def test_with_the_llm_down_a_code_first_generation_replicates_the_champion(
    where: str, tmp_path: Path, cli_run: Any, serve: Any, request: pytest.FixtureRequest
) -> None:
    if where == "slurm":
        request.getfixturevalue("slurm")
    camp = code_campaign(tmp_path / "camp", CODE_CAMPAIGN + "\n[planner]\nmax_retries = 0\n")
    serve([{"status": 500, "forever": True}])
    executor = SLURM if where == "slurm" else ("--executor", "local", *FAST)
    out = cli_run("run", str(camp), "--planner", "llm", *executor)
    assert "done: 2 generation(s)" in out.output
    paths = ResultsPaths(tmp_path / "results" / "cf")
    plan = json.loads(paths.plan(1).read_text())
    assert plan["note"].startswith("no code change to run (LLM request failed: the server failed (HTTP 500")
    assert plan["note"].endswith("2 control(s) of 0000-0000")
    assert "TPE planned" not in plan["note"]
    assert [(t["config"], t["seed"], t["purpose"], t["source"]) for t in plan["trials"]] == [
        ("0000-0000", 1, "control", "control"),
        ("0000-0000", 2, "control", "control"),
    ]
    state = load_state(paths.root)
    baseline = next(c for c in state.configs() if c.config_id == "0000-0000")
    assert baseline.n_completed == 3  # the noise is now estimated from its replicates
    journal = [json.loads(x) for x in paths.journal.read_text().splitlines()]
    planned = [e for e in journal if e["event"] == "planned" and e["generation"] == 1]
    assert planned[0]["note"] == plan["note"]


def test_tpe_in_a_code_first_campaign_says_it_cannot_write_code(tmp_path: Path, cli_run: Any) -> None:
    camp = code_campaign(tmp_path / "camp")
    out = cli_run("run", str(camp), "--planner", "tpe", "--executor", "local", "--poll-interval", "0.05")
    assert "the tpe planner cannot write code and this campaign has no search space" in out.output
    plan = json.loads(ResultsPaths(tmp_path / "results" / "cf").plan(1).read_text())
    assert {t["source"] for t in plan["trials"]} == {"control"}


# ------------------------------------------------------------------------------- the user's script

ARGPARSE_TRAIN = textwrap.dedent(
    """
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float, required=True)
    p.add_argument("--mode", choices=["a", "b"], required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    loss = (a.x - 0.3) ** 2 + (0.0 if a.mode == "a" else 0.1)
    for step in range(3):
        print(f"step {step} | loss {loss + 0.1 * (2 - step):.6f}")
    """
)
HYDRA_TRAIN = textwrap.dedent(
    """
    import sys
    cfg = dict(arg.split("=", 1) for arg in sys.argv[1:])
    loss = (float(cfg["x"]) - 0.3) ** 2 + (0.0 if cfg["mode"] == "a" else 0.1)
    print("loss=%.6f" % loss, file=sys.stderr)
    """
)


@pytest.mark.parametrize(
    "command, script, parse",
    [
        ("python train.py {args} --seed {seed}", ARGPARSE_TRAIN, "parse = { loss = 'loss ([0-9.]+)' }"),
        ("python train.py {overrides}", HYDRA_TRAIN, "parse = { loss = '^loss=(.*)$' }\nparse_stderr = true"),
        ("python train.py --x={x} --mode {mode}", ARGPARSE_TRAIN, "parse = { loss = 'loss ([0-9.]+)' }"),
    ],
)
def test_an_unchanged_script_runs_a_whole_campaign(
    command: str, script: str, parse: str, make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path
) -> None:
    camp = make_campaign(script=script, command=command, experiment=parse, generations=2, editable="[]")
    cli_run("run", str(camp), "--planner", "random", "--executor", "local", *FAST)
    results = tmp_path / "results" / "tiny"
    state = load_state(results)
    assert state.counts()["completed"] == 4
    for t in state.trials.values():
        p = t.params
        expected = (float(p["x"]) - 0.3) ** 2 + (0.0 if p["mode"] == "a" else 0.1)
        assert t.objective == pytest.approx(expected, abs=2e-6)
        launch = json.loads((ResultsPaths(results).trial(t.trial_id).launch).read_text())
        assert launch["command"][:2] == ["python", "train.py"] and "{" not in " ".join(launch["command"])
    if "{args}" in command:  # every match is a step
        lines = [
            json.loads(x) for x in ResultsPaths(results).trial("0000-0000").metrics.read_text().splitlines()
        ]
        assert [r["step"] for r in lines] == [0, 1, 2] and all(r["parsed"] == "stdout" for r in lines)


@pytest.mark.parametrize(
    "experiment, space, message",
    [
        (
            'parse = { loss = "([0-9" }',
            None,
            "[experiment] parse.loss = '([0-9': the pattern does not compile",
        ),
        ("parse = { loss = 'loss: [0-9.]+' }", None, "the pattern has no group"),
        ("", None, "[experiment] command: placeholder {lr} names no parameter; valid placeholders are: {x}"),
        ("", "", "no [space] and no editable file"),
        (
            'evaluate = "python e.py"\ntimeout_min = 5\nevaluate_time_s = 600',
            None,
            "timeout_min = 5 is shorter than time_budget_s + evaluate_time_s = 630 s",
        ),
        (
            'evaluate = "python e.py --lr {lr}"',
            None,
            "[experiment] evaluate: placeholder {lr} names no parameter",
        ),
    ],
)
def test_bad_placeholders_and_patterns_exit_2_before_any_trial(
    experiment: str,
    space: str | None,
    message: str,
    make_campaign: Callable[..., Path],
    cli_run: Any,
    tmp_path: Path,
) -> None:
    kw: dict[str, Any] = {"experiment": experiment}
    if "command: placeholder" in message:
        kw["command"] = "python train.py --lr {lr}"
    if space is not None:
        kw.update(space=space, editable="[]")
    camp = make_campaign(**kw)
    out = cli_run("run", str(camp), "--planner", "random", "--executor", "local", code=2).output
    assert message in " ".join(out.split()), out
    assert "error:" in out and "fix:" in out and "Traceback" not in out
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------- the evaluator

CHEAT_TRAIN = textwrap.dedent(
    """
    import json, os
    os.makedirs(os.environ["HPC_AGENT_CHECKPOINT_DIR"], exist_ok=True)
    with open(os.path.join(os.environ["HPC_AGENT_CHECKPOINT_DIR"], "model.json"), "w") as f:
        json.dump({"LR": 0.5}, f)
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        f.write(json.dumps({"step": 0, "loss": 0.0, "test_loss": 0.0, "train_loss": 1.5}) + "\\n")
    print("loss: 0.0000")  # a fake value of the metric
    # the evaluation.jsonl the evaluator will write, forged in advance
    with open(os.path.join(os.environ["HPC_AGENT_TRIAL_DIR"], "evaluation.jsonl"), "w") as f:
        f.write(json.dumps({"loss": -1.0}) + "\\n")
    """
)
EVALUATE = textwrap.dedent(
    """
    import json, os, sys
    model = json.load(open(os.path.join(os.environ["HPC_AGENT_CHECKPOINT_DIR"], "model.json")))
    if model["LR"] > 10:
        sys.exit("evaluate: the model is broken")
    print(f"loss: {(model['LR'] - 0.3) ** 2 + 0.01:.6f}")
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        f.write(json.dumps({"test_loss": 0.5, "cwd": os.getcwd()}) + "\\n")
    """
)


def evaluated_campaign(root: Path, train: str = CHEAT_TRAIN) -> Path:
    toml = textwrap.dedent(
        """
        [campaign]
        name = "ev"
        metric = "loss"
        report_metrics = ["train_loss"]
        holdout_metrics = ["test_loss"]
        generations = 1
        batch_size = 1

        [experiment]
        command = "python train.py"
        editable = ["train.py"]
        parse = { loss = '^loss:\\s*([-+0-9.eE]+)' }
        evaluate = "python evaluate.py"
        time_budget_s = 60
        kill_grace_s = 2
        """
    )
    code_campaign(root, toml, train)
    (root / "evaluate.py").write_text(EVALUATE)
    return root


@pytest.mark.parametrize("where", ["local", "slurm"])
def test_the_record_holds_the_evaluators_value_not_the_training_commands(
    where: str, tmp_path: Path, cli_run: Any, request: pytest.FixtureRequest
) -> None:
    if where == "slurm":
        request.getfixturevalue("slurm")
    camp = evaluated_campaign(tmp_path / "camp")
    executor = SLURM if where == "slurm" else ("--executor", "local", *FAST)
    cli_run("run", str(camp), "--planner", "tpe", *executor)
    paths = ResultsPaths(tmp_path / "results" / "ev")
    trial = paths.trial("0000-0000")
    state = load_state(paths.root)
    assert state.trials["0000-0000"].objective == pytest.approx(0.05)  # the evaluator's, not 0.0
    status = json.loads(trial.status.read_text())
    assert status["state"] == "completed"
    assert status["ignored_metrics"] == {"loss": 2, "test_loss": 1}
    assert status["evaluated_by"] == ["python", "evaluate.py"]
    lines = [json.loads(x) for x in trial.metrics.read_text().splitlines()]
    assert lines[0] == {"step": 0, "ignored/loss": 0.0, "ignored/test_loss": 0.0, "train_loss": 1.5}
    assert {"loss": -1.0, "source": "evaluate"} not in lines  # the forged file was removed first
    evaluated = [r for r in lines if r.get("source") == "evaluate"]
    assert [r.get("loss") for r in evaluated] == [None, 0.05]
    assert evaluated[0]["cwd"] == str(paths.evaluator)  # the unpatched snapshot, not the trial's code
    assert (paths.evaluator / "evaluate.py").read_text() == EVALUATE
    assert not (paths.evaluator / "evaluate.py").stat().st_mode & 0o222  # read-only
    table = cli_run("export", str(paths.root), "--format", "csv", "--per-trial").output
    assert "0.05" in table and "test_loss" in table


def test_an_evaluator_that_fails_makes_the_trial_failed_with_its_stderr(tmp_path: Path, cli_run: Any) -> None:
    camp = evaluated_campaign(tmp_path / "camp", CHEAT_TRAIN.replace('{"LR": 0.5}', '{"LR": 50}'))
    cli_run("run", str(camp), "--planner", "tpe", "--executor", "local", *FAST, code=1)
    paths = ResultsPaths(tmp_path / "results" / "ev")
    status = json.loads(paths.trial("0000-0000").status.read_text())
    assert status["state"] == "failed"
    assert status["reason"] == "the evaluator failed: exit code 1: evaluate: the model is broken"
    assert "evaluate: the model is broken" in status["stderr_tail"]


def test_an_evaluation_interrupted_is_run_again_without_training(tmp_path: Path) -> None:
    """A job preempted during the evaluation (SIGTERM to the runner, as SLURM sends it): the
    trial is ``preempted``, and the next attempt runs the evaluator only, not the training."""
    import signal
    import subprocess
    import sys
    import time

    from hpc_agent.job.trial import Launch, read_status

    root = tmp_path / "trials" / "t"
    (root / "code").mkdir(parents=True)
    evaluator = tmp_path / "evaluator"
    evaluator.mkdir()
    (evaluator / "evaluate.py").write_text(
        "import os, sys, time\n"
        "if not os.path.exists(os.environ['HPC_AGENT_TRIAL_DIR'] + '/second'):\n"
        "    open(os.environ['HPC_AGENT_TRIAL_DIR'] + '/second', 'w').close(); time.sleep(60)\n"
        'print("loss: 0.25")\n'
    )
    (root / "code" / "train.py").write_text("import os; open('../trainings', 'a').write('x')\n")
    Launch(
        trial="t",
        command=("python", "train.py"),
        time_budget_s=30,
        kill_grace_s=2,
        parse={"loss": r"^loss: (\S+)"},
        evaluate=("python", "evaluate.py"),
        evaluate_cwd="../../evaluator",
        evaluate_time_s=90,
        evaluated=("loss",),
    ).write(root)
    code = f"from hpc_agent.job.runner import run_trial; print(run_trial({str(root)!r}))"
    first = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (root / "second").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    assert first.communicate(timeout=60)[0].strip() == "preempted"
    status = read_status(root)
    assert status and status["state"] == "preempted" and status["interrupted_by"] == "SIGTERM"
    assert (root / "trained.json").exists() and not (root / "metrics.jsonl").exists()
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == "completed", again.stderr
    assert (root / "trainings").read_text() == "x"  # trained once
    assert json.loads((root / "metrics.jsonl").read_text()) == {"step": 0, "loss": 0.25, "source": "evaluate"}


def test_placeholders_fill_words_and_text() -> None:
    from hpc_agent.job.script import fill_command, parse_metrics

    params = {"lr": 0.001, "act": "gelu tanh", "deep": True}
    assert fill_command(("python", "t.py", "{args}"), params, 3) == (
        "python", "t.py", "--lr", "0.001", "--act", "gelu tanh", "--deep", "true",
    )  # fmt: skip
    assert fill_command(("python", "t.py", "{overrides}", "seed={seed}"), params, 3) == (
        "python", "t.py", "lr=0.001", "act=gelu tanh", "deep=true", "seed=3",
    )  # fmt: skip
    assert fill_command(("bash", "-c", "python t.py {args} > $HOME/x ${lr}", "--lr={lr}"), params, 0) == (
        "bash", "-c", "python t.py --lr 0.001 --act 'gelu tanh' --deep true > $HOME/x ${lr}", "--lr=0.001",
    )  # fmt: skip
    text = "step 0 loss 2.5 acc 0.1\nnoise\nstep 1 loss nan\nloss 1.5e-1 acc 0.5\n"
    got = parse_metrics(text, {"loss": r"loss (\S+)", "acc": r"acc (\S+)"}, {"loss": 4})
    assert len(got) == 4
    assert got[0] == {"step": 4, "loss": 2.5} and got[1] == {
        "step": 0,
        "acc": 0.1,
    }  # steps apart: two records
    assert got[2] == {"step": 5, "loss": 0.15} and got[3] == {"step": 1, "acc": 0.5}  # nan skipped
