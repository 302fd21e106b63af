"""hpc_agent.llm.preflight: the endpoint, the key and the model checked before anything is
submitted, against the scripted server over real HTTP."""

from __future__ import annotations

import openai
import pytest

from hpc_agent.errors import UserError
from hpc_agent.llm.config import LLMConfig
from hpc_agent.llm.preflight import check_endpoint
from hpc_agent.testing.fake_llm import FakeLLM


def check(fake: FakeLLM, model: str, key: str = "k") -> tuple[LLMConfig, dict]:
    api = openai.OpenAI(api_key=key, base_url=fake.base_url, max_retries=0, timeout=5)
    rec: dict = {}
    cfg = check_endpoint(
        api, LLMConfig(base_url=fake.base_url, model=model, model_from="[planner] model"), rec
    )
    return cfg, rec


def test_the_only_model_is_taken_when_none_is_configured() -> None:
    with FakeLLM(models=["only-one"], model_meta={"max_model_len": 4096}) as fake:
        cfg, rec = check(fake, "")
    assert (cfg.model, cfg.model_from) == ("only-one", "the endpoint's only model")
    assert rec["ok"] is True and rec["served"] == ["only-one"] and rec["context_limit"] == 4096


def test_a_model_not_served_is_a_user_error_naming_what_is() -> None:
    with FakeLLM(models=["a", "b"]) as fake:
        with pytest.raises(UserError) as e:
            check(fake, "c")
    assert "model 'c' ([planner] model) is not served" in str(e.value) and "it serves a, b" in str(e.value)
    assert "check_model = false" in (e.value.fix or "")


def test_no_model_among_several_is_a_user_error() -> None:
    with FakeLLM(models=["a", "b"]) as fake:
        with pytest.raises(UserError, match="no LLM model configured"):
            check(fake, "")


def test_a_wrong_key_is_refused() -> None:
    with FakeLLM(api_key="right") as fake:
        with pytest.raises(UserError) as e:
            check(fake, "fake-model", key="wrong")
    assert "refused the API key (HTTP 401" in str(e.value) and "--planner tpe" in (e.value.fix or "")
