"""hpc_agent.llm: parsing, negotiation, retries, preflight, the exchange log.

Every test talks to the scripted server over real HTTP with the real openai client."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import hpc_agent.llm as llm
import hpc_agent.llm.transport as transport
from hpc_agent.errors import UserError
from hpc_agent.llm import LLMClient, LLMConfig, LLMUnavailable, format_log, parse_json_reply, resolve_config
from hpc_agent.spec import PlannerSection
from hpc_agent.testing import FakeLLM

KEY = "sk-test-SECRET-5f1c0a"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
HELLO = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setenv("TEST_LLM_KEY", KEY)


def config(fake: FakeLLM | str, **kw: Any) -> LLMConfig:
    url = fake if isinstance(fake, str) else fake.base_url
    base = LLMConfig(base_url=url, model="fake-model", api_key_env="TEST_LLM_KEY", max_retries=3)
    return replace(base, **kw)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, s: float) -> None:
        self.waits.append(s)


def make(fake: FakeLLM, log: Path | None = None, **kw: Any) -> tuple[LLMClient, Sleeps]:
    c = LLMClient(config(fake, **kw), log)
    sleeps = Sleeps()
    c.sleep = sleeps
    return c, sleeps


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# ------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Here you go:\n```json\n{"a": 1}\n```\nCheers', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Sure! {"a": {"b": "}"}} and that is all', {"a": {"b": "}"}}),
        ('{"text": "line one\nline two\ttabbed \x01"}', {"text": "line one\nline two\ttabbed \x01"}),
        ('{"text": "a \\_ b \\d"}', {"text": "a \\_ b \\d"}),
        ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}),
        ('<think>the {user} wants JSON</think>\n{"a": 2}', {"a": 2}),
        ('\ufeff{"a": 1}', {"a": 1}),
        ('[{"params": {}}]', [{"params": {}}]),
    ],
)
def test_parse_json_reply_tolerates(text: str, expected: Any) -> None:
    value, err = parse_json_reply(text)
    assert err == ""
    assert value == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I cannot help with that.", "not valid JSON"),
        ('{"a": ', "not valid JSON"),
    ],
)
def test_parse_json_reply_says_why(text: str, why: str) -> None:
    value, err = parse_json_reply(text)
    assert value is None
    assert why in err


# ------------------------------------------------------------------------------- configuration


def test_resolve_config_spec_first_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OPENAI_BASE_URL": "http://env:8000/v1/", "HPC_AGENT_MODEL": "env-model"}
    cfg = resolve_config(PlannerSection(), env)
    assert (cfg.base_url, cfg.model, cfg.model_from) == ("http://env:8000/v1", "env-model", "HPC_AGENT_MODEL")
    cfg = resolve_config(PlannerSection(base_url="http://spec/v1", model="m"), env)
    assert (cfg.base_url, cfg.model, cfg.model_from) == ("http://spec/v1", "m", "[planner] model")
    assert resolve_config(PlannerSection(), {}).base_url == llm.DEFAULT_BASE_URL
    with pytest.raises(UserError, match="OPENAI_BASE_URL = 'localhost:8000'"):
        resolve_config(PlannerSection(), {"OPENAI_BASE_URL": "localhost:8000"})
    assert KEY not in repr(resolve_config(PlannerSection(api_key_env="TEST_LLM_KEY"), {}))
    assert config("http://user:pw-secret@host/v1").display_url == "http://***@host/v1"


# ------------------------------------------------------------------------------- completion


def test_complete_logs_the_exchange(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    with FakeLLM([{"json": {"a": 1}, "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}]) as fake:
        c, _ = make(fake, log, price_in_per_mtok=2.0, price_out_per_mtok=10.0)
        reply = c.complete(
            HELLO, schema=SCHEMA, purpose="propose", generation=3, check=lambda r: {"seen": r.data}
        )
    assert reply.data == {"a": 1}
    assert (reply.tokens_in, reply.tokens_out, reply.mode) == (1000, 500, "json_schema")
    req = fake.chat_requests[0]
    assert req.response_format == "json_schema"
    assert req.body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert req.headers["authorization"] == f"Bearer {KEY}"
    (rec,) = records(log)
    assert rec["purpose"] == "propose" and rec["generation"] == 3 and rec["round_trip"] is True
    assert rec["messages"] == HELLO
    assert rec["reply"] == '{"a": 1}'
    assert rec["seen"] == {"a": 1}
    assert rec["cost"] == pytest.approx(1000 * 2e-6 + 500 * 10e-6)
    assert rec["response_format"] == "json_schema" and rec["mode_ok"] is True
    assert rec["attempts"] == 1 and rec["error"] is None


def test_negotiates_json_object_and_remembers_it(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    with FakeLLM([{"json": {"a": 1}}, {"json": {"a": 2}}], accept=("json_object", "text")) as fake:
        c, _ = make(fake, log)
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0).data == {"a": 1}
        assert [r.answered for r in fake.chat_requests] == ["refused: response_format json_schema", "step 0"]
        # a restarted driver reads what worked from llm.jsonl: no renegotiation
        c2, _ = make(fake, log)
        assert c2.mode == "json_object"
        assert c2.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1).data == {"a": 2}
    assert [r.response_format for r in fake.chat_requests] == ["json_schema", "json_object", "json_object"]
    first, second = records(log)
    assert first["negotiation"][0]["response_format"] == "json_schema"
    assert "not supported" in first["negotiation"][0]["rejected"]
    assert first["response_format"] == "json_object" and second["negotiation"] is None
    # another model on the same endpoint negotiates afresh
    other = LLMClient(config(fake, model="other-model"), log)
    assert other.mode == "json_schema"


def test_falls_back_to_text_with_a_fenced_block(tmp_path: Path) -> None:
    with FakeLLM(['Here it is:\n```json\n{"a": 3}\n```'], accept=("text",)) as fake:
        c, _ = make(fake, tmp_path / "llm.jsonl")
        reply = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert reply.data == {"a": 3} and reply.mode == "text"
    assert [r.response_format for r in fake.chat_requests] == ["json_schema", "json_object", "text"]


def test_pinned_structured_output_is_not_negotiated(tmp_path: Path) -> None:
    with FakeLLM(["{}"], accept=("json_object", "text")) as fake:
        c, _ = make(fake, tmp_path / "llm.jsonl", structured_output="json_schema")
        with pytest.raises(LLMUnavailable, match="response_format json_schema rejected"):
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        c, _ = make(fake, tmp_path / "llm2.jsonl", structured_output="text")
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert [r.response_format for r in fake.chat_requests] == ["json_schema", "text"]


def test_429_then_success_honours_retry_after(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    script = [{"status": 429, "headers": {"Retry-After": "0.3"}}, {"status": 503}, {"json": {"a": 1}}]
    with FakeLLM(script) as fake:
        c, sleeps = make(fake, log)
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0).data == {"a": 1}
    assert sleeps.waits[0] == pytest.approx(0.3)  # what the server asked for
    assert 0.008 <= sleeps.waits[1] <= 0.03  # exponential backoff: BACKOFF_BASE_S x 2^1, jittered
    (rec,) = records(log)
    assert rec["attempts"] == 3
    assert [r["error"].split(":")[0] for r in rec["retries"]] == ["HTTP 429", "HTTP 503"]


def test_retry_after_as_http_date_and_ms() -> None:
    from email.utils import formatdate

    assert transport.retry_after({"retry-after-ms": "1500"}) == 1.5
    assert (
        5 <= (transport.retry_after({"retry-after": formatdate(__import__("time").time() + 10)}) or 0) <= 10
    )
    assert transport.retry_after({"retry-after": "soon"}) is None
    assert transport.retry_after({}) is None


def test_transport_faults_are_retried(tmp_path: Path) -> None:
    script = [
        {"fault": "close"},
        {"fault": "malformed"},
        {"delay_s": 1.0, "reply": "late"},
        {"json": {"a": 1}},
    ]
    with FakeLLM(script) as fake:
        c, sleeps = make(fake, tmp_path / "llm.jsonl", request_timeout_s=0.3)
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0).data == {"a": 1}
    errors = [r["error"] for r in records(tmp_path / "llm.jsonl")[0]["retries"]]
    assert errors[0].startswith("connection failed")
    assert errors[1].startswith("malformed response body")
    assert errors[2].startswith("timed out after 0.3 s")
    assert len(sleeps.waits) == 3


def test_500_forever_gives_up_after_max_retries(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    with FakeLLM([{"status": 500, "forever": True}]) as fake:
        c, sleeps = make(fake, log, max_retries=2)
        with pytest.raises(LLMUnavailable, match=r"HTTP 500.*after 3 attempt"):
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=4)
    assert len(fake.chat_requests) == 3
    assert len(sleeps.waits) == 2 and sleeps.waits[1] > sleeps.waits[0]
    (rec,) = records(log)
    assert rec["error"].startswith("HTTP 500") and rec["attempts"] == 3 and rec["reply"] is None


def test_a_plain_bad_request_is_not_retried(tmp_path: Path) -> None:
    with FakeLLM([{"status": 400, "body": {"error": {"message": "context length exceeded"}}}]) as fake:
        c, sleeps = make(fake, tmp_path / "llm.jsonl")
        with pytest.raises(LLMUnavailable, match="HTTP 400: context length exceeded") as e:
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert e.value.status == 400 and sleeps.waits == []


def test_empty_and_unreadable_replies_are_data_not_errors(tmp_path: Path) -> None:
    with FakeLLM(["", "no json here", {"fault": "no_choices"}]) as fake:
        c, _ = make(fake, tmp_path / "llm.jsonl")
        empty = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        prose = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        nothing = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert (empty.data, empty.parse_error) == (None, "the reply is empty")
    assert prose.data is None and "not valid JSON" in prose.parse_error
    assert nothing.text == "" and nothing.finish_reason == "no choices in the response"


def test_the_key_never_reaches_the_log(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    leak = {"status": 400, "body": {"error": {"message": f"Incorrect API key provided: {KEY}"}}}
    with FakeLLM([{"reply": f'{{"echo": "{KEY}"}}'}, leak]) as fake:
        c, _ = make(fake, log)
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        with pytest.raises(LLMUnavailable) as e:
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert KEY not in e.value.message  # it becomes a Plan.note, journaled
    text = log.read_text()
    assert KEY not in text
    assert "Incorrect API key provided: ***" in text


def test_a_rejected_temperature_is_dropped(tmp_path: Path) -> None:
    refuse = {
        "status": 400,
        "body": {"error": {"message": "Unsupported value: 'temperature' does not support 0.7"}},
    }
    with FakeLLM([refuse, {"json": {"a": 1}}, {"json": {"a": 2}}]) as fake:
        c, sleeps = make(fake, tmp_path / "llm.jsonl")
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0).data == {"a": 1}
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1)
    assert ["temperature" in r.body for r in fake.chat_requests] == [True, False, False]
    assert sleeps.waits == []
    rec = records(tmp_path / "llm.jsonl")[0]
    assert rec["negotiation"] == [
        {"temperature": 0.7, "rejected": refuse["body"]["error"]["message"].join(["HTTP 400: ", ""])}
    ]
    assert "temperature 0.7 rejected: HTTP 400: Unsupported value" in format_log(tmp_path)


def test_reasoning_and_truncation_are_recorded(tmp_path: Path) -> None:
    script = [
        {"reply": '{"a": 1}', "reasoning_content": "thinking hard"},
        {"reply": '{"a": ', "finish_reason": "length"},
    ]
    with FakeLLM(script) as fake:
        c, _ = make(fake, tmp_path / "llm.jsonl")
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0).reasoning == "thinking hard"
        cut = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert cut.finish_reason == "length" and cut.data is None
    assert records(tmp_path / "llm.jsonl")[0]["reasoning"] == "thinking hard"


# ------------------------------------------------------------------------------- preflight


def test_preflight_ok_and_recorded_once_the_log_is_known(tmp_path: Path) -> None:
    with FakeLLM([], api_key=KEY) as fake:
        c, _ = make(fake)
        assert c.preflight() == "fake-model"
        c.set_log(tmp_path / "llm.jsonl")
    (rec,) = records(tmp_path / "llm.jsonl")
    assert rec["purpose"] == "preflight" and rec["ok"] is True and rec["served"] == ["fake-model"]
    assert rec["round_trip"] is False


def test_preflight_connection_refused() -> None:
    c = LLMClient(config(f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(UserError) as e:
        c.preflight()
    assert "cannot reach the LLM endpoint at http://127.0.0.1:" in e.value.message
    assert "--planner tpe" in (e.value.fix or "")


def test_preflight_refused_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeLLM([], api_key="sk-the-right-one") as fake:
        with pytest.raises(UserError) as e:
            LLMClient(config(fake)).preflight()
        assert (
            "refused the API key (HTTP 401" in e.value.message and "$TEST_LLM_KEY is set" in e.value.message
        )
        assert "set TEST_LLM_KEY to a valid key" in (e.value.fix or "")
        monkeypatch.delenv("TEST_LLM_KEY")
        with pytest.raises(UserError, match=r"\$TEST_LLM_KEY is not set"):
            LLMClient(config(fake)).preflight()
    assert KEY not in str(e.value.render())


def test_preflight_model_not_served() -> None:
    with FakeLLM([], models=["llama-3-8b", "qwen-7b"]) as fake:
        c = LLMClient(config(fake, model="gpt-5", model_from="HPC_AGENT_MODEL"))
        with pytest.raises(UserError) as e:
            c.preflight()
    assert "model 'gpt-5' (HPC_AGENT_MODEL) is not served" in e.value.message
    assert "available models are llama-3-8b, qwen-7b" in e.value.message
    assert "set HPC_AGENT_MODEL" in (e.value.fix or "")
    # the model is not listed, so a tiny request checked it: the answer was 404
    assert [r.answered for r in fake.requests] == ["models", "refused: model"]


def test_preflight_picks_the_only_model_or_asks() -> None:
    with FakeLLM([], models=["only-one"]) as fake:
        c = LLMClient(config(fake, model=""))
        assert c.preflight() == "only-one"
        assert c.config.model == "only-one"
    with FakeLLM([], models=["a", "b"]) as fake, pytest.raises(UserError, match="serves: a, b"):
        LLMClient(config(fake, model="")).preflight()


def test_preflight_accepts_a_served_but_unlisted_model() -> None:
    with FakeLLM(["OK"], unlisted=["alias-of-fake"]) as fake:
        assert LLMClient(config(fake, model="alias-of-fake")).preflight() == "alias-of-fake"
    assert [r.answered for r in fake.requests] == ["models", "step 0"]


# ------------------------------------------------------------------------------- hpc-agent logs


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "llm.jsonl"
    script = [
        {"json": {"a": 1}, "usage": {"prompt_tokens": 1200, "completion_tokens": 300}},
        {"status": 500, "forever": True},
    ]
    with FakeLLM(script) as fake:
        c, _ = make(fake, log, max_retries=1, price_in_per_mtok=1.0, price_out_per_mtok=4.0)
        c.preflight()
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0, check=lambda r: {"proposals": []})
        with pytest.raises(LLMUnavailable):
            c.complete(HELLO, schema=SCHEMA, purpose="analyze", generation=1)
    with open(log, "a") as f:
        f.write('{"torn": ')  # a driver killed mid-write
    yield tmp_path


def test_format_log_summary_and_totals(logged: Path) -> None:
    text = format_log(logged)
    assert "gen 0 · propose · fake-model · json_schema · 1,200→300 tokens" in text
    assert "gen 1 · analyze" in text and "ERROR: HTTP 500" in text
    assert "attempt 1 failed: HTTP 500" in text
    assert "total: 2 round trip(s) (1 analyze, 1 propose), 1 failed, 1 transport retry" in text
    assert "tokens in 1,200, out 300; cost ~0.0024" in text
    assert "--- user ---" not in text
    full = format_log(logged, full=True)
    assert "--- user ---\n  hello" in full and '--- reply ---\n  {"a": 1}' in full


def test_format_log_filters_and_json(logged: Path) -> None:
    only = format_log(logged, generation=1)
    assert "gen 1 · analyze" in only and "gen 0" not in only
    lines = format_log(logged, generation=0, as_json=True).splitlines()
    assert [json.loads(x)["purpose"] for x in lines] == ["propose"]
    assert "no LLM exchanges for generation 7" in format_log(logged, generation=7)
    assert "no LLM exchanges in" in format_log(logged / "nowhere")
