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
import hpc_agent.llm.preflight as preflight
import hpc_agent.llm.transport as transport
from hpc_agent.config.spec import PlannerSection
from hpc_agent.errors import UserError
from hpc_agent.llm import LLMClient, LLMConfig, LLMUnavailable, format_log, parse_json_reply, resolve_config
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
        assert [r.answered for r in fake.chat_requests] == [
            "refused: response_format json_schema",
            "refused: response_format json_object+schema",
            "step 0",
        ]
        # a restarted driver reads what worked from llm.jsonl: no renegotiation
        c2, _ = make(fake, log)
        assert c2.mode == "json_object"
        assert c2.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1).data == {"a": 2}
    assert [r.response_format for r in fake.chat_requests] == [
        "json_schema",
        "json_object+schema",
        "json_object",
        "json_object",
    ]
    assert fake.chat_requests[-1].body["response_format"] == {"type": "json_object"}
    first, second = records(log)
    assert [n["response_format"] for n in first["negotiation"]] == ["json_schema", "json_object+schema"]
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
    assert [r.response_format for r in fake.chat_requests] == [
        "json_schema",
        "json_object+schema",
        "json_object",
        "text",
    ]


def test_pinned_structured_output_is_not_negotiated(tmp_path: Path) -> None:
    with FakeLLM(["{}"], accept=("json_object", "text")) as fake:
        c, _ = make(fake, tmp_path / "llm.jsonl", structured_output="json_schema")
        with pytest.raises(LLMUnavailable, match="the server refused response_format json_schema"):
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        c, _ = make(fake, tmp_path / "llm2.jsonl", structured_output="text")
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        # json_object pinned: llama.cpp's form first, then the plain one (both are json_object)
        fake.accept = ("json_object",)
        fake.add("{}")
        c, _ = make(fake, tmp_path / "llm3.jsonl", structured_output="json_object")
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
    assert [r.response_format for r in fake.chat_requests] == [
        "json_schema",
        "text",
        "json_object+schema",
        "json_object",
    ]


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
    assert errors[2].startswith("no reply within 0.3 s")
    assert len(sleeps.waits) == 2  # after the timeout: no backoff, a check that the server is idle


def test_500_forever_gives_up_after_max_retries(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    with FakeLLM([{"status": 500, "forever": True}]) as fake:
        c, sleeps = make(fake, log, max_retries=2)
        with pytest.raises(LLMUnavailable, match=r"the server failed \(HTTP 500.*\(3 attempt"):
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=4)
    assert len(fake.chat_requests) == 3
    assert len(sleeps.waits) == 2 and sleeps.waits[1] > sleeps.waits[0]
    (rec,) = records(log)
    assert rec["error"].startswith("the server failed (HTTP 500") and rec["attempts"] == 3
    assert rec["reply"] is None


def test_a_plain_bad_request_is_not_retried(tmp_path: Path) -> None:
    with FakeLLM([{"status": 400, "body": {"error": {"message": "bad value for top_p"}}}]) as fake:
        c, sleeps = make(fake, tmp_path / "llm.jsonl")
        with pytest.raises(LLMUnavailable, match=r"the server refused the request \(HTTP 400: bad") as e:
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
    assert "it serves llama-3-8b, qwen-7b" in e.value.message
    assert "set HPC_AGENT_MODEL to one of these" in (e.value.fix or "")
    assert "check_model = false" in (e.value.fix or "")
    # the list is the answer: no chat request (a server may answer any model name with its own)
    assert [r.answered for r in fake.requests] == ["models"]


def test_preflight_picks_the_only_model_or_asks() -> None:
    with FakeLLM([], models=["only-one"]) as fake:
        c = LLMClient(config(fake, model=""))
        assert c.preflight() == "only-one"
        assert c.config.model == "only-one"
    with FakeLLM([], models=["a", "b"]) as fake, pytest.raises(UserError, match="serves: a, b"):
        LLMClient(config(fake, model="")).preflight()


def test_preflight_check_model_false_probes_an_unlisted_model() -> None:
    with FakeLLM(["OK"], unlisted=["alias-of-fake"]) as fake:
        with pytest.raises(UserError, match="not served"):
            LLMClient(config(fake, model="alias-of-fake")).preflight()
        assert (
            LLMClient(config(fake, model="alias-of-fake", check_model=False)).preflight() == "alias-of-fake"
        )
        with pytest.raises(UserError, match=r"model 'nope' .* is not served"):
            LLMClient(config(fake, model="nope", check_model=False)).preflight()
    assert [r.answered for r in fake.requests] == ["models", "models", "step 0", "models", "refused: model"]
    assert fake.chat_requests[0].body["max_tokens"] == preflight.PROBE_MAX_TOKENS


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
    assert "gen 1 · analyze" in text and "ERROR: the server failed (HTTP 500" in text
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


