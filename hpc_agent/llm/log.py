"""The exchange log, ``results/<name>/llm.jsonl``: every request and reply of a campaign.

One JSON object a line, appended and fsync'd, scrubbed of the API key. Each record carries
``v`` (:data:`LOG_VERSION`); records written before the field existed have none and are read
as version 1. The log is also the planner's memory across a driver restart: the
``response_format`` that worked (:meth:`ExchangeLog.remembered_mode`) and the proposals made
with an analysis are read back from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonlines

from hpc_agent.llm.config import redact, redact_url

LOG_NAME = "llm.jsonl"
LOG_VERSION = 1  # the "v" of each record; a record without one is version 1
# structured-output negotiation order; "json_object+schema" is llama.cpp's form, a json_object
# request that carries the schema (and is then decoded under it)
MODES = ("json_schema", "json_object+schema", "json_object", "text")


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of ``llm.jsonl``; a torn last line (the driver died writing it) is skipped.
    Each record has ``v``: the version it was written with (1 for records without one)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        reader = jsonlines.Reader(f)
        for rec in reader.iter(type=dict, skip_empty=True, skip_invalid=True):
            rec.setdefault("v", 1)
            yield rec


@dataclass(frozen=True)
class Usage:
    """What a campaign's exchanges with the LLM cost: round trips (preflight checks that
    sent no prompt left out), failed ones, transport retries, tokens in and out, and the cost
    estimate (``[planner] price_*_per_mtok``), by purpose and model."""

    round_trips: int = 0
    failed: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    by_purpose: Mapping[str, int] = field(default_factory=dict)
    models: tuple[str, ...] = ()


def usage(records: Sequence[Mapping[str, Any]]) -> Usage:
    """The totals of these ``llm.jsonl`` records (:class:`Usage`)."""
    exchanges = [r for r in records if r.get("round_trip", r.get("purpose") != "preflight")]
    by_purpose: dict[str, int] = {}
    for r in exchanges:
        by_purpose[str(r.get("purpose"))] = by_purpose.get(str(r.get("purpose")), 0) + 1
    return Usage(
        round_trips=len(exchanges),
        failed=sum(1 for r in exchanges if r.get("error")),
        retries=sum(1 for r in exchanges for a in r.get("retries") or [] if a.get("wait_s") is not None),
        tokens_in=sum(int(r.get("tokens_in") or 0) for r in exchanges),
        tokens_out=sum(int(r.get("tokens_out") or 0) for r in exchanges),
        cost=sum(float(r.get("cost") or 0.0) for r in exchanges),
        by_purpose=dict(sorted(by_purpose.items())),
        models=tuple(sorted({str(r["model"]) for r in exchanges if r.get("model")})),
    )


class ExchangeLog:
    """``llm.jsonl``: append-only, one JSON object a line; ``path`` None writes nothing."""

    def __init__(self, path: Path | None, secrets: Sequence[str] = ()) -> None:
        self.path = path
        self.secrets = tuple(s for s in secrets if s)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (with ``v``), scrubbed of every secret, and fsync it."""
        if self.path is None:
            return
        data = {"v": LOG_VERSION, **record}
        line = redact(json.dumps(data, ensure_ascii=False, default=str), self.secrets)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record so far (none when ``path`` is None)."""
        yield from read_log(self.path) if self.path else iter(())

    def remembered(self, base_url: str, model: str) -> Memory:
        """What this campaign learned about this endpoint and model (see :class:`Memory`)."""
        memory = Memory()
        url = redact_url(base_url)
        for r in self.records():
            if r.get("base_url") == url and r.get("model") == model:
                memory.learn(r)
        return memory


@dataclass
class Memory:
    """What the exchanges so far taught about an endpoint and model, read back from the log
    by a restarted driver: the ``response_format`` last answered, the modes it refused, the
    request parameters it refused, and its context size (from its metadata or an error)."""

    mode: str | None = None
    rejected_modes: set[str] = field(default_factory=set)
    rejected_params: set[str] = field(default_factory=set)
    context_limit: int | None = None
    token_ratio: float = 1.0  # the server's count of a prompt / our estimate (the largest seen)

    def learn(self, record: Mapping[str, Any]) -> None:
        """Take in one record of ``llm.jsonl`` (any version)."""
        if record.get("mode_ok") and record.get("response_format") in MODES:
            self.mode = str(record["response_format"])
        for n in record.get("negotiation") or []:
            if n.get("response_format") in MODES:
                self.rejected_modes.add(str(n["response_format"]))
            for name in ("temperature", "max_tokens"):
                if name in n:
                    self.rejected_params.add(name)
        limit = record.get("context_limit")
        if isinstance(limit, int) and limit > 0:
            self.context_limit = limit  # the latest word: a server restarted with more context says so
        real, estimate = record.get("prompt_tokens"), record.get("prompt_tokens_estimate")
        if isinstance(real, int) and isinstance(estimate, int) and estimate > 0:
            self.token_ratio = max(self.token_ratio, real / estimate)

    def start_mode(self, allowed: Sequence[str] = MODES) -> str:
        """The mode the next request starts with: the last one answered, else the first of
        ``allowed`` not refused (the last of them when every one was)."""
        if self.mode is not None and self.mode in allowed:
            return self.mode
        left = [m for m in allowed if m not in self.rejected_modes]
        return left[0] if left else allowed[-1]
