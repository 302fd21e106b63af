"""The client: one endpoint, one campaign; every round trip negotiated, retried and logged.

Structured output is negotiated per endpoint: ``response_format`` ``json_schema`` first; a
server that rejects it is asked with ``json_object``, then with plain text, where the JSON is
taken from a fenced block or the first balanced ``{...}``. Whatever worked is remembered for
the campaign without a state file of its own: every record of ``llm.jsonl`` names the
``response_format`` that was answered, so a restarted driver reads the last one for the same
endpoint and model and starts there (``[planner] structured_output`` pins one mode and turns
negotiation off).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hpc_agent.errors import UserError
from hpc_agent.llm.config import LLMConfig, redact, secrets_of
from hpc_agent.llm.log import MODES, ExchangeLog
from hpc_agent.llm.parsing import parse_json_reply
from hpc_agent.llm.preflight import check_endpoint
from hpc_agent.llm.tokens import estimate_tokens, messages_tokens
from hpc_agent.llm.transport import (
    FormatRejected,
    LLMUnavailable,
    TemperatureRejected,
    send_with_retries,
)

CONNECT_TIMEOUT_S = 10.0


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


class LLMClient:
    """Talks to one endpoint for one campaign. Not thread-safe (the driver is one thread).

    Call order: :meth:`preflight` (optional, before the results folder exists), then
    :meth:`set_log` once the results folder is known, then :meth:`complete` per round trip.
    Records written before :meth:`set_log` are kept and written when it is called."""

    def __init__(self, config: LLMConfig, log_path: Path | None = None) -> None:
        self.config = config
        self.sleep: Callable[[float], None] = time.sleep
        self._openai: Any = None
        self._mode: str | None = None if config.structured_output == "auto" else config.structured_output
        self._send_temperature = True
        self._pending_records: list[dict[str, Any]] = []
        self.log = ExchangeLog(None, secrets_of(config))
        if log_path is not None:
            self.set_log(log_path)

    # ------------------------------------------------------------------ plumbing
    def _redact(self, text: str) -> str:
        return redact(text, secrets_of(self.config))

    def set_log(self, path: Path) -> None:
        """Write exchanges to ``path`` from now on, and read back what worked before."""
        if self.log.path == path:
            return
        self.log = ExchangeLog(path, secrets_of(self.config))
        if self._mode is None:
            self._mode = self.log.remembered_mode(self.config.base_url, self.config.model)
        for rec in self._pending_records:
            self.log.append(rec)
        self._pending_records.clear()

    def _write(self, record: dict[str, Any]) -> None:
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
    def mode(self) -> str:
        """The response_format the next request starts with."""
        return self._mode or MODES[0]

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
        logs the check. Raises UserError (its message scrubbed of the key) when the endpoint
        cannot be reached, refuses the key, or does not serve the model."""
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
    ) -> Reply:
        """One round trip (transport retries and format negotiation inside it), logged.

        ``check(reply)`` returns what the caller makes of the reply (parsed proposals,
        validation errors); it is stored in the same log record. Raises LLMUnavailable."""
        rec = self._base_record(purpose, generation, round_trip=True)
        rec.update(extra or {})
        rec["messages"] = [dict(m) for m in messages]
        rec["prompt_tokens_estimate"] = messages_tokens(messages)
        retries: list[dict[str, Any]] = []
        negotiation: list[dict[str, Any]] = []
        t0 = time.monotonic()
        resp, latency, mode = self._negotiate(messages, schema, rec, t0, retries, negotiation)
        if schema is not None:
            self._mode = mode
        reply = self._reply(resp, mode, latency, messages, retries)
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

    def _negotiate(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema: Mapping[str, Any] | None,
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
                resp, latency = self._create(messages, mode, schema, retries)
                return resp, latency, mode
            except TemperatureRejected as e:
                negotiation.append({"temperature": self.config.temperature, "rejected": str(e)})
                self._send_temperature = False
            except FormatRejected as e:
                negotiation.append({"response_format": mode, "rejected": str(e)})
                nxt = MODES.index(mode) + 1
                if self.config.structured_output != "auto" or nxt >= len(MODES):
                    self._fail(rec, t0, retries, negotiation, f"response_format {mode} rejected: {e}", 400)
                mode = MODES[nxt]
            except LLMUnavailable as e:
                self._fail(rec, t0, retries, negotiation, e.message, e.status)

    def _fail(
        self,
        rec: dict[str, Any],
        t0: float,
        retries: list[dict[str, Any]],
        negotiation: list[dict[str, Any]],
        error: str,
        status: int | None,
    ) -> NoReturn:
        rec.update(
            negotiation=negotiation or None,
            reply=None,
            tokens_in=0,
            tokens_out=0,
            wall_s=round(time.monotonic() - t0, 3),
            attempts=max(1, len(retries)),  # every attempt failed, and is in "retries"
            retries=retries or None,
            cost=0.0,
            error=error,
            status=status,
        )
        rec["error"] = self._redact(error)
        self._write(rec)
        raise LLMUnavailable(rec["error"], status)

    def _create(
        self,
        messages: Sequence[Mapping[str, Any]],
        mode: str,
        schema: Mapping[str, Any] | None,
        retries: list[dict[str, Any]],
    ) -> tuple[Any, float]:
        kwargs: dict[str, Any] = {}
        if self._send_temperature:
            kwargs["temperature"] = self.config.temperature
        if mode == "json_schema" and schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "hpc_agent_reply", "schema": dict(schema), "strict": True},
            }
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        api = self._client()

        def create() -> Any:
            return api.chat.completions.create(
                model=self.config.model, messages=[dict(m) for m in messages], **kwargs
            )

        return send_with_retries(
            create,
            mode=mode,
            sends_temperature=self._send_temperature,
            max_retries=self.config.max_retries,
            timeout_s=self.config.request_timeout_s,
            sleep=self.sleep,
            retries=retries,
        )

    def _reply(
        self,
        resp: Any,
        mode: str,
        latency: float,
        messages: Sequence[Mapping[str, Any]],
        retries: list[dict[str, Any]],
    ) -> Reply:
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
