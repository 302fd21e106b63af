"""The client: one endpoint, one campaign; every round trip negotiated, retried and logged.

Structured output is negotiated per endpoint, in the order of :data:`MODES`:
``response_format`` ``json_schema``; then llama.cpp's ``{"type": "json_object", "schema":
...}`` (a server that takes it decodes under the schema); then plain ``json_object``; then plain
text, where the JSON is taken from a fenced block or the first balanced ``{...}``. A refusal is
recognised by its message, whatever the status code. What worked and what was refused are
remembered for the campaign without a state file of their own: ``llm.jsonl`` records both, and
a restarted driver reads them back (:class:`~hpc_agent.llm.log.Memory`). ``[planner]
structured_output`` pins one kind and turns negotiation between kinds off.

Every request carries a ``max_tokens`` (the caller sizes it to the reply the task needs, or
``[planner] max_tokens`` fixes it), so that no reply can run for as long as the server allows.
A server that refuses ``max_tokens`` (reasoning models want ``max_completion_tokens``) or the
temperature is asked again without it, and that too is remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hpc_agent.errors import UserError
from hpc_agent.llm.config import LLMConfig, redact, secrets_of
from hpc_agent.llm.log import MODES, ExchangeLog, Memory
from hpc_agent.llm.parsing import parse_json_reply
from hpc_agent.llm.preflight import check_endpoint, wait_idle
from hpc_agent.llm.tokens import estimate_tokens, messages_tokens
from hpc_agent.llm.transport import (
    ContextExceeded,
    FormatRejected,
    LLMUnavailable,
    ParameterRejected,
    send_with_retries,
)

CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_TOKENS = 2048  # a request whose caller did not size its reply


@dataclass
class Reply:
    """One answered round trip. ``data`` is the parsed JSON (None: ``parse_error`` says why)."""

    text: str
    data: Any
    parse_error: str
    mode: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    finish_reason: str = ""
    reasoning: str = ""
    retries: list[dict[str, Any]] = field(default_factory=list)


_NOT_STRICT = ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "pattern")


def strict_subset(schema: Any) -> Any:
    """``schema`` without the keywords OpenAI's strict structured outputs have refused
    (bounds on arrays, strings and numbers); a server decoding under the whole schema
    (llama.cpp's ``json_object`` form) gets them all."""
    if isinstance(schema, Mapping):
        out = {k: strict_subset(v) for k, v in schema.items() if k not in _NOT_STRICT and k != "properties"}
        if isinstance(schema.get("properties"), Mapping):  # names, not keywords: keep them all
            out["properties"] = {k: strict_subset(v) for k, v in schema["properties"].items()}
        return out
    if isinstance(schema, list):
        return [strict_subset(v) for v in schema]
    return schema


def family(mode: str) -> str:
    """The ``[planner] structured_output`` kind a mode belongs to (``json_object+schema`` is a
    ``json_object``)."""
    return mode.split("+", 1)[0]


class LLMClient:
    """Talks to one endpoint for one campaign. Not thread-safe (the driver is one thread).

    Call order: :meth:`preflight` (optional, before the results folder exists), then
    :meth:`set_log` once the results folder is known, then :meth:`complete` per round trip.
    Records written before :meth:`set_log` are kept and written when it is called.
    :attr:`memory` is what the exchanges so far taught (the log's, after :meth:`set_log`)."""

    def __init__(self, config: LLMConfig, log_path: Path | None = None) -> None:
        self.config = config
        self.sleep: Callable[[float], None] = time.sleep
        self._openai: Any = None
        self._pending_records: list[dict[str, Any]] = []
        self._maybe_busy = False  # the last round trip timed out: the server may still be at it
        self.memory = Memory()
        self.log = ExchangeLog(None, secrets_of(config))
        if log_path is not None:
            self.set_log(log_path)

    # ------------------------------------------------------------------ plumbing
    def _redact(self, text: str) -> str:
        return redact(text, secrets_of(self.config))

    def set_log(self, path: Path) -> None:
        """Write exchanges to ``path`` from now on, and read back what was learned before."""
        if self.log.path == path:
            return
        self.log = ExchangeLog(path, secrets_of(self.config))
        self.memory = self.log.remembered(self.config.base_url, self.config.model)
        for rec in self._pending_records:
            self.log.append(rec)
            self.memory.learn(rec)
        self._pending_records.clear()

    def _write(self, record: dict[str, Any]) -> None:
        self.memory.learn(record)
        if self.log.path is None:
            self._pending_records.append(record)  # before the results folder is known (preflight)
        else:
            self.log.append(record)

    def _client(self) -> Any:
        if self._openai is None:
            import openai

            timeout = openai.Timeout(
                self.config.request_timeout_s, connect=min(CONNECT_TIMEOUT_S, self.config.request_timeout_s)
            )
            self._openai = openai.OpenAI(
                # local servers often need no key, but the client insists on one
                api_key=self.config.api_key() or "no-key-set",
                base_url=self.config.base_url,
                max_retries=0,  # ours: backoff, Retry-After, and every attempt in the log
                timeout=timeout,
            )
        return self._openai

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes negotiation may use: all, or those of the pinned ``structured_output``."""
        pinned = self.config.structured_output
        return MODES if pinned == "auto" else tuple(m for m in MODES if family(m) == pinned)

    @property
    def mode(self) -> str:
        """The response_format the next request starts with."""
        return self.memory.start_mode(self.modes)

    @property
    def context_limit(self) -> int | None:
        """The server's context in tokens, when it was learned (metadata or an error)."""
        return self.memory.context_limit

    def _base_record(self, purpose: str, generation: int | None, round_trip: bool) -> dict[str, Any]:
        return {
            "t": round(time.time(), 3),
            "generation": generation,
            "purpose": purpose,
            "round_trip": round_trip,  # False: a check or a decision that asked the model nothing
            "model": self.config.model,
            "base_url": self.config.display_url,
        }

    def note(self, purpose: str, generation: int | None, **fields: Any) -> None:
        """Log a decision that made no request (e.g. proposals reused from an analysis)."""
        rec = self._base_record(purpose, generation, round_trip=False)
        rec.update(fields)
        self._write(rec)

    # ------------------------------------------------------------------ preflight
    def preflight(self) -> str:
        """Check the endpoint, the key and the model before a campaign submits anything.

        Returns the model to use (the endpoint's only model when none is configured) and
        logs the check (with the server's context, where its metadata says it). Raises
        UserError (its message scrubbed of the key) when the endpoint cannot be reached, the
        URL is not an OpenAI-compatible API, the key is refused, or the model is not served."""
        t0 = time.monotonic()
        rec = self._base_record("preflight", None, round_trip=False)
        try:
            self.config = check_endpoint(self._client(), self.config, rec)
        except UserError as e:  # a server may echo the key in its error message
            e.message = self._redact(e.message)
            e.args = (e.message,)
            raise
        finally:
            rec["latency_s"] = round(time.monotonic() - t0, 3)
            rec["model"] = self.config.model
            self._write(rec)
        return self.config.model

    # ------------------------------------------------------------------ completion
    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        schema: Mapping[str, Any] | None,
        purpose: str,
        generation: int | None,
        check: Callable[[Reply], Mapping[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Reply:
        """One round trip (transport retries and format negotiation inside it), logged.

        ``max_tokens`` is the room the task's reply needs (``[planner] max_tokens``, when set,
        replaces it). ``check(reply)`` returns what the caller makes of the reply (parsed
        proposals, validation errors); it is stored in the same log record. Raises
        ContextExceeded (the context it taught is remembered) or LLMUnavailable."""
        cap = self.config.max_tokens or max_tokens or DEFAULT_MAX_TOKENS
        rec = self._base_record(purpose, generation, round_trip=True)
        rec.update(extra or {})
        rec["messages"] = [dict(m) for m in messages]
        rec["prompt_tokens_estimate"] = messages_tokens(messages)
        rec["max_tokens"] = cap
        retries: list[dict[str, Any]] = []
        negotiation: list[dict[str, Any]] = []
        t0 = time.monotonic()
        if self._maybe_busy:
            self._settle(rec, t0)
        resp, latency, mode = self._negotiate(messages, schema, cap, rec, t0, retries, negotiation)
        reply = reply_from(resp, mode, latency, messages, retries)
        rec.update(
            response_format=mode,
            mode_ok=schema is not None,
            negotiation=negotiation or None,
            reply=reply.text,
            reasoning=reply.reasoning or None,
            finish_reason=reply.finish_reason,
            parse_error=reply.parse_error or None,
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            latency_s=round(reply.latency_s, 3),
            wall_s=round(time.monotonic() - t0, 3),
            attempts=len(retries) + 1,
            retries=retries or None,
            cost=round(self.config.cost(reply.tokens_in, reply.tokens_out), 6),
            error=None,
        )
        try:
            if check is not None:
                rec.update(check(reply))
        except Exception as e:
            rec["error"] = f"checking the reply failed: {type(e).__name__}: {e}"
            raise
        finally:
            self._write(rec)
        return reply

    def _settle(self, rec: dict[str, Any], t0: float) -> None:
        """The last round trip timed out: wait until the server answers a cheap request
        before sending a full one (bounded by the request timeout); fail if it does not."""
        limit = self.config.request_timeout_s
        waited = wait_idle(self._client(), limit)
        if waited is None:
            self._fail(
                rec,
                t0,
                [],
                [],
                LLMUnavailable(
                    f"the server is still busy (GET /models unanswered for {limit:g} s) after the last "
                    "request timed out: not sending another one behind it",
                    None,
                    "busy",
                ),
            )
        rec["idle_wait_s"] = round(waited, 3)
        self._maybe_busy = False

    def _negotiate(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Mapping[str, Any] | None,
        cap: int,
        rec: dict[str, Any],
        t0: float,
        retries: list[dict[str, Any]],
        negotiation: list[dict[str, Any]],
    ) -> tuple[Any, float, str]:
        """Send until a mode is answered: (response, latency, mode). Logs and raises
        LLMUnavailable when every mode is refused or the transport gives up."""
        mode = self.mode if schema is not None else "text"
        while True:
            try:
                resp, latency = self._create(messages, mode, schema, cap, retries)
                return resp, latency, mode
            except ParameterRejected as e:
                value = self.config.temperature if e.name == "temperature" else cap
                negotiation.append({e.name: value, "rejected": str(e)})
                self.memory.rejected_params.add(e.name)
            except FormatRejected as e:
                negotiation.append({"response_format": mode, "rejected": str(e)})
                self.memory.rejected_modes.add(mode)
                later = self.modes[self.modes.index(mode) + 1 :] if mode in self.modes else ()
                if not later:
                    why = f"the server refused response_format {mode} ({e})"
                    self._fail(rec, t0, retries, negotiation, LLMUnavailable(why, 400, "refused"))
                mode = later[0]
            except ContextExceeded as e:
                rec["context_limit"] = e.limit or int(
                    0.7 * ((e.prompt_tokens or rec["prompt_tokens_estimate"]) + cap)
                )
                rec["context_limit_from"] = (
                    "the server's error" if e.limit else "a guess (the server did not say)"
                )
                rec["prompt_tokens"] = e.prompt_tokens
                self._fail(rec, t0, retries, negotiation, e)
            except LLMUnavailable as e:
                self._maybe_busy = e.kind in ("timeout", "busy")
                self._fail(rec, t0, retries, negotiation, e)

    def _fail(
        self,
        rec: dict[str, Any],
        t0: float,
        retries: list[dict[str, Any]],
        negotiation: list[dict[str, Any]],
        error: LLMUnavailable,
    ) -> NoReturn:
        """Log the failed round trip (scrubbed of the key) and raise ``error``, scrubbed too."""
        rec.update(
            negotiation=negotiation or None,
            reply=None,
            tokens_in=0,
            tokens_out=0,
            wall_s=round(time.monotonic() - t0, 3),
            attempts=max(1, len(retries)),  # every attempt failed, and is in "retries"
            retries=retries or None,
            cost=0.0,
            status=error.status,
            error_kind=error.kind,
        )
        rec["error"] = error.message = self._redact(error.message)
        error.args = (error.message,)
        self._write(rec)
        raise error

    def _create(
        self,
        messages: Sequence[Mapping[str, Any]],
        mode: str,
        schema: Mapping[str, Any] | None,
        cap: int,
        retries: list[dict[str, Any]],
    ) -> tuple[Any, float]:
        sent: dict[str, Any] = {}
        if "temperature" not in self.memory.rejected_params:
            sent["temperature"] = self.config.temperature
        sent["max_completion_tokens" if "max_tokens" in self.memory.rejected_params else "max_tokens"] = cap
        kwargs = dict(sent)
        rf = response_format(mode, schema)
        if rf is not None:
            kwargs["response_format"] = rf
        api = self._client()

        def create() -> Any:
            return api.chat.completions.create(
                model=self.config.model, messages=[dict(m) for m in messages], **kwargs
            )

        return send_with_retries(
            create,
            mode=mode,
            sent=sent,
            max_retries=self.config.max_retries,
            timeout_s=self.config.request_timeout_s,
            sleep=self.sleep,
            wait_idle=lambda limit: wait_idle(api, limit),
            retries=retries,
        )


def reply_from(
    resp: Any, mode: str, latency: float, messages: Sequence[Mapping[str, Any]], retries: list[dict[str, Any]]
) -> Reply:
    """The :class:`Reply` of a chat completion response (token counts estimated where the
    server gives none; the JSON parsed, or why it could not be)."""
    choices = getattr(resp, "choices", None) or []
    text, finish, reasoning = "", "no choices in the response", ""
    if choices:
        msg = choices[0].message
        text = msg.content or ""
        refusal = getattr(msg, "refusal", None)
        finish = f"refusal: {refusal}" if not text and refusal else str(choices[0].finish_reason or "")
        extra = getattr(msg, "model_extra", None) or {}
        reasoning = str(extra.get("reasoning_content") or extra.get("reasoning") or "")
    usage = getattr(resp, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0) or messages_tokens(messages)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0) or estimate_tokens(text)
    data, err = parse_json_reply(text)
    return Reply(text, data, err, mode, tokens_in, tokens_out, latency, finish, reasoning, retries)


def response_format(mode: str, schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` of a request in ``mode`` (None: plain text)."""
    if mode == "json_schema" and schema is not None:
        strict = strict_subset(schema)
        return {
            "type": "json_schema",
            "json_schema": {"name": "hpc_agent_reply", "schema": strict, "strict": True},
        }
    if mode == "json_object+schema" and schema is not None:
        return {"type": "json_object", "schema": dict(schema)}
    if mode in ("json_object", "json_object+schema"):
        return {"type": "json_object"}
    return None
