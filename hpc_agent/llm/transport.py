"""One chat request, with transport retries, and what an HTTP error means.

Retried with exponential backoff (``BACKOFF_BASE_S`` x 2^n, jittered), honouring
``Retry-After``: 429, 5xx, 408/409, timeouts, dropped connections and malformed bodies, at most
``[planner] max_retries`` times. The ``openai`` client's own retries are off, so the log shows
every attempt. A refusal of the ``response_format`` or of the temperature is not retried: it is
raised for the client to negotiate (:class:`FormatRejected`, :class:`TemperatureRejected`).
When the retries are spent, or the server refuses the request, :class:`LLMUnavailable`.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

BACKOFF_BASE_S = 1.0  # first transport retry waits about this long, then x2 each time
BACKOFF_MAX_S = 60.0
RETRY_AFTER_MAX_S = 300.0  # a server asking for longer is waited on this long at most
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured", "schema", "grammar", "guided")
_RETRY_STATUSES = (408, 409, 429)


class LLMUnavailable(Exception):
    """The endpoint did not answer usefully: retries spent, or a refusal (401/403/404 ...).
    Not a user error in the middle of a campaign: the planner falls back to TPE.
    ``message`` says what happened; ``status`` is the last HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class FormatRejected(Exception):
    """The server refused the ``response_format`` sent: ask again with the next mode."""


class TemperatureRejected(Exception):
    """Reasoning models take only their default temperature: ask again without one."""


def send_with_retries(
    create: Callable[[], Any],
    *,
    mode: str,
    sends_temperature: bool,
    max_retries: int,
    timeout_s: float,
    sleep: Callable[[float], None],
    retries: list[dict[str, Any]],
) -> tuple[Any, float]:
    """``create()`` (one request) until it answers: (the response, its latency in seconds).

    Every failed attempt is appended to ``retries`` (attempt, error, wait_s). Raises
    FormatRejected / TemperatureRejected for the caller to negotiate, LLMUnavailable when the
    server refuses the request or the retries are spent."""
    import openai

    attempts = 1 + max(0, max_retries)
    last = ""
    for attempt in range(attempts):
        t0 = time.monotonic()
        wait: float | None = None
        try:
            return create(), time.monotonic() - t0
        except openai.APIStatusError as e:
            status = e.status_code
            msg = status_message(e)
            if mode != "text" and status in (400, 415, 422, 501) and mentions_format(msg):
                raise FormatRejected(f"HTTP {status}: {msg}") from None
            if status in (400, 422) and "temperature" in msg.lower() and sends_temperature:
                raise TemperatureRejected(f"HTTP {status}: {msg}") from None
            if status not in _RETRY_STATUSES and status < 500:
                retries.append({"attempt": attempt + 1, "error": f"HTTP {status}: {msg}", "wait_s": None})
                raise LLMUnavailable(f"HTTP {status}: {msg}", status) from None
            last = f"HTTP {status}: {msg}"
            wait = retry_after(e.response.headers)
        except openai.APITimeoutError:
            last = f"timed out after {timeout_s:g} s"
        except openai.APIConnectionError as e:
            last = f"connection failed: {cause(e)}"
        except ValueError as e:  # HTTP 200 whose body is not JSON
            last = f"malformed response body: {e}"
        if attempt + 1 >= attempts:
            retries.append({"attempt": attempt + 1, "error": last, "wait_s": None})
            break
        if wait is None:
            wait = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.8, 1.2)
        wait = min(wait, RETRY_AFTER_MAX_S)
        retries.append({"attempt": attempt + 1, "error": last, "wait_s": round(wait, 3)})
        sleep(wait)
    raise LLMUnavailable(f"{last} (after {attempts} attempt(s))")


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
