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
    camp = make_campaign(generations=3, batch_size=4, extra="\n[rigor]\nnoise_runs = 1\n")
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
    """Generation 0: the first configuration's three runs (the reference, σ = 0.05 from them)
    and a candidate (0000-0003, 0.35 better); generation 1: its replicate first (confirmed:
    kept), then a worse one, a candidate (0001-0002) and another worse one; the final
    replicate generation: 0001-0002's replicate regresses (not confirmed: discarded)."""
    values = iter([0.5, 0.4, 0.45, 0.1, 0.12, 0.3, -0.2, 0.5, 0.3])
    camp = make_campaign(generations=2, batch_size=4, time_budget_s=30)
    spec = load_spec(camp)
    ex = ScriptedExecutor(objective=lambda params: next(values))
    Campaign(spec, camp.parent / "results", ex, RandomPlanner()).run()
    text = cli_run("export", str(camp.parent / "results"), "--format", "ledger").output
    path = GOLDEN / "ledger.tsv"
    if os.environ.get("HPC_AGENT_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


# ------------------------------------------------------------------------------- issue 20: no
# verdict on unknown noise, a keep confirmed by a replicate (synthetic results, the real fold)


def rigor_spec(tmp_path: Path, **rigor: Any) -> Any:
    from hpc_agent.config.spec import parse_spec

    data = {
        "campaign": {"name": "synthetic", "metric": "loss", "mode": "min", "batch_size": 4},
        "experiment": {"command": "true"},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "rigor": rigor,
    }
    return parse_spec(data, tmp_path)


class Synthetic:
    """A campaign's state built from ``planned`` and ``trial_ended`` events, judged as the
    driver judges it (each batch of verdicts applied before the next look)."""

    def __init__(self, spec: Any) -> None:
        from hpc_agent.store.state import CampaignState

        self.spec, self.state, self.verdicts = spec, CampaignState(), []

    def plan(self, generation: int, *runs: tuple[str, str, int, str]) -> None:
        """Trials (trial id, config id, seed, purpose)."""
        from hpc_agent.store.events import Planned, PlannedTrial

        trials = tuple(
            PlannedTrial(trial_id=t, index=i, config=c, seed=s, params={"x": 0.5}, purpose=p)
            for i, (t, c, s, p) in enumerate(runs)
        )
        self.state.apply(Planned(generation=generation, planner="synthetic", trials=trials))

    def end(self, trial: str, value: float) -> list[Any]:
        from hpc_agent.science.rigor import verdicts_due
        from hpc_agent.store.events import TrialEnded

        self.state.apply(TrialEnded(trial=trial, state="completed", objective=value))
        judged = verdicts_due(self.state, self.spec)
        for e in judged:
            self.state.apply(e)
        self.verdicts += judged
        return judged

    def verdict(self, config: str) -> tuple[str, str]:
        v = self.state.verdicts.get(config, {})
        return str(v.get("verdict", "")), str(v.get("reason", ""))


def test_no_keep_before_the_noise_is_known(tmp_path: Path) -> None:
    """A configuration 10x better than the reference, finished before the reference's noise
    runs, waits (pending, with why) and is judged once they have ended: then it is a
    candidate, not a keep; worse ones are discarded at once; the reference is the first
    configuration planned, whichever finishes first; once there is one, a worse
    configuration is discarded at once."""
    from hpc_agent.science.rigor import waiting

    run = Synthetic(rigor_spec(tmp_path))
    run.plan(0, ("0000-0000", "0000-0000", 0, ""), ("0000-0001", "0000-0000", 1, ""),
             ("0000-0002", "0000-0000", 2, ""), ("0000-0003", "0000-0003", 0, ""),
             ("0000-0004", "0000-0004", 0, ""))  # fmt: skip
    assert run.end("0000-0003", 0.1) == []  # the reference (0000-0000) has not finished
    assert waiting(run.state, run.spec)["0000-0003"][0] == "pending"
    assert run.end("0000-0000", 1.0) == []  # two of the reference's runs to go
    assert run.end("0000-0004", 1.5) == []  # no champion yet to be worse than
    assert run.end("0000-0001", 1.02) == []
    judged = run.end("0000-0002", 0.98)  # the reference's runs have ended: the noise is known
    assert [(e.config, e.verdict) for e in judged] == [
        ("0000-0000", KEEP),
        ("0000-0003", "candidate"),
        ("0000-0004", DISCARD),
    ]
    assert judged[1].noise_n == 2 and "to be confirmed by a replicate" in judged[1].reason
    assert run.state.champion_id == "0000-0000"  # nothing kept on the first run alone


def test_nothing_is_judged_better_while_the_noise_is_unknown(tmp_path: Path) -> None:
    from hpc_agent.science.rigor import waiting

    run = Synthetic(rigor_spec(tmp_path, noise_runs=1))  # the noise: the champion's control, later
    run.plan(0, ("0000-0000", "0000-0000", 0, ""), ("0000-0001", "0000-0001", 0, ""))
    run.end("0000-0000", 1.0)
    assert run.end("0000-0001", 0.5) == []
    status, why = waiting(run.state, run.spec)["0000-0001"]
    assert status == "pending" and "noise not estimated yet" in why
    run.plan(1, ("0001-0000", "0000-0000", 1, "control"))
    judged = run.end("0001-0000", 1.02)  # σ from the champion's two runs: now it is judged
    assert [(e.config, e.verdict) for e in judged] == [("0000-0001", "candidate")]
    assert judged[0].noise_n == 1 and judged[0].noise_sigma == pytest.approx(0.02 / 2**0.5)


def reference_and_candidate(tmp_path: Path, screening: float, pairs: int = 0, **rigor: Any) -> Synthetic:
    """The reference's three runs (σ = 0.1, 2 degrees of freedom), ``pairs`` worse
    configurations run twice (σ = 0.1 too: one more degree of freedom each), then a
    challenger at ``screening``."""
    run = Synthetic(rigor_spec(tmp_path, **rigor))
    worse = [
        (f"0000-{10 + 2 * i:04d}", f"0000-{10 + 2 * i:04d}", s, "") for i in range(pairs) for s in (0, 1)
    ]
    worse = [(t[:5] + f"{int(t[5:]) + s:04d}", c, s, p) for t, c, s, p in worse]
    run.plan(0, ("0000-0000", "0000-0000", 0, ""), ("0000-0001", "0000-0000", 1, ""),
             ("0000-0002", "0000-0000", 2, ""), *worse, ("0000-0003", "0000-0003", 0, ""))  # fmt: skip
    for t, v in (("0000-0000", 1.0), ("0000-0001", 1.1), ("0000-0002", 0.9)):
        run.end(t, v)
    for t, _c, s, _p in worse:
        run.end(t, 1.5 + s * 0.1 * 2**0.5)
    run.end("0000-0003", screening)
    return run


def test_a_candidate_that_regresses_on_its_replicate_is_discarded(tmp_path: Path) -> None:
    """A lucky draw 6σ better on its screening run is a candidate; its replicate (planned
    first in the next batch) lands back on the champion's mean: not confirmed, discarded, and
    the champion (the lineage, the incumbent, the stop rules) never moved."""
    from hpc_agent.loop.propose import replicate_trials

    run = reference_and_candidate(tmp_path, 0.4)
    assert run.verdict("0000-0003")[0] == "candidate" and run.state.candidates == {"0000-0003": None}
    (rep,) = replicate_trials(run.state, run.spec, 1)
    assert (rep.config, rep.purpose, rep.seed, rep.index) == ("0000-0003", "replicate", 1, 0)
    run.plan(1, (rep.trial_id, rep.config, rep.seed, rep.purpose))
    assert replicate_trials(run.state, run.spec, 2) == ()  # once
    (judged,) = run.end(rep.trial_id, 1.0)
    verdict, reason = run.verdict("0000-0003")
    assert verdict == DISCARD and reason.startswith("not confirmed"), reason
    assert judged.champion == "0000-0000" and run.state.champion_id == "0000-0000"
    assert run.state.candidates == {}
    assert run.state.champion("min").config_id == "0000-0000"  # what the planners see


def test_a_true_five_sigma_improvement_is_kept_after_its_replicate(tmp_path: Path) -> None:
    """σ = 0.1 known with 10 degrees of freedom (the margin: 2.37 SE): a configuration truly
    0.5 better, screening and replicate drawn with that noise, is kept nearly always (its
    power, computed: 0.98 at each test); never on its screening run alone."""
    rng = random.Random(5)
    kept = 0
    for trial in range(20):
        folder = tmp_path / str(trial)
        folder.mkdir()
        run = reference_and_candidate(folder, 0.5 + rng.gauss(0, 0.1), pairs=8)
        if run.verdict("0000-0003")[0] != "candidate":
            continue
        run.plan(1, ("0001-0000", "0000-0003", 1, "replicate"))
        run.end("0001-0000", 0.5 + rng.gauss(0, 0.1))
        verdict, reason = run.verdict("0000-0003")
        if verdict == KEEP:
            kept += 1
            assert reason.startswith("confirmed") and run.state.champion_id == "0000-0003"
    assert kept >= 18


def test_replicate_false_keeps_on_the_screening_runs(tmp_path: Path) -> None:
    run = reference_and_candidate(tmp_path, 0.4, replicate=False)
    assert run.verdict("0000-0003")[0] == KEEP and run.state.champion_id == "0000-0003"


def test_the_margin_widens_with_few_degrees_of_freedom() -> None:
    from hpc_agent.science.rigor import margin

    assert margin(2.0, 2) == pytest.approx(4.53, abs=0.01)  # t(2) at the 97.7 % level
    assert margin(2.0, 10) == pytest.approx(2.28, abs=0.01)
    assert 2.0 < margin(2.0, 1000) < 2.01 and margin(2.0, 0) == 2.0
    assert student_t_cdf(margin(2.0, 5), 5) == pytest.approx(0.97725, abs=1e-5)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("replicate = 1", "[rigor] replicate = 1: expected true or false"),
        ("noise_runs = 0", "[rigor] noise_runs = 0"),
    ],
)
def test_rigor_keys_are_checked(tmp_path: Path, text: str, error: str) -> None:
    from hpc_agent.errors import SpecError

    toml = tmp_path / "campaign.toml"
    toml.write_text(
        '[campaign]\nname = "x"\nmetric = "loss"\n[experiment]\ncommand = "true"\n'
        '[space]\nx = { type = "float", low = 0.0, high = 1.0 }\n[rigor]\n' + text + "\n"
    )
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path)
    assert error in str(e.value)


