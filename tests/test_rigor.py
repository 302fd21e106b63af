"""Research rigor: the noise floor, the promotion rule, controls, confirmation, held-out
metrics and the ledger (issue 10)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN

from hpc_agent.config.spec import RigorSection, load_spec
from hpc_agent.loop.campaign import Campaign
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.science.rigor import DISCARD, KEEP, final_champion, judge, noise, student_t_cdf
from hpc_agent.store.journal import Journal
from hpc_agent.store.results import load_state
from hpc_agent.store.state import ConfigResult
from hpc_agent.testing import ScriptedExecutor

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "report"


def config(cid: str, values: list[float], purpose: str = "") -> ConfigResult:
    return ConfigResult(
        config_id=cid,
        generation=0,
        params={},
        hypothesis="",
        source="",
        parent=None,
        patch=None,
        trial_ids=(cid,),
        objective=sum(values) / len(values) if values else None,
        n_completed=len(values),
        pending=False,
        failed_reasons=() if values else (f"{cid}: failed: boom",),
        values=tuple(values),
        purpose=purpose,
    )


# ------------------------------------------------------------------------------- the statistics


def test_the_noise_floor_recovers_a_known_sigma() -> None:
    rng = random.Random(0)
    sigma = 0.05
    configs = [config(f"c{i}", [1.0 + i + rng.gauss(0, sigma) for _ in range(4)]) for i in range(40)]
    floor = noise([*configs, config("single", [3.0]), config("conf", [9.0, 1.0], purpose="confirm")])
    assert floor.n == 40 * 3 and floor.how == "seeds"  # singles and confirmations not pooled
    assert floor.sigma is not None and abs(floor.sigma - sigma) / sigma < 0.15
    assert noise([config("a", [1.0])]).sigma is None


@pytest.mark.parametrize(("better_by", "verdict"), [(1.0, DISCARD), (5.0, KEEP)])
def test_a_challenger_within_the_noise_is_not_promoted(better_by: float, verdict: str) -> None:
    """With σ known (estimated from replicates), a challenger 1σ better than the champion is
    noise at k = 2 (one run each: SE = σ√2, so 1σ is 0.7 SE), and 5σ better is not (3.5 SE)."""
    rng = random.Random(1)
    sigma = 0.1
    floor = noise([config(f"r{i}", [rng.gauss(0, sigma) for _ in range(6)]) for i in range(30)])
    champion = config("champ", [1.0])
    challenger = config("new", [1.0 - better_by * sigma])
    got, reason, improvement, se = judge(challenger, champion, floor, RigorSection(k=2.0), "min")
    assert got == verdict, reason
    assert improvement == pytest.approx(better_by * sigma) and se == pytest.approx(floor.sigma * 2**0.5)
    assert ("within the noise" in reason) == (verdict == DISCARD)


def test_worse_and_crashed_challengers_and_the_first_configuration() -> None:
    floor = noise([config("r", [0.0, 0.1, -0.1])])
    rule = RigorSection()
    assert judge(config("w", [2.0]), config("c", [1.0]), floor, rule, "min")[0] == DISCARD
    assert judge(config("w", [2.0]), config("c", [1.0]), floor, rule, "max")[0] == KEEP  # max: higher wins
    crash = judge(config("x", []), config("c", [1.0]), floor, rule, "min")
    assert crash[0] == "crash" and crash[1] == "failed: boom"
    assert judge(config("first", [5.0]), None, floor, rule, "min")[0] == KEEP


def test_welch_rule_uses_each_sides_replicates() -> None:
    floor = noise([config("r", [0.0, 0.1, -0.1])])
    rule = RigorSection(rule="welch", alpha=0.05)
    tight = judge(config("a", [0.50, 0.51, 0.49]), config("b", [1.0, 1.01, 0.99]), floor, rule, "min")
    assert tight[0] == KEEP and "Welch p" in tight[1]
    loose = judge(config("a", [0.5, 1.6, -0.3]), config("b", [1.0, 1.01, 0.99]), floor, rule, "min")
    assert loose[0] == DISCARD


@pytest.mark.parametrize(
    ("t", "df", "p"), [(2.0, 10, 0.963306), (1.0, 1, 0.75), (-1.5, 4, 0.103993), (0.0, 7, 0.5)]
)
def test_student_t_cdf_matches_the_tables(t: float, df: float, p: float) -> None:
    assert student_t_cdf(t, df) == pytest.approx(p, abs=1e-5)


# ------------------------------------------------------------------------------- campaigns

NOISY = {"x": 0.3}  # the optimum of the scripted objective


def objective(rng: random.Random) -> Callable[[Any], float]:
    return lambda params: (float(params["x"]) - 0.3) ** 2 + rng.gauss(0, 0.02)


def run(camp: Path, ex: ScriptedExecutor) -> Any:
    return Campaign(load_spec(camp), camp.parent / "results", ex, RandomPlanner()).run()


def test_controls_measure_the_noise_and_every_configuration_gets_a_verdict(
    make_campaign: Callable[..., Path],
) -> None:
    camp = make_campaign(generations=3, batch_size=4)
    result = run(camp, ScriptedExecutor(objective=objective(random.Random(2))))
    assert result.status == "done"
    st = load_state(camp.parent / "results")
    controls = [t for t in st.trials.values() if t.purpose == "control"]
    assert controls and all(t.source == "control" for t in controls)
    for t in controls:  # the champion again, in the champion's configuration, with a new seed
        first = st.trials[t.config_id]
        assert t.params == first.params and t.seed > first.seed and t.generation > first.generation
    search = [c for c in st.configs() if not c.purpose]
    assert all(c.verdict in ("keep", "discard", "crash") for c in search)
    kept = [c.config_id for c in search if c.verdict == "keep"]
    assert st.champion_id == kept[-1]  # the lineage follows kept champions only
    events = [e for e in Journal(camp.parent / "results" / "journal.jsonl").read() if e["event"] == "verdict"]
    assert len(events) == len(search)
    with_noise = [e for e in events if e["noise_sigma"] is not None]
    assert with_noise and all(e["noise_from"] == "controls" and e["noise_n"] >= 1 for e in with_noise)


def test_confirmation_reruns_the_best_at_a_larger_budget(
    make_campaign: Callable[..., Path], cli_run: Any
) -> None:
    """[confirm]: after the last generation, the top configurations run again with more seeds
    at twice the budget (the experiment reads HPC_AGENT_FIDELITY); the final champion is
    decided on those runs, and the tables say so."""
    script = (
        "import os\n"
        "assert os.environ['HPC_AGENT_FIDELITY'] in ('1', '2')\n"
        "with open(os.path.join(os.environ['HPC_AGENT_TRIAL_DIR'], 'fidelity'), 'w') as f:\n"
        "    f.write(os.environ['HPC_AGENT_FIDELITY'])\n" + TINY_TRAIN
    )
    extra = "\n[confirm]\ntop_k = 2\nseeds = 2\nbudget_multiplier = 2.0\n"
    camp = make_campaign(generations=2, batch_size=3, script=script, extra=extra)
    cli_run("run", str(camp), "--executor", "local", "--planner", "random", "-q")
    results = camp.parent / "results" / "tiny"
    st = load_state(results)
    confirm = [g for g in st.generations.values() if g.planner == "confirm"]
    assert len(confirm) == 1 and confirm[0].generation == 2 and st.completed_generations() == 3
    trials = st.trials_of(2)
    assert len(trials) == 4 and {t.purpose for t in trials} == {"confirm"}
    for t in trials:
        folder = results / "gen-0002" / "trials" / t.trial_id
        assert json.loads((folder / "launch.json").read_text())["time_budget_s"] == 60.0  # 2 x 30 s
        assert (folder / "fidelity").read_text() == "2"
    original, confirmed = final_champion(st, "min")
    assert original is not None and confirmed is not None and confirmed.of == original.config_id
    assert confirmed.n_completed == 2
    ledger = cli_run("export", str(results), "--format", "ledger").output.splitlines()
    header = ledger[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in ledger[1:]]
    assert sum(1 for r in rows if r["confirmed"]) == 2  # the two confirmed ones carry their numbers
    status = cli_run("status", str(results)).output
    assert "confirmed champion" in status and "noise floor" in status


@pytest.mark.slow
def test_confirmation_on_the_quickstart_with_tiny_budgets(tmp_path: Path, cli_run: Any) -> None:
    pytest.importorskip("torch")
    camp = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", camp)
    train = (camp / "train.py").read_text().replace('"train_seconds": 6.0', '"train_seconds": 1.0')
    (camp / "train.py").write_text(train)
    toml = (camp / "campaign.toml").read_text().replace("generations = 3", "generations = 1")
    toml = toml.replace("batch_size = 4", "batch_size = 2").replace('kind = "auto"', 'kind = "local"')
    (camp / "campaign.toml").write_text(toml + "\n[confirm]\ntop_k = 1\nseeds = 2\nbudget_multiplier = 2.0\n")
    cli_run("run", str(camp), "--planner", "random", "-q")
    st = load_state(tmp_path / "results" / "quickstart")
    original, confirmed = final_champion(st, "min")
    assert original is not None and confirmed is not None and confirmed.n_completed == 2
    assert confirmed.objective is not None and 0 < confirmed.objective < 3  # a real validation loss


def test_a_held_out_metric_never_reaches_a_planner(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    """The LLM planner's every request is read: the held-out metric's name and its values
    appear in none of them (nor in what the analyses were given), and the exports have them."""
    from hpc_agent.testing import FakeLLM

    # the held-out evaluation lives in a module the agent may not edit (as nanolm's prepare.py)
    script = TINY_TRAIN + "import heldout\nheldout.evaluate(x)\n"
    extra = "\n[rigor]\ncontrol = false\n"
    camp = make_campaign(generations=2, script=script, campaign='holdout_metrics = ["test_bpb"]', extra=extra)
    (camp / "heldout.py").write_text(
        "import json, os\n"
        "def evaluate(x):\n"
        "    with open(os.environ['HPC_AGENT_METRICS'], 'a') as f:\n"
        "        f.write(json.dumps({'step': 3, 'test_bpb': 123.456789 + x}) + '\\n')\n"
    )

    asked = iter(range(100))

    def reply(body: Any) -> dict[str, Any]:
        x = 0.05 * next(asked)
        props = [{"hypothesis": "h", "params": {"x": x + d, "mode": "a"}, "patch": None} for d in (0, 0.01)]
        return {"json": {"analysis": "fine", "proposals": props}}

    with FakeLLM([reply] * 20) as fake:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HPC_AGENT_"))},
            "OPENAI_BASE_URL": fake.base_url,
            "HPC_AGENT_MODEL": "fake-model",
            "OPENAI_API_KEY": "sk-test",
        }
        cmd = [
            sys.executable,
            "-m",
            "hpc_agent",
            "run",
            str(camp),
            "--executor",
            "local",
            "--planner",
            "llm",
            "-q",
        ]
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        sent = json.dumps([r.body for r in fake.chat_requests])
    assert len(fake.chat_requests) >= 2
    assert "test_bpb" not in sent and re.search(r"12[34]\.\d", sent) is None  # neither name nor values
    results = tmp_path / "results" / "tiny"
    for g in (0, 1):
        assert "test_bpb" not in (results / f"gen-000{g}" / "analysis.md").read_text()
    csv = subprocess.run(
        [sys.executable, "-m", "hpc_agent", "export", str(results), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    ).stdout
    assert "test_bpb" in csv.splitlines()[0] and re.search(r"12[34]\.\d", csv)  # gathered and exported


def test_ledger_export_golden(make_campaign: Callable[..., Path], cli_run: Any) -> None:
    values = iter([0.5, 0.4, 0.45, 0.2, 0.41, 0.39, 0.21, 0.05, 0.3])
    camp = make_campaign(generations=2, batch_size=4, time_budget_s=30)
    spec = load_spec(camp)
    ex = ScriptedExecutor(objective=lambda params: next(values))
    Campaign(spec, camp.parent / "results", ex, RandomPlanner()).run()
    text = cli_run("export", str(camp.parent / "results"), "--format", "ledger").output
    path = GOLDEN / "ledger.tsv"
    if os.environ.get("HPC_AGENT_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()
