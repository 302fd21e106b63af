"""The LLM planner's costs, offline: round trips, tokens and prompt size.

1. A scripted 3-generation campaign (batch of 4, local executor, the real CLI and openai
   client against hpc_agent.testing.fake_llm): round trips per generation (repairs counted),
   tokens in and out, and the prompt's size against the context budget. Generation 0's
   reply has an out-of-range value (one repair round trip); generation 1 carries a patch.
2. The prompt as the history grows (0 .. 1000 configurations, with analyses and failures):
   its estimated size, how many records were shown and omitted, and the time to build it.

    python bench/bench_llm.py            # prints tables, writes bench/out/bench_llm.json
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import hpc_agent.llm.transport as transport
from hpc_agent.cli import cli
from hpc_agent.config.spec import load_spec
from hpc_agent.planners.llm import View, build_prompt, load_brief, propose_task
from hpc_agent.store.state import ConfigResult
from hpc_agent.testing import FakeLLM

OUT = Path(__file__).parent / "out"
BATCH = 4
GENERATIONS = 3

TRAIN = textwrap.dedent(
    '''
    """A stand-in for a training script: a smooth surrogate of a validation loss.

    It reads like a real one (defaults, "data", "model", a loop, one metrics line a step)
    so that the prompt carries a realistic file, and runs in milliseconds without torch.
    """
    import json
    import math
    import os

    # ------------------------------------------------------------------ defaults
    p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
    lr = float(p.get("lr", 1e-3))  # learning rate
    hidden = int(p.get("hidden", 64))  # width of the hidden layers
    weight_decay = float(p.get("weight_decay", 1e-4))
    activation = p.get("activation", "relu")
    steps = 20

    # ------------------------------------------------------------------ "model"
    def capacity(width):
        return 1.0 - math.exp(-width / 96.0)

    def lr_penalty(rate):
        return (math.log10(rate) + 2.5) ** 2 * 0.08

    def wd_penalty(wd):
        return (math.log10(wd) + 4.0) ** 2 * 0.01

    act_bonus = {"relu": 0.0, "tanh": 0.03, "gelu": -0.02}[activation]
    noise = 0.01

    # ------------------------------------------------------------------ training loop
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        for step in range(steps):
            progress = (step + 1) / steps
            val_loss = 0.3 + 0.7 * (1 - capacity(hidden)) + lr_penalty(lr) + wd_penalty(weight_decay)
            val_loss += act_bonus + noise * math.cos(step) + 0.5 * (1 - progress)
            f.write(json.dumps({"step": step, "val_loss": round(val_loss, 6)}) + "\\n")
    print("final val_loss", val_loss)
    '''
)

SPEC = textwrap.dedent(
    f"""
    [campaign]
    name = "bench-llm"
    goal = "Minimise the validation loss of a small MLP at a fixed compute budget."
    metric = "val_loss"
    mode = "min"
    generations = {GENERATIONS}
    batch_size = {BATCH}
    baseline = false

    [experiment]
    command = "python train.py"
    editable = ["train.py"]
    time_budget_s = 30
    kill_grace_s = 2

    [space]
    lr = {{ type = "float", low = 1e-4, high = 3e-2, log = true }}
    hidden = {{ type = "int", low = 16, high = 256, step = 16 }}
    weight_decay = {{ type = "float", low = 1e-6, high = 1e-1, log = true }}
    activation = {{ type = "choice", values = ["relu", "tanh", "gelu"] }}

    [planner]
    price_in_per_mtok = 0.15
    price_out_per_mtok = 0.60
    """
)


class ScriptedResearcher:
    """Answers like a model would: proposals for what it is asked, one mistake, one patch."""

    def __init__(self) -> None:
        self.calls = 0
        self.k = 0

    def params(self) -> dict[str, Any]:
        self.k += 1
        k = self.k
        return {
            "lr": round(10 ** (-3.5 + (k * 0.37) % 1.5), 6),
            "hidden": 16 * (1 + (k * 5) % 16),
            "weight_decay": round(10 ** (-5.5 + (k * 0.61) % 4), 8),
            "activation": ["relu", "tanh", "gelu"][k % 3],
        }

    def proposals(self, n: int, mistake: bool = False, patch: bool = False) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            params = self.params()
            if mistake and i == 0:
                params["lr"] = 0.5  # out of range: the planner asks again
            item: dict[str, Any] = {
                "hypothesis": f"probe region {self.k}: {params}",
                "params": params,
                "patch": None,
            }
            if patch and i == n - 1:
                item["patch"] = [{"file": "train.py", "search": "noise = 0.01", "replace": "noise = 0.005"}]
                item["hypothesis"] = "less noise in the surrogate: lower the final loss"
            out.append(item)
        return out

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ask = str(body["messages"][-1]["content"])
        analysis = "## Findings\n" + "The widest runs did best; learning rate near 3e-3 looks right. " * 6
        if ask.startswith("Your reply had problems"):
            n = int(re.search(r"exactly (\d+) new proposal", ask).group(1))  # type: ignore[union-attr]
            return {"json": {"analysis": "fixed", "proposals": self.proposals(n)}}
        if "nothing more will run" in ask:
            return {"json": {"analysis": analysis, "proposals": []}}
        n = int(re.search(r"propose exactly (\d+) new experiment", ask, re.I).group(1))  # type: ignore[union-attr]
        first = self.calls == 1
        second = "write the analysis of generation 0" in ask
        return {"json": {"analysis": analysis, "proposals": self.proposals(n, mistake=first, patch=second)}}


def campaign_bench(work: Path) -> dict[str, Any]:
    camp = work / "camp"
    camp.mkdir(parents=True)
    (camp / "train.py").write_text(TRAIN)
    (camp / "campaign.toml").write_text(SPEC)
    researcher = ScriptedResearcher()
    transport.BACKOFF_BASE_S = 0.01
    with FakeLLM([researcher] * 50) as fake:
        env = {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-bench",
            "HPC_AGENT_MODEL": "fake-model",
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        cwd = Path.cwd()
        os.chdir(work)
        t0 = time.perf_counter()
        try:
            res = CliRunner().invoke(
                cli,
                [
                    "run",
                    str(camp),
                    "--planner",
                    "llm",
                    "--executor",
                    "local",
                    "--poll-interval",
                    "0.05",
                    "-q",
                ],
                catch_exceptions=False,
            )
        finally:
            os.chdir(cwd)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        wall = time.perf_counter() - t0
    if res.exit_code != 0:
        raise SystemExit(f"the campaign failed:\n{res.output}")
    records = [json.loads(x) for x in (work / "results" / "bench-llm" / "llm.jsonl").read_text().splitlines()]
    budget = load_spec(camp).planner.context_tokens
    rows = []
    for g in range(GENERATIONS):
        recs = [r for r in records if r.get("generation") == g and r.get("round_trip")]
        propose = [
            r for r in recs if r["purpose"] == "propose" or (r["purpose"] == "repair" and "plan_for" not in r)
        ]
        analyze = [r for r in recs if r not in propose]
        reused = any(r.get("reused") for r in records if r.get("generation") == g)
        prompts = [r["prompt"]["tokens_estimate"] for r in recs if r.get("prompt")]
        rows.append(
            {
                "generation": g,
                "round_trips": len(recs),
                "propose_round_trips": len(propose),
                "repairs": sum(1 for r in recs if r["purpose"] == "repair"),
                "analyze_round_trips": len(analyze),
                "proposals_reused_from_analysis": reused,
                "tokens_in": sum(r.get("tokens_in") or 0 for r in recs),
                "tokens_out": sum(r.get("tokens_out") or 0 for r in recs),
                "max_prompt_tokens_estimate": max(prompts, default=0),
                "cost": round(sum(r.get("cost") or 0 for r in recs), 6),
            }
        )
    return {
        "batch_size": BATCH,
        "generations": GENERATIONS,
        "context_tokens": budget,
        "http_chat_requests": len(fake.chat_requests),
        "wall_s": round(wall, 2),
        "per_generation": rows,
        "round_trips_total": sum(r["round_trips"] for r in rows),
        "round_trips_without_reuse": 2 * GENERATIONS + sum(r["repairs"] for r in rows),
    }


def synthetic_history(n: int) -> tuple[ConfigResult, ...]:
    out = []
    for i in range(n):
        g, k = divmod(i, 10)
        cid = f"{g:04d}-{k:04d}"
        failed = i % 9 == 4
        patch = (
            ({"file": "train.py", "search": "noise = 0.01", "replace": f"noise = 0.0{i % 9 + 1}"},)
            if i % 6 == 0
            else None
        )
        out.append(
            ConfigResult(
                config_id=cid,
                generation=g,
                params={
                    "lr": 10 ** (-4 + (i % 17) / 8),
                    "hidden": 16 * (1 + i % 16),
                    "weight_decay": 1e-4,
                    "activation": ["relu", "tanh", "gelu"][i % 3],
                },
                hypothesis=f"config {i}: test whether a wider layer with this learning rate lowers the loss",
                source="llm",
                parent=None,
                patch=patch,
                trial_ids=(cid,),
                objective=None if failed else 0.3 + ((i * 7919) % 1000) / 1000,
                n_completed=0 if failed else 1,
                pending=False,
                failed_reasons=(f"{cid}: failed: exit code 1: RuntimeError: CUDA out of memory",)
                if failed
                else (),
            )
        )
    return tuple(out)


def growth_bench(work: Path) -> list[dict[str, Any]]:
    camp = work / "camp"
    brief = load_brief("")  # the one shipped: what a campaign without [planner] brief sends
    rows = []
    for budget in (24_000, 8_000):
        text = SPEC.replace("[planner]\n", f"[planner]\ncontext_tokens = {budget}\n")
        (camp / "campaign.toml").write_text(text)
        spec = load_spec(camp)
        for n in (0, 10, 30, 100, 300, 1000):
            history = synthetic_history(n)
            analyses = tuple(
                (g, f"# Generation {g}: analysis\n\n" + "A finding with numbers. " * 60)
                for g in range(n // 10)
            )
            done = [c for c in history if c.objective is not None]
            champion = min(done, key=lambda c: float(c.objective or 0)) if done else None
            view = View(spec, n // 10, BATCH, history, champion, analyses, 5)
            t0 = time.perf_counter()
            prompt = build_prompt(view, brief, propose_task(view))
            ms = (time.perf_counter() - t0) * 1000
            s = prompt.stats
            rows.append(
                {
                    "context_tokens": budget,
                    "history_configs": n,
                    "analyses": len(analyses),
                    "prompt_tokens_estimate": s.tokens,
                    "first_budget": s.first_budget,
                    "fits": s.tokens <= s.first_budget,
                    "shown_configs": s.shown_configs,
                    "omitted_configs": s.omitted_configs,
                    "omitted_analyses": s.omitted_analyses,
                    "build_ms": round(ms, 1),
                }
            )
    return rows


def prompt_samples(work: Path) -> dict[str, str]:
    """The texts hpc-agent sends, for measuring the prompt-size estimate against a tokenizer:
    the system message, the user message as the history grows, a reply, the brief, a script."""
    camp = work / "camp"
    camp.mkdir(parents=True, exist_ok=True)
    (camp / "train.py").write_text(TRAIN)
    (camp / "campaign.toml").write_text(SPEC)
    spec = load_spec(camp)
    brief = load_brief("")
    out: dict[str, str] = {}
    for n in (0, 10, 100, 1000):
        history = synthetic_history(n)
        analyses = tuple(
            (g, f"# Generation {g}: analysis\n\n" + "A finding with numbers. " * 60) for g in range(n // 10)
        )
        done = [c for c in history if c.objective is not None]
        champion = min(done, key=lambda c: float(c.objective or 0)) if done else None
        view = View(spec, n // 10, BATCH, history, champion, analyses, 5)
        prompt = build_prompt(view, brief, propose_task(view))
        out.setdefault("system message", prompt.messages[0]["content"])
        out[f"user message, {n} configs"] = prompt.messages[1]["content"]
    reply = ScriptedResearcher().proposals(BATCH)
    out["a reply (JSON)"] = json.dumps({"analysis": "The widest runs did best.", "proposals": reply})
    out["the brief"] = brief
    out["train.py"] = TRAIN
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        camp = campaign_bench(work)
        growth = growth_bench(work)
    budget = camp["context_tokens"]
    print(f"scripted campaign: {GENERATIONS} generations x {BATCH} proposals, context budget {budget:,}")
    print(f"{'gen':>3} {'trips':>5} {'propose':>7} {'repairs':>7} {'analyze':>7} {'reused':>6} {'tok in':>7} "
          f"{'tok out':>7} {'prompt':>7}")  # fmt: skip
    for r in camp["per_generation"]:
        print(
            f"{r['generation']:>3} {r['round_trips']:>5} {r['propose_round_trips']:>7} {r['repairs']:>7} "
            f"{r['analyze_round_trips']:>7} {'yes' if r['proposals_reused_from_analysis'] else 'no':>6} "
            f"{r['tokens_in']:>7,} {r['tokens_out']:>7,} {r['max_prompt_tokens_estimate']:>7,}"
        )
    print(
        f"total {camp['round_trips_total']} round trips ({camp['round_trips_without_reuse']} without reusing "
        f"the analysis' proposals); {camp['http_chat_requests']} HTTP requests; "
        f"campaign wall {camp['wall_s']} s"
    )
    print()
    print("prompt size as the history grows (estimated tokens; first request may use 80% of the budget)")
    print(f"{'budget':>7} {'configs':>7} {'prompt':>7} {'limit':>7} {'fits':>4} {'shown':>5} {'omitted':>7} "
          f"{'anal.om':>7} {'ms':>6}")  # fmt: skip
    for r in growth:
        print(
            f"{r['context_tokens']:>7,} {r['history_configs']:>7} {r['prompt_tokens_estimate']:>7,} "
            f"{r['first_budget']:>7,} {'yes' if r['fits'] else 'NO':>4} {r['shown_configs']:>5} "
            f"{r['omitted_configs']:>7} {r['omitted_analyses']:>7} {r['build_ms']:>6}"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "bench_llm.json"
    data = {"campaign": camp, "prompt_growth": growth, "python": sys.version.split()[0]}
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {out}")
    if not all(r["fits"] for r in growth):
        raise SystemExit("a prompt exceeded its budget")


if __name__ == "__main__":
    main()
