"""The OpenAI-compatible client: structured output, retries, preflight, and the exchange log.

Any server that speaks ``/v1/chat/completions`` will do (OpenAI, vLLM, Ollama, llama.cpp's
server, a university gateway). What differs between them is handled here, once:

* **Configuration** (:func:`resolve_config`): ``[planner] base_url`` / ``model`` in the spec,
  else ``$OPENAI_BASE_URL`` / ``$HPC_AGENT_MODEL``; the key is read from the variable named by
  ``[planner] api_key_env`` (``OPENAI_API_KEY``) when a request is made, and kept nowhere else:
  never in the spec, the journal, ``llm.jsonl`` (every record is scrubbed of it), nor a job's
  environment (the campaign unsets the variable for its jobs).
* **Structured output, negotiated per endpoint.** ``response_format`` ``json_schema`` first;
  a server that rejects it (HTTP 400/422 naming the response format) is asked with
  ``json_object``, then with plain text, where the JSON is taken from a fenced block or the
  first balanced ``{...}``. Whatever worked is *remembered for the campaign* without a state
  file of its own: every record of ``llm.jsonl`` names the ``response_format`` that was
  answered, so a restarted driver reads the last one for the same endpoint and model and
  starts there (``[planner] structured_output`` pins one mode and turns negotiation off).
* **Tolerant parsing** (:func:`parse_json_reply`): raw control characters inside strings,
  invalid escapes (``\\_``), trailing commas, ``<think>`` preambles and prose around the JSON.
* **Transport retries** with exponential backoff (``BACKOFF_BASE_S`` x 2^n, jittered) on 429,
  5xx, 408/409, timeouts, dropped connections and malformed bodies, honouring
  ``Retry-After``; at most ``[planner] max_retries`` of them. The ``openai`` client's own
  retries are off, so the log shows every attempt. When they are spent the caller gets
  :class:`LLMUnavailable`, and the planner falls back to TPE for that generation.
* **Preflight** (:meth:`LLMClient.preflight`): an endpoint that cannot be reached or that
  refuses the key or the model is a :class:`UserError` (exit 2) *before* anything is
  submitted, with the fix (the models the endpoint does serve, via ``GET /models``).
* **The exchange log** ``results/<name>/llm.jsonl``: one JSON line per round trip (purpose,
  messages, reply, parsed proposals, validation errors, tokens, latency, retries, cost);
  :func:`format_log` renders it for ``hpc-agent logs``.

``openai`` is imported on the first request, so a campaign planned by TPE never loads it.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from hpc_agent.errors import UserError

if TYPE_CHECKING:
    from hpc_agent.spec import PlannerSection

# ------------------------------------------------------------------------------- defaults
BACKOFF_BASE_S = 1.0  # first transport retry waits about this long, then x2 each time
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 300.0  # a server asking for longer is waited on this long at most
CONNECT_TIMEOUT_S = 10.0
PREFLIGHT_TIMEOUT_S = 30.0
DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHARS_PER_TOKEN = 4.0  # the estimate used to fit prompts into [planner] context_tokens
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per chat message
MODES = ("json_schema", "json_object", "text")  # negotiation order
LOG_NAME = "llm.jsonl"
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured", "schema", "grammar", "guided")
_RETRY_STATUSES = (408, 409, 429)


class LLMUnavailable(Exception):
    """The endpoint did not answer usefully: retries spent, or a refusal (401/403/404 ...).
    Not a user error in the middle of a campaign: the planner falls back to TPE."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token for English, code and JSON)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def messages_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(estimate_tokens(str(m.get("content", ""))) + MESSAGE_OVERHEAD_TOKENS for m in messages)


# ------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask. Holds the *name* of the key's variable, never the key."""

    base_url: str
    model: str  # "" = not configured: preflight takes the endpoint's only model
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_retries: int = 3
    request_timeout_s: float = 300.0
    structured_output: str = "auto"
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    model_from: str = ""  # where the model came from, for messages

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "")

    @property
    def display_url(self) -> str:
        """The base URL without a user:password part (it may hold a credential)."""
        return redact_url(self.base_url)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in_per_mtok + tokens_out * self.price_out_per_mtok) / 1e6

    @property
    def priced(self) -> bool:
        return bool(self.price_in_per_mtok or self.price_out_per_mtok)