# ------------------------------------------------------------------------------- what servers do


def test_a_refused_mode_is_remembered_even_when_the_next_one_fails(tmp_path: Path) -> None:
    """The refusal of json_schema (HTTP 500, as llama-cpp-python answers it) is not asked again
    in the next round trip, nor by a restarted driver, even though no mode has worked yet."""
    log = tmp_path / "llm.jsonl"
    script = [{"status": 503}, {"json": {"a": 1}}]
    with FakeLLM(script, accept=("json_object+schema", "text"), refuse_status=500) as fake:
        c, _ = make(fake, log, max_retries=0)
        with pytest.raises(LLMUnavailable, match="the server failed"):
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        c2, _ = make(fake, log)  # a restarted driver
        assert c2.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1).data == {"a": 1}
    assert [r.response_format for r in fake.chat_requests] == [
        "json_schema",
        "json_object+schema",
        "json_object+schema",
    ]
    assert fake.chat_requests[2].body["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_max_tokens_on_every_request_and_max_completion_tokens_when_refused(tmp_path: Path) -> None:
    refuse = {
        "status": 400,
        "body": {
            "error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            }
        },
    }
    log = tmp_path / "llm.jsonl"
    with FakeLLM(["{}", refuse, "{}", "{}"]) as fake:
        c, sleeps = make(fake, log)
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0, max_tokens=300)
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1, max_tokens=500)
        c2, _ = make(fake, log, max_tokens=64)  # [planner] max_tokens fixes it; restarted: remembered
        c2.complete(HELLO, schema=SCHEMA, purpose="propose", generation=2, max_tokens=500)
    bodies = [r.body for r in fake.chat_requests]
    assert [b.get("max_tokens") for b in bodies] == [300, 500, None, None]
    assert [b.get("max_completion_tokens") for b in bodies] == [None, None, 500, 64]
    assert sleeps.waits == []
    assert "max_tokens 500 rejected: HTTP 400: Unsupported parameter" in format_log(tmp_path)


@pytest.mark.parametrize(
    ("body", "limit", "prompt"),
    [
        (  # OpenAI, vLLM, llama-cpp-python
            {
                "error": {
                    "message": "This model's maximum context length is 4096 tokens. However, you requested "
                    "5036 tokens (5031 in the messages, 5 in the completion). Please reduce the length of "
                    "the messages or completion.",
                    "code": "context_length_exceeded",
                }
            },
            4096,
            5031,
        ),
        (  # llama.cpp's server
            {
                "error": {
                    "code": 400,
                    "message": "request (13392 tokens) exceeds the available context size (8192 tokens), "
                    "try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 13392,
                    "n_ctx": 8192,
                }
            },
            8192,
            13392,
        ),
        ({"error": {"message": "the context length of only 2048 tokens is not enough"}}, 2048, None),
        ({"error": {"message": "Prompt is too long for the context window"}}, None, None),
    ],
)
def test_a_prompt_over_the_context_is_learned(
    tmp_path: Path, body: dict[str, Any], limit: int | None, prompt: int | None
) -> None:
    log = tmp_path / "llm.jsonl"
    with FakeLLM([{"status": 400, "body": body}]) as fake:
        c, sleeps = make(fake, log)
        with pytest.raises(llm.ContextExceeded) as e:
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0, max_tokens=100)
    assert (e.value.limit, e.value.prompt_tokens) == (limit, prompt)
    assert "the server refused the request: the prompt is over its context" in e.value.message
    assert len(fake.chat_requests) == 1 and sleeps.waits == []  # not retried as it is
    learned = LLMClient(config(fake), log).context_limit  # a restarted driver knows it too
    (rec,) = records(log)
    if limit:
        assert learned == limit == rec["context_limit"]
    else:  # the server did not say: a guess well under what was sent
        assert learned is not None and learned < rec["prompt_tokens_estimate"] + 100
    assert "learned: the server's context is" in format_log(tmp_path)


