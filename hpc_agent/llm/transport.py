"""One chat request, with transport retries, and what an HTTP error means.

Retried with exponential backoff (``BACKOFF_BASE_S`` x 2^n, jittered), honouring
``Retry-After``: 429, 5xx, 408/409, dropped connections and malformed bodies, at most
``[planner] max_retries`` times. The ``openai`` client's own retries are off, so the log shows
every attempt.

A timeout is different: the server may still be generating the reply we stopped waiting for
(llama.cpp-based servers go on generating a non-streamed reply after the client has gone, and
answer nothing else meanwhile). Resending at once would queue a second full generation behind
the abandoned one. So after a timeout the request is resent only once the server answers a
cheap ``GET /models`` again (``wait_idle``, bounded by the request timeout); a server still
busy by then is left alone: the round trip fails, and the generation is planned by TPE.

What an error means is decided here, whatever its status code: a refusal of the
``response_format`` (recognised by its message: llama-cpp-python answers ``json_schema`` with
HTTP 500) is :class:`FormatRejected`; of the temperature or of ``max_tokens``,
:class:`ParameterRejected`; a prompt over the server's context, :class:`ContextExceeded`
(with the limit, when the message says it). Everything else that cannot be retried, or is
still failing when the retries are spent, is :class:`LLMUnavailable`, worded as what happened.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

BACKOFF_BASE_S = 1.0  # first transport retry waits about this long, then x2 each time
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 300.0  # a server asking for longer is waited on this long at most
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured", "schema", "grammar", "guided")
_RETRY_STATUSES = (408, 409, 429)
_NOT_FORMAT_STATUSES = (401, 403, 404, 408, 409, 429)  # their message is about something else
# how servers say a prompt is over their context, and where the limit is in the message
_CONTEXT_LIMIT_RES = (
    re.compile(r"maximum context length is (\d[\d,]*)", re.I),  # OpenAI, vLLM, llama-cpp-python
    re.compile(r"context (?:window|length|size)\D{0,20}?(\d[\d,]*)", re.I),  # llama.cpp, LM Studio, ...
    re.compile(r"\bn_ctx\W{0,3}(\d+)", re.I),  # llama.cpp
)
_CONTEXT_WORDS = ("context length", "context window", "context size", "maximum context", "n_ctx", "too long")
_PROMPT_TOKENS_RE = re.compile(r"(\d[\d,]*) in the messages|request \((\d[\d,]*) tokens\)", re.I)


class LLMUnavailable(Exception):
    """The endpoint did not answer usefully: a refusal, a failure, or retries spent.

    Not a user error in the middle of a campaign: the planner falls back to TPE. ``message``
    says what happened, in words (``the server refused the request (HTTP 400: ...)``);
    ``status`` is the last HTTP status, if any; ``kind`` is one of ``refused`` (4xx),
    ``failed`` (5xx), ``unreachable``, ``timeout``, ``busy``, ``malformed``, ``context``."""

    def __init__(self, message: str, status: int | None = None, kind: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind


class ContextExceeded(LLMUnavailable):
    """The prompt (and the reply's room) is over the server's context. ``limit``: the
    server's context in tokens when its message says it; ``prompt_tokens``: the prompt's real
    size when the message says it."""

    def __init__(
        self, message: str, status: int | None, limit: int | None, prompt_tokens: int | None
    ) -> None:
        super().__init__(message, status, "context")
        self.limit = limit
        self.prompt_tokens = prompt_tokens


class FormatRejected(Exception):
    """The server refused the ``response_format`` sent: ask again with the next mode."""


class ParameterRejected(Exception):
    """The server refused a request parameter it does not take: ``name`` is ``temperature``
    (reasoning models take only their default) or ``max_tokens`` (they want
    ``max_completion_tokens``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def send_with_retries(
    create: Callable[[], Any],
    *,
    mode: str,
    sent: Mapping[str, Any],
    max_retries: int,
    timeout_s: float,
    sleep: Callable[[float], None],
    wait_idle: Callable[[float], float | None],
    retries: list[dict[str, Any]],
) -> tuple[Any, float]:
    """``create()`` (one request) until it answers: (the response, its latency in seconds).

    ``sent`` is the request's optional parameters (to tell which one a refusal is about);
    ``wait_idle(limit_s)`` returns the seconds it took the server to answer a cheap request,
    or None if it did not within ``limit_s``. Every failed attempt is appended to ``retries``
    (attempt, error, wait_s). Raises FormatRejected / ParameterRejected for the caller to
    negotiate, ContextExceeded, and LLMUnavailable when the server refuses the request, stays
    busy after a timeout, or the retries are spent."""
    import openai

    attempts = 1 + max(0, max_retries)
    last, kind, status = "", "failed", None
    for attempt in range(attempts):
        t0 = time.monotonic()
        wait: float | None = None
        try:
            return create(), time.monotonic() - t0
        except openai.APIStatusError as e:
            status = e.status_code
            msg = status_message(e)
            _raise_refusal(status, msg, getattr(e, "body", None), mode, sent, attempt, retries)
            last, kind = f"HTTP {status}: {msg}", "failed"
            wait = retry_after(e.response.headers)
        except openai.APITimeoutError:
            last, kind = f"no reply within {timeout_s:g} s", "timeout"
        except openai.APIConnectionError as e:
            last, kind = f"connection failed: {cause(e)}", "unreachable"
        except ValueError as e:  # HTTP 200 whose body is not JSON
            last, kind = f"malformed response body: {e}", "malformed"
        if attempt + 1 >= attempts:
            retries.append({"attempt": attempt + 1, "error": last, "wait_s": None})
            break
        if kind == "timeout":
            _wait_until_idle(wait_idle, timeout_s, attempt, last, retries)
            continue
        if wait is None:
            wait = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.8, 1.2)
        wait = min(wait, RETRY_AFTER_MAX_S)
        retries.append({"attempt": attempt + 1, "error": last, "wait_s": round(wait, 3)})
        sleep(wait)
    raise LLMUnavailable(_worded(kind, last) + f" ({attempts} attempt(s))", status, kind)


def _wait_until_idle(
    wait_idle: Callable[[float], float | None],
    timeout_s: float,
    attempt: int,
    last: str,
    retries: list[dict[str, Any]],
) -> None:
    """After a timeout: return once the server answers again; raise LLMUnavailable ("busy")
    when it is still at the abandoned request ``timeout_s`` later."""
    waited = wait_idle(timeout_s)
    if waited is None:
        retries.append({"attempt": attempt + 1, "error": last, "wait_s": round(timeout_s, 3)})
        raise LLMUnavailable(
            f"the server gave no reply within {timeout_s:g} s and was still busy {timeout_s:g} s "
            "later (GET /models unanswered): not resending, so as not to queue a second "
            "generation behind the abandoned one",
            None,
            "busy",
        )
    retries.append({"attempt": attempt + 1, "error": last, "wait_s": round(waited, 3), "idle_check": True})


def _raise_refusal(
    status: int,
    msg: str,
    body: Any,
    mode: str,
    sent: Mapping[str, Any],
    attempt: int,
    retries: list[dict[str, Any]],
) -> None:
    """Raise what an HTTP error means when it is not worth retrying; return when it is."""
    low = msg.lower()
    if mode != "text" and status not in _NOT_FORMAT_STATUSES and mentions_format(msg):
        raise FormatRejected(f"HTTP {status}: {msg}")
    for name in ("temperature", "max_tokens"):
        if name in sent and status in (400, 422) and name in low and "context" not in low:
            raise ParameterRejected(name, f"HTTP {status}: {msg}")
    context = _context_error(status, msg, body)
    if context is None and (status in _RETRY_STATUSES or status >= 500):
        return  # retried
    retries.append({"attempt": attempt + 1, "error": f"HTTP {status}: {msg}", "wait_s": None})
    raise context or LLMUnavailable(_worded("refused", f"HTTP {status}: {msg}"), status, "refused")


def _context_error(status: int, msg: str, body: Any) -> ContextExceeded | None:
    """A ContextExceeded when the message says the prompt is over the server's context."""
    low = msg.lower()
    err = body.get("error") if isinstance(body, Mapping) else None
    err = err if isinstance(err, Mapping) else {}
    if not (any(w in low for w in _CONTEXT_WORDS) or "exceed_context" in str(err.get("type", ""))):
        return None
    limit = err.get("n_ctx") if isinstance(err.get("n_ctx"), int) else None
    for pattern in _CONTEXT_LIMIT_RES:
        m = pattern.search(msg)
        if limit is None and m:
            limit = int(m.group(1).replace(",", ""))
    prompt = err.get("n_prompt_tokens") if isinstance(err.get("n_prompt_tokens"), int) else None
    m = _PROMPT_TOKENS_RE.search(msg)
    if prompt is None and m:
        prompt = int((m.group(1) or m.group(2)).replace(",", ""))
    what = f"{limit:,} tokens" if limit else "a size it does not say"
    return ContextExceeded(
        f"the server refused the request: the prompt is over its context ({what}; HTTP {status}: {msg})",
        status,
        limit,
        prompt,
    )


def _worded(kind: str, last: str) -> str:
    """What happened, in words, for the log and the plan's note."""
    if kind == "refused":
        return f"the server refused the request ({last})"
    if kind == "failed":
        return f"the server failed ({last})"
    if kind == "timeout":
        return f"the server gave {last}"
    if kind == "unreachable":
        return f"could not reach the server ({last})"
    return f"the server's answer could not be read ({last})"


def status_message(e: Any) -> str:
    """The message of an HTTP error's body (OpenAI's ``{"error": {"message"}}`` and others)."""
    body = getattr(e, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if body.get("message"):
            return str(body["message"])[:500]
        if isinstance(body.get("detail"), str):  # FastAPI's own errors (a wrong path)
            return str(body["detail"])[:500]
    if isinstance(body, str) and body:
        return body[:500]
    return str(getattr(e, "message", e))[:500]


def mentions_format(message: str) -> bool:
    """Does an error message speak of the response format (a structured-output refusal)?"""
    low = message.lower()
    return any(w in low for w in _FORMAT_WORDS)


def cause(e: BaseException) -> str:
    """The underlying reason of a connection error, as text."""
    c = e.__cause__ or e.__context__
    text = str(c) if c is not None else ""
    return text or str(e) or type(e).__name__


def retry_after(headers: Any) -> float | None:
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