def resolve_config(planner: PlannerSection, environ: Mapping[str, str] | None = None) -> LLMConfig:
    """[planner] values first, then the environment (OPENAI_BASE_URL, HPC_AGENT_MODEL)."""
    env = os.environ if environ is None else environ
    base_url = planner.base_url or env.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
    where = "[planner] base_url" if planner.base_url else "OPENAI_BASE_URL"
    if not base_url.startswith(("http://", "https://")):
        raise UserError(
            f"{where} = {base_url!r}: expected an http(s) URL such as http://localhost:8000/v1",
            fix=f"set {where} to the endpoint's base URL (the part before /chat/completions)",
        )
    model, model_from = planner.model, "[planner] model"
    if not model:
        model, model_from = env.get("HPC_AGENT_MODEL", "").strip(), "HPC_AGENT_MODEL"
    return LLMConfig(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key_env=planner.api_key_env,
        temperature=planner.temperature,
        max_retries=planner.max_retries,
        request_timeout_s=planner.request_timeout_s,
        structured_output=planner.structured_output,
        price_in_per_mtok=planner.price_in_per_mtok,
        price_out_per_mtok=planner.price_out_per_mtok,
        model_from=model_from if model else "",
    )


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    return [s for s in (parts.password, parts.username) if s and len(s) >= 4]


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret (and its JSON-escaped form) replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
            escaped = json.dumps(s)[1:-1]
            if escaped != s:
                text = text.replace(escaped, "***")
    return text


# ------------------------------------------------------------------------------- parsing

