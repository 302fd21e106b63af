"""Before a campaign submits anything: does the endpoint answer, take the key, serve the model?

A wrong URL, a refused key or a model the endpoint does not serve is a :class:`UserError`
(exit 2) with the fix, before the first job is submitted. A slow or overloaded endpoint
(timeouts, 429, 5xx) is not: each generation retries, then falls back to TPE.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hpc_agent.errors import UserError
from hpc_agent.llm.config import LLMConfig
from hpc_agent.llm.render import listing
from hpc_agent.llm.transport import cause, status_message

PREFLIGHT_TIMEOUT_S = 30.0


def check_endpoint(api: Any, cfg: LLMConfig, rec: dict[str, Any]) -> LLMConfig:
    """Check the endpoint, the key and the model with ``api`` (an ``openai.OpenAI``).

    Returns ``cfg`` with the model to use (the endpoint's only model when none is configured).
    Fills ``rec`` (the preflight's log record: ok, served, note, error). Raises UserError when
    the endpoint cannot be reached, refuses the key, or does not serve the model."""
    import openai

    served: list[str] | None = None
    note = ""
    timeout = min(cfg.request_timeout_s, PREFLIGHT_TIMEOUT_S)
    rec.update(ok=False, served=None)
    try:
        page = api.models.list(timeout=timeout)
        served = sorted(str(m.id) for m in page.data)
    except openai.APITimeoutError:
        note = "GET /models timed out"
    except openai.APIConnectionError as e:
        rec["error"] = f"connection failed: {cause(e)}"
        raise UserError(
            f"cannot reach the LLM endpoint at {cfg.display_url} ({cause(e)})",
            fix="start the server or fix the URL (OPENAI_BASE_URL or [planner] base_url), "
            "or plan without an LLM: --planner tpe",
        ) from None
    except openai.APIStatusError as e:
        _raise_refusal(e, cfg, rec)
        if e.status_code != 404:  # 404: a server without /models; 429 and 5xx: busy
            note = f"GET /models answered HTTP {e.status_code}"
    except ValueError as e:  # a body that is not JSON (a proxy's HTML page?)
        note = f"GET /models answered something that is not JSON ({e})"
    rec["served"] = served
    model = cfg.model
    if not model:
        if not served or len(served) != 1:
            rec["error"] = "no model configured"
            shown = f"the endpoint serves: {listing(served)}" if served else "the endpoint lists no models"
            raise UserError(
                f"no LLM model configured for {cfg.display_url} ({shown})",
                fix='set HPC_AGENT_MODEL, or model = "..." in [planner] of campaign.toml',
            )
        cfg = replace(cfg, model=served[0], model_from="the endpoint's only model")
    elif served is None or model not in served:
        # not listed (or no list): a tiny request tells whether it is served after all
        _probe_model(api, cfg, rec, served, timeout)
    rec.update(ok=True, note=note)
    return cfg


def _probe_model(
    api: Any, cfg: LLMConfig, rec: dict[str, Any], served: list[str] | None, timeout: float
) -> None:
    import openai

    try:
        api.chat.completions.create(
            model=cfg.model,
            messages=[{"role": "user", "content": "Reply with the word OK."}],
            timeout=timeout,
        )
    except openai.APIStatusError as e:
        if e.status_code == 404:
            rec["error"] = f"model not served: {status_message(e)}"
            shown = f"available models are {listing(served)}" if served else "see the server's documentation"
            raise UserError(
                f"model {cfg.model!r} ({cfg.model_from}) is not served by {cfg.display_url}: {shown}",
                fix=f"set {cfg.model_from or 'HPC_AGENT_MODEL'} to a model the endpoint serves",
            ) from None
        _raise_refusal(e, cfg, rec)
    except (openai.APIConnectionError, ValueError):
        pass  # reachable a moment ago: a busy endpoint is the generations' problem


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
