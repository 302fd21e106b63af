"""The quickstart example, for real: torch training in local processes, planned by TPE."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import sys
from click.testing import CliRunner
from hpc_agent.cli import cli
r = CliRunner().invoke(cli, ["run", sys.argv[1], "--executor", "local", "--generations", "1", "-q"])
print(r.output)
print("HEAVY:" + ",".join(m for m in ("torch", "sklearn") if m in sys.modules))
sys.exit(r.exit_code)
"""


@pytest.mark.slow
def test_quickstart_one_generation(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(ROOT / "examples" / "quickstart")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "HEAVY:\n" in out.stdout + "\n", "the driver imported torch or scikit-learn"
    results = tmp_path / "results" / "quickstart"
    statuses = [json.loads(p.read_text()) for p in results.glob("gen-0000/trials/*/status.json")]
    assert len(statuses) == 4 and all(s["state"] == "completed" for s in statuses)
    for p in results.glob("gen-0000/trials/*/metrics.jsonl"):
        rows = [json.loads(line) for line in p.read_text().splitlines()]
        assert len(rows) >= 5 and {"val_loss", "val_acc", "step"} <= set(rows[-1])
        assert 0.0 < rows[-1]["val_loss"] < 3.0 and rows[-1]["val_acc"] > 0.5
    baseline = json.loads((results / "gen-0000" / "trials" / "0000-0000" / "params.json").read_text())
    assert baseline == {"lr": 0.001, "hidden": 64, "weight_decay": 0.0001, "activation": "relu", "seed": 0}
    # everything about the best trial, as a user reads it (provenance read back, not torch imported)
    show = subprocess.run(
        [sys.executable, "-m", "hpc_agent", "show", "results/quickstart", "best"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 0, show.stderr
    import torch

    for fragment in (
        "(the best trial)",
        "  val_loss  ",
        "  val_acc  ",
        f"torch {torch.__version__}",
        "stdout.log",
    ):
        assert fragment in show.stdout, fragment
    # the best trial again, exactly: same params, same code, its reproduction shown beside it
    best = next(line.split()[1] for line in show.stdout.splitlines() if line.startswith("trial "))
    from hpc_agent.store.results import load_state

    before = load_state(results)  # generation 0, and the candidates' replicates if any (issue 20)
    again_gen = max(before.generations) + 1
    rerun_id = f"{again_gen:04d}-0000"
    best_runs = sum(1 for t in before.trials.values() if t.config_id == before.trials[best].config_id)
    rerun = subprocess.run(
        [sys.executable, "-m", "hpc_agent", "rerun", "results/quickstart", best, "--executor", "local", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    again = results / f"gen-{again_gen:04d}" / "trials" / rerun_id
    original = results / f"gen-{before.trials[best].generation:04d}" / "trials" / best
    assert json.loads((again / "params.json").read_text()) == json.loads(
        (original / "params.json").read_text()
    )
    assert (again / "code" / "train.py").read_text() == (original / "code" / "train.py").read_text()
    assert json.loads((again / "status.json").read_text())["state"] == "completed"
    table = subprocess.run(
        [sys.executable, "-m", "hpc_agent", "export", "results/quickstart", "--format", "csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    header = table[0].split(",")
    assert "reproduced" in header and "reproduced_delta" in header
    rows = [dict(zip(header, line.split(","))) for line in table[1:]]
    # beside the original (each run of its configuration)
    assert len(rows) == len(before.trials) and sum(1 for r in rows if r["reproduced"]) == best_runs
    shown = subprocess.run(
        [sys.executable, "-m", "hpc_agent", "show", "results/quickstart", best],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "run again" in shown and f"rerun {rerun_id}" in shown