_THINK_RE = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n(.*?)```", re.S)


def parse_json_reply(text: str) -> tuple[Any, str]:
    """The JSON value a reply carries, and "" ; or (None, why it could not be read).

    Tried in order: the whole reply, each fenced block, each balanced ``{...}``; each with
    raw control characters allowed inside strings, then once more with invalid escapes
    doubled and trailing commas removed."""
    if not text or not text.strip():
        return None, "the reply is empty"
    body = _THINK_RE.sub("", text).strip().lstrip("\ufeff")
    if not body:
        return None, "the reply holds only reasoning (<think>...</think>), no JSON"
    candidates = [body, *(m.group(1).strip() for m in _FENCE_RE.finditer(body)), *_balanced_objects(body)]
    first_error = ""
    for c in candidates:
        value, err = _loads(c)
        if not err:
            return value, ""
        first_error = first_error or err
    return None, f"the reply is not valid JSON ({first_error})"


def _loads(s: str) -> tuple[Any, str]:
    try:
        return json.loads(s, strict=False), ""
    except ValueError as e:
        err = str(e)
    fixed = _lenient(s)
    if fixed != s:
        try:
            return json.loads(fixed, strict=False), ""
        except ValueError:
            pass
    return None, err


def _lenient(s: str) -> str:
    """Double the backslashes of invalid escapes inside strings; drop trailing commas."""
    out: list[str] = []
    in_str = False
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if in_str:
            if c == "\\":
                nxt = s[i + 1] if i + 1 < n else ""
                if nxt and nxt in '"\\/bfnrtu':
                    out.append(c + nxt)
                    i += 2
                    continue
                out.append("\\\\")
                i += 1
                continue
            if c == '"':
                in_str = False
            out.append(c)
        else:
            if c == '"':
                in_str = True
            elif c == ",":
                j = i + 1
                while j < n and s[j] in " \t\r\n":
                    j += 1
                if j < n and s[j] in "}]":
                    i += 1
                    continue
            out.append(c)
        i += 1
    return "".join(out)


def _balanced_objects(s: str, limit: int = 20) -> Iterator[str]:
    """Substrings that are balanced ``{...}`` (string-aware), in order of their start."""
    starts = [m.start() for m in re.finditer(r"\{", s)][:limit]
    for start in starts:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(s)):
            c = s[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    yield s[start : i + 1]
                    break


# ------------------------------------------------------------------------------- the log


class ExchangeLog:
    """``llm.jsonl``: append-only, one JSON object a line; a torn last line is skipped."""

    def __init__(self, path: Path | None, secrets: Sequence[str] = ()) -> None:
        self.path = path
        self.secrets = tuple(s for s in secrets if s)

    def append(self, record: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        line = redact(json.dumps(record, ensure_ascii=False, default=str), self.secrets)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        yield from read_log(self.path) if self.path else iter(())

    def remembered_mode(self, base_url: str, model: str) -> str | None:
        """The response_format that last worked for this endpoint and model, if any."""
        mode = None
        for r in self.records():
            if r.get("mode_ok") and r.get("base_url") == redact_url(base_url) and r.get("model") == model:
                mode = r.get("response_format")
        return mode if mode in MODES else None


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of ``llm.jsonl``; a torn last line (the driver died writing it) is skipped."""
    if not path.exists():
        return
    import jsonlines

    with open(path, encoding="utf-8", errors="replace") as f:
        reader = jsonlines.Reader(f)
        yield from reader.iter(type=dict, skip_empty=True, skip_invalid=True)


# ------------------------------------------------------------------------------- the client


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


class _FormatRejected(Exception):
    pass


class _TemperatureRejected(Exception):
    """Reasoning models take only their default temperature: ask again without one."""


class LLMClient:
    """Talks to one endpoint for one campaign. Not thread-safe (the driver is one thread)."""

    def __init__(self, config: LLMConfig, log_path: Path | None = None) -> None:
        self.config = config
        self.sleep: Callable[[float], None] = time.sleep
        self._openai: Any = None
        self._mode: str | None = None if config.structured_output == "auto" else config.structured_output
        self._send_temperature = True
        self._pending_records: list[dict[str, Any]] = []
        self.log = ExchangeLog(None, self._secrets())
        if log_path is not None:
            self.set_log(log_path)

    # ------------------------------------------------------------------ plumbing
    def _secrets(self) -> list[str]:
        key = self.config.api_key()
        return ([key] if len(key) >= 8 else []) + _url_secrets(self.config.base_url)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def set_log(self, path: Path) -> None:
        """Write exchanges to ``path`` from now on, and read back what worked before."""
        if self.log.path == path:
            return
        self.log = ExchangeLog(path, self._secrets())
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
        """Check the endpoint, the key and the model; see :meth:`_preflight`."""
        try:
            return self._preflight()
        except UserError as e:  # a server may echo the key in its error message
            e.message = self._redact(e.message)
            e.args = (e.message,)
            raise

    def _preflight(self) -> str:
        """Check the endpoint, the key and the model before a campaign submits anything.

        Returns the model to use (the endpoint's only model when none is configured).
        Raises UserError when the endpoint cannot be reached, refuses the key, or does not
        serve the model. A slow or overloaded endpoint (timeouts, 429, 5xx) is not an error
        here: each generation retries, then falls back to TPE."""
        import openai

        cfg = self.config
        t0 = time.monotonic()
        rec = self._base_record("preflight", None, round_trip=False)
        served: list[str] | None = None
        note = ""
        try:
            page = self._client().models.list(timeout=min(cfg.request_timeout_s, PREFLIGHT_TIMEOUT_S))
            served = sorted(str(m.id) for m in page.data)
        except openai.APITimeoutError:
            note = "GET /models timed out"
        except openai.APIConnectionError as e:
            self._preflight_failed(rec, t0, f"connection failed: {_cause(e)}")
            raise UserError(
                f"cannot reach the LLM endpoint at {cfg.display_url} ({_cause(e)})",
                fix="start the server or fix the URL (OPENAI_BASE_URL or [planner] base_url), "
                "or plan without an LLM: --planner tpe",
            ) from None
        except openai.APIStatusError as e:
            self._raise_refusal(e, rec, t0)
            if e.status_code != 404:  # 404: a server without /models; 429 and 5xx: busy
                note = f"GET /models answered HTTP {e.status_code}"
        except ValueError as e:  # a body that is not JSON (a proxy's HTML page?)
            note = f"GET /models answered something that is not JSON ({e})"
        model = cfg.model
        if not model:
            if served and len(served) == 1:
                model = served[0]
            else:
                self._preflight_failed(rec, t0, "no model configured", served)
                listing = (
                    f"the endpoint serves: {_listing(served)}" if served else "the endpoint lists no models"
                )
                raise UserError(
                    f"no LLM model configured for {cfg.display_url} ({listing})",
                    fix='set HPC_AGENT_MODEL, or model = "..." in [planner] of campaign.toml',
                )
            self.config = _with_model(cfg, model, "the endpoint's only model")
        elif served is None or model not in served:
            # not listed (or no list): a tiny request tells whether it is served after all
            self._probe_model(rec, t0, served)
        rec.update(ok=True, served=served, note=note, latency_s=round(time.monotonic() - t0, 3))
        rec["model"] = self.config.model
        self._write(rec)
        return self.config.model

    def _probe_model(self, rec: dict[str, Any], t0: float, served: list[str] | None) -> None:
        import openai

        cfg = self.config
        try:
            self._client().chat.completions.create(
                model=cfg.model,
                messages=[{"role": "user", "content": "Reply with the word OK."}],
                timeout=min(cfg.request_timeout_s, PREFLIGHT_TIMEOUT_S),
            )
        except openai.APIStatusError as e:
            if e.status_code == 404:
                self._preflight_failed(rec, t0, f"model not served: {_status_message(e)}", served)
                listing = (
                    f"available models are {_listing(served)}" if served else "see the server's documentation"
                )
                raise UserError(
                    f"model {cfg.model!r} ({cfg.model_from}) is not served by {cfg.display_url}: {listing}",
                    fix=f"set {cfg.model_from or 'HPC_AGENT_MODEL'} to a model the endpoint serves",
                ) from None
            self._raise_refusal(e, rec, t0)
        except (openai.APIConnectionError, ValueError):
            pass  # reachable a moment ago: a busy endpoint is the generations' problem

    def _raise_refusal(self, e: Any, rec: dict[str, Any], t0: float) -> None:
        cfg = self.config
        status = e.status_code
        if status not in (401, 403):
            return
        self._preflight_failed(rec, t0, f"HTTP {status}: {_status_message(e)}")
        var = cfg.api_key_env
        has_key = bool(cfg.api_key())
        what = "refused the API key" if status == 401 else "forbids this key"
        state = f"${var} is set" if has_key else f"${var} is not set"
        raise UserError(
            f"the LLM endpoint {cfg.display_url} {what} (HTTP {status}: {_status_message(e)}; {state})",
            fix=f"set {var} to a valid key for this endpoint"
            + (" (or [planner] api_key_env to the variable that holds it)" if not has_key else "")
            + ", or plan without an LLM: --planner tpe",
        ) from None

    def _preflight_failed(
        self, rec: dict[str, Any], t0: float, error: str, served: list[str] | None = None
    ) -> None:
        rec.update(ok=False, error=error, served=served, latency_s=round(time.monotonic() - t0, 3))
        self._write(rec)

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
        mode = self.mode if schema is not None else "text"
        t0 = time.monotonic()
        while True:
            try:
                resp, latency = self._create(messages, mode, schema, retries)
                break
            except _TemperatureRejected as e:
                negotiation.append({"temperature": self.config.temperature, "rejected": str(e)})
                self._send_temperature = False
                continue
            except _FormatRejected as e:
                negotiation.append({"response_format": mode, "rejected": str(e)})
                nxt = MODES.index(mode) + 1
                if self.config.structured_output != "auto" or nxt >= len(MODES):
                    self._fail(rec, t0, retries, negotiation, f"response_format {mode} rejected: {e}", 400)
                mode = MODES[nxt]
            except LLMUnavailable as e:
                self._fail(rec, t0, retries, negotiation, e.message, e.status)
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
        import openai

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
        attempts = 1 + max(0, self.config.max_retries)
        last = ""
        for attempt in range(attempts):
            t0 = time.monotonic()
            wait: float | None = None
            try:
                resp = self._client().chat.completions.create(
                    model=self.config.model,
                    messages=[dict(m) for m in messages],
                    **kwargs,
                )
                return resp, time.monotonic() - t0
            except openai.APIStatusError as e:
                status = e.status_code
                msg = _status_message(e)
                if mode != "text" and status in (400, 415, 422, 501) and _mentions_format(msg):
                    raise _FormatRejected(f"HTTP {status}: {msg}") from None
                if status in (400, 422) and "temperature" in msg.lower() and self._send_temperature:
                    raise _TemperatureRejected(f"HTTP {status}: {msg}") from None
                if status not in _RETRY_STATUSES and status < 500:
                    retries.append({"attempt": attempt + 1, "error": f"HTTP {status}: {msg}", "wait_s": None})
                    raise LLMUnavailable(f"HTTP {status}: {msg}", status) from None
                last = f"HTTP {status}: {msg}"
                wait = _retry_after(e.response.headers)
            except openai.APITimeoutError:
                last = f"timed out after {self.config.request_timeout_s:g} s"
            except openai.APIConnectionError as e:
                last = f"connection failed: {_cause(e)}"
            except ValueError as e:  # HTTP 200 whose body is not JSON
                last = f"malformed response body: {e}"
            if attempt + 1 >= attempts:
                retries.append({"attempt": attempt + 1, "error": last, "wait_s": None})
                break
            if wait is None:
                wait = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.8, 1.2)
            wait = min(wait, RETRY_AFTER_MAX_S)
            retries.append({"attempt": attempt + 1, "error": last, "wait_s": round(wait, 3)})
            self.sleep(wait)
        raise LLMUnavailable(f"{last} (after {attempts} attempt(s))")

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


def _with_model(cfg: LLMConfig, model: str, model_from: str) -> LLMConfig:
    return replace(cfg, model=model, model_from=model_from)


def _listing(models: Sequence[str] | None, limit: int = 20) -> str:
    if not models:
        return "none"
    shown = ", ".join(models[:limit])
    return shown + (f", ... ({len(models)} in all)" if len(models) > limit else "")


def _status_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    if isinstance(body, str) and body:
        return body[:500]
    return str(getattr(e, "message", e))[:500]


def _mentions_format(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _FORMAT_WORDS)


def _cause(e: BaseException) -> str:
    cause = e.__cause__ or e.__context__
    text = str(cause) if cause is not None else ""
    return text or str(e) or type(e).__name__


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asks us to wait (Retry-After / retry-after-ms), if it says."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ------------------------------------------------------------------------------- hpc-agent logs


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
    exchanges = [r for r in records if r.get("round_trip", r.get("purpose") != "preflight")]
    t_in = sum(int(r.get("tokens_in") or 0) for r in exchanges)
    t_out = sum(int(r.get("tokens_out") or 0) for r in exchanges)
    cost = sum(float(r.get("cost") or 0.0) for r in exchanges)
    failed = sum(1 for r in exchanges if r.get("error"))
    retries = sum(1 for r in exchanges for a in r.get("retries") or [] if a.get("wait_s") is not None)
    by_purpose: dict[str, int] = {}
    for r in exchanges:
        by_purpose[str(r.get("purpose"))] = by_purpose.get(str(r.get("purpose")), 0) + 1
    purposes = ", ".join(f"{n} {p}" for p, n in sorted(by_purpose.items()))
    cost_text = (
        f"cost ~{cost:.4f}" if cost else "cost n/a (set [planner] price_in_per_mtok / price_out_per_mtok)"
    )
    lines.append(
        f"total: {len(exchanges)} round trip(s) ({purposes or 'none'}), {failed} failed, {retries} transport "
        f"retr{'y' if retries == 1 else 'ies'}; tokens in {t_in:,}, out {t_out:,}; {cost_text}"
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
        served = r.get("served")
        status = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
        out = [f"{head} · {r.get('base_url')} · {status}"]
        if served is not None:
            out.append(f"  models served: {_listing(served)}")
        if r.get("note"):
            out.append(f"  note: {r['note']}")
        return out
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
        what = (
            f"response_format {n['response_format']}"
            if "response_format" in n
            else f"temperature {n.get('temperature')}"
        )
        out.append(f"  {what} rejected: {n.get('rejected')}")
    for t in r.get("retries") or []:
        wait = f", waited {t['wait_s']:g} s" if t.get("wait_s") is not None else ""
        out.append(f"  attempt {t.get('attempt')} failed: {t.get('error')}{wait}")
    if r.get("error"):
        out.append(f"  ERROR: {r['error']}")
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
    if r.get("proposals_made") is not None:
        out.append(
            f"  proposals for generation {r.get('plan_for')}: {r['proposals_made']} (checked when planned)"
        )
    for e in r.get("validation_errors") or []:
        out.append(f"  invalid: {e}")
    if r.get("note"):
        out.append(f"  note: {r['note']}")
    if full:
        for m in r.get("messages") or []:
            out.append(f"  --- {m.get('role')} ---")
            out.extend("  " + ln for ln in str(m.get("content", "")).splitlines())
        if r.get("reasoning"):
            out.append("  --- reasoning ---")
            out.extend("  " + ln for ln in str(r["reasoning"]).splitlines())
        if r.get("reply") is not None:
            out.append("  --- reply ---")
            out.extend("  " + ln for ln in str(r["reply"]).splitlines())
    elif r.get("reply"):
        out.append(f"  reply: {_short(str(r['reply']), 240)}")
    return out


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
