"""hpc_agent.llm.config: where and how to ask; secrets never written."""

from __future__ import annotations

import pytest

from hpc_agent.config.spec import PlannerSection
from hpc_agent.errors import UserError
from hpc_agent.llm.config import LLMConfig, redact, redact_url, resolve_config, secrets_of, url_secrets


def test_planner_section_first_then_the_environment() -> None:
    env = {"OPENAI_BASE_URL": "http://env:1/v1/", "HPC_AGENT_MODEL": "env-model"}
    cfg = resolve_config(PlannerSection(), env)
    assert (cfg.base_url, cfg.model, cfg.model_from, cfg.base_url_from) == (
        "http://env:1/v1",
        "env-model",
        "HPC_AGENT_MODEL",
        "OPENAI_BASE_URL",
    )
    cfg = resolve_config(PlannerSection(base_url="https://mine/v1", model="mine"), env)
    assert (cfg.base_url, cfg.model, cfg.model_from, cfg.base_url_from) == (
        "https://mine/v1",
        "mine",
        "[planner] model",
        "[planner] base_url",
    )


def test_a_base_url_that_is_not_http_is_a_user_error() -> None:
    with pytest.raises(UserError) as e:
        resolve_config(PlannerSection(base_url="localhost:8000"), {})
    assert "'localhost:8000'" in str(e.value) and "expected an http(s) URL" in str(e.value)


def test_credentials_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact_url("http://bob:hunter22@host:8/v1") == "http://***@host:8/v1"
    assert redact_url("http://host/v1") == "http://host/v1"
    assert url_secrets("http://bob:hunter22@host/v1") == ["hunter22"]  # "bob" is too short
    monkeypatch.setenv("MY_KEY", "sk-0123456789")
    cfg = LLMConfig(base_url="http://alice:pw123456@h/v1", model="m", api_key_env="MY_KEY")
    assert secrets_of(cfg) == ["sk-0123456789", "pw123456", "alice"]
    assert redact('key sk-0123456789 and "a\\"b"', ["sk-0123456789", 'a"b']) == 'key *** and "***"'


def test_cost_is_per_million_tokens() -> None:
    cfg = LLMConfig(base_url="http://h", model="m", price_in_per_mtok=2.0, price_out_per_mtok=10.0)
    assert cfg.priced and cfg.cost(1_000_000, 100_000) == 3.0
    assert not LLMConfig(base_url="http://h", model="m").priced
