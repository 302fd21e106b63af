"""``hpc-agent logs``: the exchange log, rendered for a person.

One block per exchange (purpose, model, format, tokens, latency, retries, what was accepted or
rejected), and the totals; ``--full`` adds the messages and replies, ``--json`` the raw records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_agent.llm.log import LOG_NAME, read_log, usage


def listing(models: Sequence[str] | None, limit: int = 20) -> str:
    """A list of model names for a message, cut after ``limit`` ("none" for no list)."""
    if not models:
        return "none"
    shown = ", ".join(models[:limit])
    return shown + (f", ... ({len(models)} in all)" if len(models) > limit else "")


def format_log(
    results_dir: Path, generation: int | None = None, as_json: bool = False, full: bool = False
) -> str:
    """``hpc-agent logs``: a readable summary of every exchange, with totals (tokens, cost);
    ``full`` shows the whole messages and replies, ``as_json`` the raw records."""
    path = Path(results_dir) / LOG_NAME
    if not path.exists():
        return (
            f"no LLM exchanges in {results_dir} ({LOG_NAME} is written when the llm planner runs; "
            "see `hpc-agent run --planner llm`)\n"
        )
    records = [r for r in read_log(path) if generation is None or r.get("generation") == generation]
    if as_json:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not records:
        return f"no LLM exchanges for generation {generation} in {path}\n"
    lines: list[str] = []
    for r in records:
        lines.extend(_format_record(r, full))
        lines.append("")
    u = usage(records)
    purposes = ", ".join(f"{n} {p}" for p, n in u.by_purpose.items())
    cost_text = (
        f"cost ~{u.cost:.4f}" if u.cost else "cost n/a (set [planner] price_in_per_mtok / price_out_per_mtok)"
    )
    lines.append(
        f"total: {u.round_trips} round trip(s) ({purposes or 'none'}), {u.failed} failed, {u.retries} "
        f"transport retr{'y' if u.retries == 1 else 'ies'}; tokens in {u.tokens_in:,}, out {u.tokens_out:,}; "
        f"{cost_text}"
    )
    return "\n".join(lines) + "\n"


def _format_record(r: Mapping[str, Any], full: bool) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(r.get("t") or 0)))
    gen = r.get("generation")
    head = f"[{when}] gen {gen if gen is not None else '-'} · {r.get('purpose')}"
    if r.get("round"):
        head += f" (round {r['round']})"
    if r.get("reused"):
        head += f" · no request: {r['reused']}"
    head += f" · {r.get('model') or '?'}"
    if r.get("purpose") == "preflight":
        return _format_preflight(r, head)
    out = _format_exchange(r, head)
    if full:
        out += _format_full(r)
    elif r.get("reply"):
        out.append(f"  reply: {_short(str(r['reply']), 240)}")
    return out


def _format_preflight(r: Mapping[str, Any], head: str) -> list[str]:
    served = r.get("served")
    status = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
    out = [f"{head} · {r.get('base_url')} · {status}"]
    if served is not None:
        out.append(f"  models served: {listing(served)}")
    if r.get("context_limit"):
        out.append(f"  server context: {int(r['context_limit']):,} tokens ({r.get('context_limit_from')})")
    if r.get("note"):
        out.append(f"  note: {r['note']}")
    return out


def _format_exchange(r: Mapping[str, Any], head: str) -> list[str]:
    parts = [head]
    if r.get("response_format"):
        parts.append(str(r["response_format"]))
    if r.get("tokens_in") or r.get("tokens_out"):
        parts.append(f"{int(r.get('tokens_in') or 0):,}→{int(r.get('tokens_out') or 0):,} tokens")
    if r.get("latency_s") is not None:
        parts.append(f"{float(r['latency_s']):.2f} s")
    if r.get("cost"):
        parts.append(f"~{float(r['cost']):.4f}")
    out = [" · ".join(parts)]
    for n in r.get("negotiation") or []:
        what = next((f"{k} {v}" for k, v in n.items() if k != "rejected"), "a request parameter")
        out.append(f"  {what} rejected: {n.get('rejected')}")
    for t in r.get("retries") or []:
        wait = f", waited {t['wait_s']:g} s" if t.get("wait_s") is not None else ""
        out.append(f"  attempt {t.get('attempt')} failed: {t.get('error')}{wait}")
    if r.get("idle_wait_s") is not None:
        out.append(f"  waited {r['idle_wait_s']:g} s for the server to finish the request that timed out")
    if r.get("error"):
        out.append(f"  ERROR: {r['error']}")
    if r.get("context_limit"):
        out.append(
            f"  learned: the server's context is {int(r['context_limit']):,} tokens "
            f"({r.get('context_limit_from')})"
        )
    if r.get("parse_error"):
        out.append(f"  unreadable reply: {r['parse_error']}")
    accepted = r.get("proposals")
    if accepted is not None:
        out.append(f"  proposals accepted: {len(accepted)}")
        for p in accepted:
            patch = f" + patch ({len(p.get('patch') or [])} edit(s))" if p.get("patch") else ""
            out.append(
                f"    - {_params_text(p.get('params') or {})}{patch}: {_short(p.get('hypothesis', ''), 100)}"
            )
    if r.get("proposals_made") is not None and r.get("plan_for") is not None:
        out.append(
            f"  proposals for generation {r.get('plan_for')}: {r['proposals_made']} (checked when planned)"
        )
    for e in r.get("validation_errors") or []:
        out.append(f"  invalid: {e}")
    if r.get("note"):
        out.append(f"  note: {r['note']}")
    return out


def _format_full(r: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for m in r.get("messages") or []:
        out.append(f"  --- {m.get('role')} ---")
        out.extend("  " + ln for ln in str(m.get("content", "")).splitlines())
    if r.get("reasoning"):
        out.append("  --- reasoning ---")
        out.extend("  " + ln for ln in str(r["reasoning"]).splitlines())
    if r.get("reply") is not None:
        out.append("  --- reply ---")
        out.extend("  " + ln for ln in str(r["reply"]).splitlines())
    return out


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