def test_a_timed_out_request_is_not_piled_onto_a_busy_server(tmp_path: Path) -> None:
    """A serial server (llama.cpp-based) goes on generating after the client gave up: the
    retry waits until it answers GET /models again, so two generations never queue up."""
    script = [{"delay_s": 1.0, "reply": "late"}, {"json": {"a": 1}}]
    with FakeLLM(script, serial=True) as fake:
        c, sleeps = make(fake, tmp_path / "llm.jsonl", request_timeout_s=0.6)
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0).data == {"a": 1}
    first, second = fake.chat_requests
    assert second.in_flight == 1  # the abandoned one had ended when the retry came
    assert second.t - first.t >= 0.95
    assert [r.answered for r in fake.requests] == ["step 0", "models", "step 1"]
    assert sleeps.waits == []
    (rec,) = records(tmp_path / "llm.jsonl")
    assert rec["retries"][0]["idle_check"] is True and rec["retries"][0]["error"] == "no reply within 0.6 s"


def test_a_server_still_busy_after_a_timeout_is_left_alone(tmp_path: Path) -> None:
    script = [{"delay_s": 1.5, "reply": "late"}, {"json": {"a": 1}}]
    with FakeLLM(script, serial=True) as fake:
        c, _ = make(fake, tmp_path / "llm.jsonl", request_timeout_s=0.3)
        with pytest.raises(LLMUnavailable, match="still busy") as e:
            c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        assert e.value.kind == "busy" and len(fake.chat_requests) == 1
        # the next round trip first waits for the server (its GET /models is answered at ~1.5 s)
        c.config = replace(c.config, request_timeout_s=5.0)
        c._openai = None
        assert c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1).data == {"a": 1}
    assert [r.answered for r in fake.requests] == ["step 0", "models", "models", "step 1"]
    assert fake.chat_requests[1].in_flight == 1
    assert records(tmp_path / "llm.jsonl")[1]["idle_wait_s"] > 0.3


def test_exchange_log_records_carry_a_version_and_old_ones_are_read(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    old = {"t": 1, "generation": 0, "purpose": "propose", "model": "fake-model", "base_url": "http://x/v1",
           "response_format": "json_object", "mode_ok": True}  # fmt: skip
    log.write_text(json.dumps(old) + "\n")
    with FakeLLM(["{}"]) as fake:
        c, _ = make(fake, log, base_url="http://x/v1")
        assert c.mode == "json_object"  # learned from a record written before "v" existed
        c.config = replace(c.config, base_url=fake.base_url)
        c._openai = None
        c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1)
    assert [r["v"] for r in llm.read_log(log)] == [1, llm.LOG_VERSION]
    assert "v" not in records(log)[0] and records(log)[1]["v"] == llm.LOG_VERSION


# ------------------------------------------------------------------------------- preflight: what servers say


def test_preflight_base_url_without_v1_is_a_url_problem() -> None:
    with FakeLLM([]) as fake:
        url = fake.base_url.removesuffix("/v1")
        with pytest.raises(UserError) as e:
            LLMClient(config(url, model="fake-model")).preflight()
    assert (
        "is not an OpenAI-compatible API: GET /models and POST /chat/completions both answered HTTP 404"
        in (e.value.message)
    )
    assert f"e.g. {url}/v1" in (e.value.fix or "") and "model" not in (e.value.fix or "")


def test_preflight_reads_the_context_where_the_server_publishes_it(tmp_path: Path) -> None:
    with FakeLLM([], model_meta={"max_model_len": 8192}) as fake:  # vLLM
        c = LLMClient(config(fake))
        c.preflight()
        assert c.context_limit == 8192
    llama = {"owned_by": "llamacpp", "meta": {"n_ctx_train": 32768}}
    with FakeLLM([], model_meta=llama, props={"default_generation_settings": {"n_ctx": 4096}}) as fake:
        c = LLMClient(config(fake))
        c.preflight()
        c.set_log(tmp_path / "llm.jsonl")
    assert c.context_limit == 4096
    assert [r.answered for r in fake.requests] == ["models", "props"]
    assert "server context: 4,096 tokens (GET /props default_generation_settings.n_ctx)" in format_log(
        tmp_path
    )


def test_the_latest_context_learned_wins() -> None:
    """A server restarted with more context says so at the next preflight (its metadata)."""
    memory = llm.Memory()
    for rec in ({"context_limit": 4096}, {"context_limit": 8192}, {"context_limit": None}):
        memory.learn(rec)
    assert memory.context_limit == 8192
