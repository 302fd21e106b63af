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
from pathlib import Path
from typing import Any

import jsonlines

from hpc_agent.llm.config import redact, redact_url

LOG_NAME = "llm.jsonl"
LOG_VERSION = 1  # the "v" of each record; a record without one is version 1
MODES = ("json_schema", "json_object", "text")  # structured-output negotiation order


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

    def remembered_mode(self, base_url: str, model: str) -> str | None:
        """The response_format that last worked for this endpoint and model, if any."""
        mode = None
        for r in self.records():
            if r.get("mode_ok") and r.get("base_url") == redact_url(base_url) and r.get("model") == model:
                mode = r.get("response_format")
        return mode if mode in MODES else None
