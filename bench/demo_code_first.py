"""A small code-first nanolm campaign, end to end, and its ledger (issue 18's figure).

examples/nanolm-code is copied to a temporary folder with its training cut to
``--train-seconds`` (the only change), and run for three generations of two trials with the
scripted OpenAI-compatible server (:mod:`hpc_agent.testing.fake_llm`, real HTTP) as the
agent: every proposal is a patch of train.py's constants, applied to the champion's code, one
of them compiles but fails at run time; the fixed evaluator (``prepare.py --evaluate``)
scores every trial. Prints ``hpc-agent export RESULTS --format ledger``.

    python bench/demo_code_first.py [--train-seconds 20] [--executor local|slurm] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hpc_agent.testing import FakeLLM

ROOT = Path(__file__).resolve().parents[1]


def edit(search: str, replace: str) -> dict[str, str]:
    return {"file": "train.py", "search": search, "replace": replace}


def reply(analysis: str, *proposals: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "json": {
            "analysis": analysis,
            "proposals": [{"hypothesis": h, "params": {}, "patch": [e]} for h, e in proposals],
        }
    }


SCRIPT = [
    reply(
        "Start from the baseline; the learning rate is the first suspect at this budget.",
        (
            "double the peak learning rate (1e-2 -> 2e-2): a short budget rewards a fast start",
            edit("LR = 1e-2", "LR = 2e-2"),
        ),
    ),
    reply(
        "Generation 0 done; one change per experiment, on the champion's code.",
        (
            "a third layer: more capacity per step at a modest cost in steps",
            edit("N_LAYER = 2", "N_LAYER = 3"),
        ),
    ),
    reply(
        "Generation 1 done.",
        (
            "a longer cooldown (0.5 -> 0.7): anneal more of the budget",
            edit("COOLDOWN_FRAC = 0.5", "COOLDOWN_FRAC = 0.7"),
        ),
        ("a wider model (N_EMBD = 100): more channels", edit("N_EMBD = 64", "N_EMBD = 100")),
    ),
    reply("Done: the cooldown and the learning rate were what mattered at this budget."),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=20.0)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="hpca-code-first-"))
    camp = work / "nanolm-code"
    shutil.rmtree(camp, ignore_errors=True)
    camp.mkdir(parents=True)
    src = ROOT / "examples" / "nanolm-code"
    for name in ("train.py", "prepare.py", "program.md", "campaign.toml"):
        shutil.copyfile(src / name, camp / name)
    train = (camp / "train.py").read_text()
    train = train.replace("TRAIN_SECONDS = 60.0", f"TRAIN_SECONDS = {args.train_seconds:g}")
    (camp / "train.py").write_text(train.replace("EVAL_EVERY_S = 15.0", "EVAL_EVERY_S = 5.0"))
    toml = (camp / "campaign.toml").read_text()
    (camp / "campaign.toml").write_text(
        toml.replace("generations = 6", "generations = 3").replace("batch_size = 4", "batch_size = 2")
    )
    results = work / "results"
    with FakeLLM(SCRIPT) as fake:
        env = dict(
            os.environ, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-demo", HPC_AGENT_MODEL="fake-model"
        )
        cmd = [
            sys.executable,
            "-m",
            "hpc_agent",
            "run",
            str(camp),
            "--planner",
            "llm",
            "--executor",
            args.executor,
        ]
        subprocess.run([*cmd, "--results", str(results), "-q"], env=env, check=True)
    ledger = [sys.executable, "-m", "hpc_agent", "export", str(results), "--format", "ledger"]
    print(subprocess.run(ledger, check=True, capture_output=True, text=True).stdout)
    print(f"(campaign in {work})")


if __name__ == "__main__":
    main()
