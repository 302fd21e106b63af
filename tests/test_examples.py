"""The examples train for real (torch on the CPU), outside and inside a campaign."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def trial_env(tmp_path: Path, params: dict[str, object]) -> dict[str, str]:
    """The environment the runner gives a trial whose folder is ``tmp_path``; params.json written."""
    (tmp_path / "params.json").write_text(json.dumps(params))
    return dict(
        os.environ,
        HPC_AGENT_PARAMS=str(tmp_path / "params.json"),
        HPC_AGENT_METRICS=str(tmp_path / "metrics.jsonl"),
        HPC_AGENT_CHECKPOINT_DIR=str(tmp_path / "checkpoint"),
        HPC_AGENT_TRIAL_DIR=str(tmp_path),
        OMP_NUM_THREADS="1",
    )


def run_example(name: str, tmp_path: Path, params: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "train.py")],
        cwd=tmp_path,
        env=trial_env(tmp_path, params),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_charlm_learns_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    # evaluations every 10 steps: enough of them even on a loaded 2-core machine
    out = run_example("charlm", tmp_path, {"train_seconds": 6.0, "eval_every": 10, "lr": 3e-3})
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 3 and rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns
    assert (tmp_path / "checkpoint" / "last.pt").exists()
    # a requeued trial resumes: the budget is spent, so it only evaluates where it stopped
    again = run_example("charlm", tmp_path, {"train_seconds": 6.0, "eval_every": 10, "lr": 3e-3})
    assert again.returncode == 0, again.stderr
    assert "resumed at step" in again.stdout
    last = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] >= rows[-1]["step"] - 10


def test_charlm_campaign_spec_is_valid() -> None:
    from hpc_agent.config.spec import load_spec

    spec = load_spec(ROOT / "examples" / "charlm")
    assert spec.campaign.goal.startswith("Teach a tiny character-level GPT")
    assert spec.space.defaults() is not None  # generation 0 starts from the baseline
    for n_embd in spec.space["n_embd"].values:  # type: ignore[union-attr]
        for n_head in spec.space["n_head"].values:  # type: ignore[union-attr]
            assert int(n_embd) % int(n_head) == 0  # every configuration of the space is buildable


# --------------------------------------------------------------------------- nanolm

NANOLM = ROOT / "examples" / "nanolm"


def nanolm_prepare() -> Any:
    """examples/nanolm/prepare.py as a module (it is not a package)."""
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("nanolm_prepare", NANOLM / "prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nanolm_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    prepare = nanolm_prepare()
    files = prepare.source_files()
    assert len(files) > 100 and files == sorted(files)
    # a file's split depends on its path alone (a fixed hash): golden values, so that a change
    # of the yardstick cannot go unnoticed
    assert [prepare.split_of(f) for f in ("typing.py", "argparse.py", "urllib/request.py")] == [
        "val",
        "train",
        "test",
    ]
    splits = prepare.load_splits()
    for name in prepare.SPLITS:  # each split holds exactly its files, whole, in sorted order
        mine = [f for f in files if prepare.split_of(f) == name]
        assert mine, f"no file in {name}"
        expected = b"".join((prepare.stdlib_root() / f).read_bytes() + prepare.SEPARATOR for f in mine)
        assert splits[name] == expected
    # the same bytes in another process, whatever its hash seed
    code = "import json, prepare; print(json.dumps(prepare.manifest()))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], cwd=NANOLM, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == prepare.manifest()

    # test suites, third-party packages and generated code are not part of the corpus
    for rel in ("a.py", "pkg/b.py", "pkg/c.txt", "test/t.py", "site-packages/x/y.py", "encodings/cp1.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert prepare.source_files(tmp_path) == ["a.py", "pkg/b.py"]


@pytest.mark.slow
def test_nanolm_trains_reports_both_metrics_and_resumes_on_the_same_clock(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    params: dict[str, object] = {"train_seconds": 4.0, "eval_every_s": 1.0}
    # the first attempt is killed (as a preemption would) once it has written a checkpoint
    first = subprocess.Popen(
        [sys.executable, str(NANOLM / "train.py")],
        cwd=tmp_path,
        env=trial_env(tmp_path, params),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ckpt = tmp_path / "checkpoint" / "last.pt"
    deadline = time.monotonic() + 60
    while not ckpt.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()
    _, err = first.communicate()
    assert ckpt.exists(), err.decode()
    before = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert before and "test_bpb" not in before[-1]  # killed before the end

    again = run_example("nanolm", tmp_path, params)
    assert again.returncode == 0, again.stderr
    assert "resumed at step" in again.stdout
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in rows if "val_bpb" in r]
    last = rows[-1]
    # the clock went on from the checkpoint: 4 s of training in all, not 4 s more
    assert 4.0 <= last["train_s"] < 6.0 and last["step"] > before[-1]["step"]
    assert all(0 < r["val_bpb"] < 8 for r in curve)  # better than a uniform guess over bytes
    assert curve[-1]["val_bpb"] < curve[0]["val_bpb"]  # it learns
    assert not any("test_bpb" in r for r in rows)  # the held-out score is the evaluator's alone
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"]["train_seconds"] == 4.0 and run["step"] == last["step"]
    assert len(run["data"]["sha256"]) == 64
    # the fixed evaluator scores the exported model: the same numbers as the model itself
    evaluation = subprocess.run(
        [sys.executable, "prepare.py", "--evaluate"],
        cwd=NANOLM,
        env=dict(trial_env(tmp_path, params), HPC_AGENT_METRICS=str(tmp_path / "evaluation.jsonl")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert evaluation.returncode == 0, evaluation.stderr
    scores = json.loads((tmp_path / "evaluation.jsonl").read_text())
    assert 0 < scores["val_bpb"] < 8 and 0 < scores["test_bpb"] < 8
    assert f"val_bpb: {scores['val_bpb']:.4f}" in evaluation.stdout
    # requeued once more after the end: nothing left to train, the same model saved again
    third = run_example("nanolm", tmp_path, params)
    assert third.returncode == 0, third.stderr
    assert json.loads((tmp_path / "run.json").read_text())["step"] == last["step"]


def test_nanolm_campaign_spec_is_valid_and_starts_from_train_py_defaults(tmp_path: Path) -> None:
    from hpc_agent.config.scaffold import scaffold
    from hpc_agent.config.spec import load_spec

    spec = load_spec(NANOLM)
    assert load_spec(scaffold("mylm", "nanolm", where=tmp_path)).name == "mylm"  # init --template nanolm
    assert spec.campaign.metric == "val_bpb" and spec.campaign.mode == "min"
    assert "test_bpb" not in spec.campaign.report_metrics  # held out: never shown to a planner
    assert spec.campaign.holdout_metrics == ("test_bpb",)
    code = (NANOLM / "train.py").read_text().split('"""', 2)[2]  # the editable file, after its docstring
    assert "prepare.save_model(" in code and '"test"' not in code  # the scores are the evaluator's
    assert "evaluate_bpb" not in code.split("prepare.save_model(")[1]  # nothing scored after the export
    assert spec.experiment.editable == ("train.py",)  # prepare.py, the yardstick, is not
    assert spec.experiment.evaluate == ("python", "prepare.py", "--evaluate")
    assert spec.evaluated_metrics == ("val_bpb", "test_bpb")
    assert Path(spec.planner.brief).name == "program.md"
    # generation 0 (the space's defaults) is train.py's own baseline: `python train.py` by hand
    # runs the same configuration
    call = next(
        node
        for node in ast.walk(ast.parse((NANOLM / "train.py").read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "hpc_agent.params"
    )
    defaults = ast.literal_eval(call.args[0])
    assert spec.space.defaults() == {name: defaults[name] for name in spec.space.names}
    for n_embd in spec.space["n_embd"].values:  # type: ignore[union-attr]
        assert int(n_embd) % defaults["head_dim"] == 0  # every width of the space is buildable


# --------------------------------------------------------------------------- code-first, unchanged scripts

NANOLM_CODE = ROOT / "examples" / "nanolm-code"


def test_nanolm_code_is_code_first_with_the_same_yardstick(tmp_path: Path) -> None:
    from hpc_agent.config.scaffold import scaffold
    from hpc_agent.config.spec import load_spec

    spec = load_spec(NANOLM_CODE)
    assert spec.code_first and spec.space.defaults() == {}  # the baseline is the unmodified code
    assert spec.experiment.evaluate == ("python", "prepare.py", "--evaluate")
    assert (NANOLM_CODE / "prepare.py").read_bytes() == (NANOLM / "prepare.py").read_bytes()
    code = (NANOLM_CODE / "train.py").read_text()
    assert "hpc_agent.params(" not in code and "\nLR = 1e-2" in code  # constants, as in autoresearch
    made = scaffold("mine", "nanolm-code", where=tmp_path)  # init --template nanolm-code
    assert not (made / "prepare.py").is_symlink() and load_spec(made).code_first
    header = (made / "campaign.toml").read_text()
    assert "No [space]: every experiment is a change of the editable files" in header


@pytest.mark.slow
def test_nanolm_code_campaign_scored_by_the_fixed_evaluator(tmp_path: Path) -> None:
    """The code-first nanolm through a campaign (TPE: the baseline, then replicates), its
    training cut to 2 s in a copy: the numbers of record come from prepare.py --evaluate."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from hpc_agent.cli import cli
    from hpc_agent.store.results import load_state

    camp = tmp_path / "lm"
    camp.mkdir()
    for name in ("train.py", "prepare.py", "program.md"):
        (camp / name).write_bytes((NANOLM_CODE / name).read_bytes())
    train = (camp / "train.py").read_text()
    (camp / "train.py").write_text(train.replace("TRAIN_SECONDS = 60.0", "TRAIN_SECONDS = 2.0"))
    toml = (NANOLM_CODE / "campaign.toml").read_text()
    toml = toml.replace("generations = 6", "generations = 2").replace("batch_size = 4", "batch_size = 1")
    (camp / "campaign.toml").write_text(toml)
    args = [
        "run",
        str(camp),
        "--planner",
        "tpe",
        "--executor",
        "local",
        "--results",
        str(tmp_path / "r"),
        "-q",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    state = load_state(tmp_path / "r")
    assert [t.purpose for t in state.trials.values()] == ["", "control"]  # the baseline, a replicate
    baseline = state.configs()[0]
    assert baseline.n_completed == 2 and all(0 < v < 8 for v in baseline.values)
    trial = tmp_path / "r" / "gen-0000" / "trials" / "0000-0000"
    status = json.loads((trial / "status.json").read_text())
    assert status["evaluated_by"] == ["python", "prepare.py", "--evaluate"]
    rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    record = [r for r in rows if "val_bpb" in r]
    assert len(record) == 1 and record[0]["source"] == "evaluate" and "test_bpb" in record[0]
    assert baseline.values[0] == pytest.approx(record[0]["val_bpb"])


def test_the_argparse_example_runs_unchanged(tmp_path: Path) -> None:
    """examples/argparse: a script that knows nothing of hpc-agent, through a whole campaign."""
    pytest.importorskip("sklearn")
    from click.testing import CliRunner

    from hpc_agent.cli import cli
    from hpc_agent.store.results import load_state

    source = (ROOT / "examples" / "argparse" / "train.py").read_text()
    assert "hpc_agent" not in source and "HPC_AGENT" not in source
    camp = tmp_path / "ap"
    camp.mkdir()
    (camp / "train.py").write_text(source.replace("default=20", "default=3"))  # 3 epochs: a test
    (camp / "campaign.toml").write_text((ROOT / "examples" / "argparse" / "campaign.toml").read_text())
    args = [
        "run",
        str(camp),
        "--planner",
        "random",
        "--executor",
        "local",
        "--generations",
        "1",
        "--batch-size",
        "2",
    ]
    result = CliRunner().invoke(cli, [*args, "--results", str(tmp_path / "r"), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    state = load_state(tmp_path / "r")
    assert state.counts()["completed"] == 2
    for t in state.trials.values():
        rows = [
            json.loads(x)
            for x in (tmp_path / "r" / "gen-0000" / "trials" / t.trial_id / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        assert [r["step"] for r in rows] == [0, 1, 2]  # every printed line a step
        assert set(rows[0]) == {"step", "val_loss", "val_acc", "parsed"}  # one line, one record
        assert t.objective == rows[-1]["val_loss"] and 0 < t.objective < 3