def test_a_worse_configuration_needs_no_noise(tmp_path: Path) -> None:
    run = Synthetic(rigor_spec(tmp_path, noise_runs=1))
    run.plan(0, ("0000-0000", "0000-0000", 0, ""), ("0000-0001", "0000-0001", 0, ""))
    run.end("0000-0000", 1.0)
    (judged,) = run.end("0000-0001", 1.5)
    assert judged.verdict == DISCARD and judged.noise_sigma is None


# a real experiment with real run-to-run noise: σ = 0.01 around (x - 0.3)², drawn from the
# trial's seed (a replicate, with a new seed, draws anew)
NOISY_TRAIN = """
import json, os, random
p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
x = float(p["x"])
noise = random.Random(f"{p['seed']}:{x}").gauss(0, 0.01)
with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
    f.write(json.dumps({"step": 0, "loss": (x - 0.3) ** 2 + noise}) + "\\n")
"""


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_a_candidate_is_confirmed_through_the_real_loop(
    make_campaign: Callable[..., Path], cli_run: Any, schedule: str
) -> None:
    """Local processes, the random planner: generation 0's first configuration (the
    baseline) runs three times (the noise, known when generation 0 ends); a better
    configuration is a candidate first, its replicate (purpose ``replicate``, a new seed)
    runs in the next batch (sync: at its head) or the first freed slots (async), and only
    then is it kept; the lineage follows confirmed keeps only; status and the ledger say so."""
    # the baseline (the defaults, x = -1, loss 1.69) is the reference: the search beats it
    space = '\n[space]\nx = { type = "float", low = -1.0, high = 1.0, default = -1.0 }\n'
    camp = make_campaign(
        generations=3, batch_size=4, script=NOISY_TRAIN, space=space, campaign=f'schedule = "{schedule}"'
    )
    cli_run("run", str(camp), "--executor", "local", "--planner", "random", "--parallelism", "4", "-q")
    results = camp.parent / "results" / "tiny"
    st = load_state(results)
    reference = st.trials_of(0)[:3]
    assert [t.config_id for t in reference] == ["0000-0000"] * 3 and [t.seed for t in reference] == [0, 1, 2]
    events = [e for e in Journal(results / "journal.jsonl").read() if e["event"] == "verdict"]
    assert events[0]["config"] == "0000-0000" and events[0]["verdict"] == "keep"
    assert all(e["noise_sigma"] is not None for e in events[1:])  # nothing judged better unmeasured
    kept = [e for e in events[1:] if e["verdict"] == "keep"]
    assert kept, [(e["config"], e["verdict"], e["reason"]) for e in events]
    for e in kept:  # every keep after the reference: a candidate first, then its replicate
        before = [v for v in events if v["config"] == e["config"]]
        assert [v["verdict"] for v in before] == ["candidate", "keep"] and e["reason"].startswith("confirmed")
        runs = [st.trials[t] for t in st.config(e["config"]).trial_ids]
        reps = [t for t in runs if t.purpose == "replicate"]
        assert len(reps) == 1 and reps[0].seed == runs[0].seed + 1 and reps[0].generation > runs[0].generation
        if schedule == "sync":  # at the head of the next batch
            assert reps[0].index == 0 and reps[0].generation == runs[0].generation + 1
    assert st.champion_id == kept[-1]["config"]
    parents = {st.trials[t].parent for t in st.trials if st.trials[t].generation > 0} - {None}
    assert parents <= {e["config"] for e in events if e["verdict"] == "keep"}  # lineage: kept only
    ledger = cli_run("export", str(results), "--format", "ledger").output
    assert "\tkeep\t" in ledger and "confirmed: its 2 runs together" in ledger
    status = cli_run("status", str(results)).output
    assert "candidate" in status and "pending" in status  # the counts, even at 0


def test_a_metric_without_noise_needs_no_replicate(tmp_path: Path) -> None:
    """The seeds change nothing (σ = 0 over the reference's three runs): a better
    configuration is kept at once; a replicate would repeat the same number."""
    run = Synthetic(rigor_spec(tmp_path))
    run.plan(0, ("0000-0000", "0000-0000", 0, ""), ("0000-0001", "0000-0000", 1, ""),
             ("0000-0002", "0000-0000", 2, ""), ("0000-0003", "0000-0003", 0, ""))  # fmt: skip
    for t in ("0000-0000", "0000-0001", "0000-0002"):
        run.end(t, 0.1 + 0.2)  # the same number, as a float sum gives it: σ is rounding only
    (judged,) = run.end("0000-0003", 0.2)
    assert judged.verdict == KEEP and "σ = 0" in judged.reason and run.state.champion_id == "0000-0003"
