"""Where and how to ask: the endpoint's configuration, and keeping its secrets out of writing.

:func:`resolve_config` reads ``[planner] base_url`` / ``model`` from the spec, else
``$OPENAI_BASE_URL`` / ``$HPC_AGENT_MODEL``. The API key is read from the variable named by
``[planner] api_key_env`` when a request is made, and kept nowhere else: :func:`redact` takes it
(and a ``user:password@`` part of the URL) out of anything written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from hpc_agent.errors import UserError

if TYPE_CHECKING:
    from hpc_agent.config.spec import PlannerSection

DEFAULT_BASE_URL = "https://api.openai.com/v1"


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
    max_tokens: int = 0  # 0: each request sized by its caller
    check_model: bool = True  # False: a model the endpoint does not list is probed, not refused
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    model_from: str = ""  # where the model came from, for messages
    base_url_from: str = "OPENAI_BASE_URL"  # where the base URL came from, for messages

    def api_key(self) -> str:
        """The key, read from the environment now (never stored)."""
        return os.environ.get(self.api_key_env, "")

    @property
    def display_url(self) -> str:
        """The base URL without a user:password part (it may hold a credential)."""
        return redact_url(self.base_url)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """The estimated cost of a round trip, in the currency of the ``price_*`` settings."""
        return (tokens_in * self.price_in_per_mtok + tokens_out * self.price_out_per_mtok) / 1e6

    @property
    def priced(self) -> bool:
        """Whether a price was configured (else costs are shown as n/a)."""
        return bool(self.price_in_per_mtok or self.price_out_per_mtok)


def resolve_config(planner: PlannerSection, environ: Mapping[str, str] | None = None) -> LLMConfig:
    """[planner] values first, then the environment (OPENAI_BASE_URL, HPC_AGENT_MODEL).

    Raises UserError when the base URL is not an http(s) URL."""
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
        max_tokens=planner.max_tokens,
        check_model=planner.check_model,
        price_in_per_mtok=planner.price_in_per_mtok,
        price_out_per_mtok=planner.price_out_per_mtok,
        model_from=model_from if model else "",
        base_url_from=where,
    )


def redact_url(url: str) -> str:
    """``url`` with a ``user:password@`` part replaced by ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def url_secrets(url: str) -> list[str]:
    """The user name and password a URL carries (those of 4 characters or more)."""
    parts = urlsplit(url)
    return [s for s in (parts.password, parts.username) if s and len(s) >= 4]


def secrets_of(config: LLMConfig) -> list[str]:
    """Everything of ``config`` that must never be written: the key and the URL's credentials."""
    key = config.api_key()
    return ([key] if len(key) >= 8 else []) + url_secrets(config.base_url)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret (and its JSON-escaped form) replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
            escaped = json.dumps(s)[1:-1]
            if escaped != s:
                text = text.replace(escaped, "***")
    return text
