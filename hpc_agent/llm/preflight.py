"""Before a campaign submits anything: does the endpoint answer, take the key, serve the model?

A wrong URL, a refused key or a model the endpoint does not serve is a :class:`UserError`
(exit 2) with the fix, before the first job is submitted. A slow or overloaded endpoint
(timeouts, 429, 5xx) is not: each generation retries, then falls back to TPE.

The model is checked against ``GET /models``: a model the list does not name is refused
(servers such as llama-cpp-python answer *any* model name with the one they serve, so a chat
request proves nothing), unless ``[planner] check_model = false`` (a gateway whose list is
incomplete): then one tiny request tells whether it is served. A base URL without ``/v1``
answers 404 to both ``/models`` and the chat request: that is a URL problem, said as such.

Where the server publishes its context size, it is read here (vLLM's ``max_model_len`` in
``/models``; llama.cpp's ``/props`` ``n_ctx``, with ``meta.n_ctx_train`` of ``/models`` as an
upper bound) and the prompts are fitted to it from the first request on.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from hpc_agent.errors import UserError
from hpc_agent.llm.config import LLMConfig
from hpc_agent.llm.render import listing
from hpc_agent.llm.transport import cause, status_message

PREFLIGHT_TIMEOUT_S = 30.0
PROBE_MAX_TOKENS = 16  # the tiny request's reply (a word; room for a reasoning model's preamble)


def check_endpoint(api: Any, cfg: LLMConfig, rec: dict[str, Any]) -> LLMConfig:
    """Check the endpoint, the key and the model with ``api`` (an ``openai.OpenAI``).

    Returns ``cfg`` with the model to use (the endpoint's only model when none is configured).
    Fills ``rec`` (the preflight's log record: ok, served, note, error, context_limit). Raises
    UserError when the endpoint cannot be reached, is not an OpenAI-compatible API at this URL,
    refuses the key, or does not serve the model."""
    timeout = min(cfg.request_timeout_s, PREFLIGHT_TIMEOUT_S)
    rec.update(ok=False, served=None)
    entries, note = _list_models(api, cfg, rec, timeout)
    served = sorted(entries) if entries is not None else None
    rec["served"] = served
    model = cfg.model
    if not model:
        if not served or len(served) != 1:
            rec["error"] = "no model configured"
            shown = f"the endpoint serves: {listing(served)}" if served else "the endpoint lists no models"
            if note.endswith("HTTP 404"):
                shown += f"; GET {cfg.display_url}/models answered 404: {_v1_hint(cfg)}"
            raise UserError(
                f"no LLM model configured for {cfg.display_url} ({shown})",
                fix='set HPC_AGENT_MODEL, or model = "..." in [planner] of campaign.toml',
            )
        cfg = replace(cfg, model=served[0], model_from="the endpoint's only model")
    elif served and model not in served and cfg.check_model:
        rec["error"] = "model not in the endpoint's list"
        raise UserError(
            f"model {model!r} ({cfg.model_from}) is not served by {cfg.display_url}: "
            f"it serves {listing(served)}",
            fix=f"set {cfg.model_from or 'HPC_AGENT_MODEL'} to one of these; or, for a gateway whose "
            "list is incomplete, set check_model = false in [planner]",
        )
    elif not served or model not in served:
        # no list (or an incomplete one, by the user's word): a tiny request tells
        _probe_model(api, cfg, rec, served, timeout, no_models=note.endswith("HTTP 404"))
    limit, source = _context_of(api, cfg, (entries or {}).get(cfg.model), timeout)
    if limit:
        rec.update(context_limit=limit, context_limit_from=source)
    rec.update(ok=True, note=note)
    return cfg


def _list_models(
    api: Any, cfg: LLMConfig, rec: dict[str, Any], timeout: float
) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """``GET /models``: ({model id: its entry} or None when there is no list, a note)."""
    import openai

    try:
        page = api.models.list(timeout=timeout)
        return {str(m.id): _entry(m) for m in page.data}, ""
    except openai.APITimeoutError:
        return None, "GET /models timed out"
    except openai.APIConnectionError as e:
        rec["error"] = f"connection failed: {cause(e)}"
        raise UserError(
            f"cannot reach the LLM endpoint at {cfg.display_url} ({cause(e)})",
            fix="start the server or fix the URL (OPENAI_BASE_URL or [planner] base_url), "
            "or plan without an LLM: --planner tpe",
        ) from None
    except openai.APIStatusError as e:
        _raise_refusal(e, cfg, rec)
        # 404: no /models here (a server without one, or a URL without /v1); 429 and 5xx: busy
        return None, f"GET /models answered HTTP {e.status_code}"
    except ValueError as e:  # a body that is not JSON (a proxy's HTML page?)
        return None, f"GET /models answered something that is not JSON ({e})"


def _entry(m: Any) -> dict[str, Any]:
    dump = getattr(m, "model_dump", None)
    data = dump() if callable(dump) else {}
    return data if isinstance(data, dict) else {}


def _probe_model(
    api: Any, cfg: LLMConfig, rec: dict[str, Any], served: list[str] | None, timeout: float, no_models: bool
) -> None:
    import openai

    try:
        api.chat.completions.create(
            model=cfg.model,
            messages=[{"role": "user", "content": "Reply with the word OK."}],
            max_tokens=PROBE_MAX_TOKENS,
            timeout=timeout,
        )
    except openai.APIStatusError as e:
        if e.status_code == 404:
            msg = status_message(e)
            if no_models and cfg.model not in msg:
                rec["error"] = f"no OpenAI-compatible API at this URL: {msg}"
                raise UserError(
                    f"{cfg.display_url} is not an OpenAI-compatible API: GET /models and POST "
                    f"/chat/completions both answered HTTP 404 ({msg})",
                    fix=f"set {cfg.base_url_from} to the part of the URL before /chat/completions: "
                    f"{_v1_hint(cfg)}",
                ) from None
            rec["error"] = f"model not served: {msg}"
            shown = f"available models are {listing(served)}" if served else "see the server's documentation"
            raise UserError(
                f"model {cfg.model!r} ({cfg.model_from}) is not served by {cfg.display_url}: {shown}",
                fix=f"set {cfg.model_from or 'HPC_AGENT_MODEL'} to a model the endpoint serves",
            ) from None
        _raise_refusal(e, cfg, rec)
    except (openai.APIConnectionError, ValueError):
        pass  # reachable a moment ago: a busy endpoint is the generations' problem


def _v1_hint(cfg: LLMConfig) -> str:
    url = cfg.display_url.rstrip("/")
    if url.endswith("/v1"):
        return "it usually ends in /v1, as this one does: check the host, the port and the path"
    return f"it usually ends in /v1, e.g. {url}/v1"


_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length")


def _context_of(api: Any, cfg: LLMConfig, entry: Mapping[str, Any] | None, timeout: float) -> tuple[int, str]:
    """The server's context size for the model, where it publishes one: (tokens, where), or
    (0, "")."""
    entry = entry or {}
    for key in _CONTEXT_KEYS:  # vLLM, OpenRouter-style gateways, ...
        if isinstance(entry.get(key), int) and entry[key] > 0:
            return int(entry[key]), f"GET /models {key}"
    meta = entry.get("meta")
    if not isinstance(meta, Mapping) and entry.get("owned_by") != "llamacpp":
        return 0, ""
    limit, source = _llama_cpp_props(cfg, timeout)  # llama.cpp's server: the context it runs with
    trained = meta.get("n_ctx_train") if isinstance(meta, Mapping) else None
    if isinstance(trained, int) and trained > 0 and (not limit or trained < limit):
        return trained, "GET /models meta.n_ctx_train"
    return limit, source


def _llama_cpp_props(cfg: LLMConfig, timeout: float) -> tuple[int, str]:
    """``GET /props`` at the server's root (llama.cpp): ``default_generation_settings.n_ctx``."""
    root = cfg.base_url.rstrip("/").removesuffix("/v1")
    key = cfg.api_key()
    request = urllib.request.Request(
        f"{root}/props", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return 0, ""
    settings = data.get("default_generation_settings") if isinstance(data, Mapping) else None
    n_ctx = settings.get("n_ctx") if isinstance(settings, Mapping) else None
    if isinstance(n_ctx, int) and n_ctx > 0:
        return n_ctx, "GET /props default_generation_settings.n_ctx"
    return 0, ""


def wait_idle(api: Any, limit_s: float) -> float | None:
    """Seconds until the server answers ``GET /models`` (any answer, even an error), or None
    if it does not within ``limit_s``. llama.cpp-based servers answer it only once the
    generation in progress is over, so this tells when a timed-out request has ended."""
    import openai

    t0 = time.monotonic()
    try:
        api.models.list(timeout=limit_s)
    except openai.APITimeoutError:
        return None
    except (openai.APIError, ValueError):
        pass  # answered (an error, or no /models at all): not busy with us
    return time.monotonic() - t0


def _raise_refusal(e: Any, cfg: LLMConfig, rec: dict[str, Any]) -> None:
    """A 401/403 is a UserError naming the key's variable; other statuses return."""
    status = e.status_code
    if status not in (401, 403):
        return
    rec["error"] = f"HTTP {status}: {status_message(e)}"
    var = cfg.api_key_env
    has_key = bool(cfg.api_key())
    what = "refused the API key" if status == 401 else "forbids this key"
    state = f"${var} is set" if has_key else f"${var} is not set"
    raise UserError(
        f"the LLM endpoint {cfg.display_url} {what} (HTTP {status}: {status_message(e)}; {state})",
        fix=f"set {var} to a valid key for this endpoint"
        + (" (or [planner] api_key_env to the variable that holds it)" if not has_key else "")
        + ", or plan without an LLM: --planner tpe",
    ) from None
