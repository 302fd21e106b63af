"""The OpenAI-compatible client: structured output, retries, preflight, and the exchange log.

Any server that speaks ``/v1/chat/completions`` will do (OpenAI, vLLM, Ollama, llama.cpp's
server, a university gateway). What differs between them is handled here, once, one concern a
module:

* :mod:`~hpc_agent.llm.config`: where and how to ask (:func:`resolve_config`: ``[planner]``
  first, then ``$OPENAI_BASE_URL`` / ``$HPC_AGENT_MODEL``); the key is read from the variable
  named by ``[planner] api_key_env`` when a request is made and never written anywhere
  (:func:`redact`).
* :mod:`~hpc_agent.llm.tokens`: the prompt-size estimate the planner fits prompts with.
* :mod:`~hpc_agent.llm.parsing`: the JSON a reply carries (:func:`parse_json_reply`).
* :mod:`~hpc_agent.llm.transport`: one request with retries; what an HTTP error means.
* :mod:`~hpc_agent.llm.preflight`: the endpoint, key and model checked before anything is
  submitted (a :class:`~hpc_agent.errors.UserError`, exit 2, with the fix).
* :mod:`~hpc_agent.llm.client`: :class:`LLMClient`, the negotiation of structured output and
  the round trip, logged.
* :mod:`~hpc_agent.llm.log` and :mod:`~hpc_agent.llm.render`: ``llm.jsonl`` and
  ``hpc-agent logs``.

``openai`` is imported on the first request, so a campaign planned by TPE never loads it.

It may import :mod:`hpc_agent.errors` and the configuration's types only: it knows nothing of
campaigns, so that any planner or tool can use it.
"""

from __future__ import annotations

from hpc_agent.llm.client import LLMClient, Reply
from hpc_agent.llm.config import DEFAULT_BASE_URL, LLMConfig, redact, redact_url, resolve_config
from hpc_agent.llm.log import LOG_NAME, LOG_VERSION, MODES, ExchangeLog, Memory, read_log
from hpc_agent.llm.parsing import parse_json_reply
from hpc_agent.llm.render import format_log
from hpc_agent.llm.tokens import estimate_tokens, messages_tokens
from hpc_agent.llm.transport import ContextExceeded, LLMUnavailable

__all__ = [
    "DEFAULT_BASE_URL",
    "LOG_NAME",
    "LOG_VERSION",
    "MODES",
    "ContextExceeded",
    "ExchangeLog",
    "LLMClient",
    "LLMConfig",
    "LLMUnavailable",
    "Memory",
    "Reply",
    "estimate_tokens",
    "format_log",
    "messages_tokens",
    "parse_json_reply",
    "read_log",
    "redact",
    "redact_url",
    "resolve_config",
]
