"""hpc_agent.testing, .testing.executor and .testing.fake_llm: the two fakes at the process
boundary are themselves tested: the scripted executor writes what a runner writes and answers
as a scheduler does; the scripted LLM server speaks HTTP, refuses what a real server refuses,
and injects the faults it is told to."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hpc_agent import testing
from hpc_agent.executors.base import SubmitError, SubmitRequest
from hpc_agent.job.trial import read_status
from hpc_agent.testing.executor import FATES, DriverKilled, Fate, ScriptedExecutor
from hpc_agent.testing.fake_llm import FakeLLM, check_step
from unit.conftest import BareDriver, planned_and_prepared


def request(driver: BareDriver, dirs: list[str], token: str = "t1") -> SubmitRequest:
    ids = tuple(Path(d).name for d in dirs)
    return SubmitRequest(token, 0, "tiny", ids, tuple(dirs), str(driver.paths.submission(0, token)), "", 5)


def test_the_package_exports_the_harnesses() -> None:
    assert (
        testing.ScriptedExecutor is ScriptedExecutor and testing.FakeLLM is FakeLLM and testing.Fate is Fate
    )
    assert set(FATES) >= {"complete", "fail", "preempt", "vanish", "hang"}


def test_the_scripted_executor_plays_each_fate_when_polled(bare_driver: BareDriver) -> None:
    dirs = planned_and_prepared(bare_driver)
    ids = [Path(d).name for d in dirs]
    ex = ScriptedExecutor(objective=lambda p: 0.25, fates={ids[1]: [Fate("fail")], ids[2]: [Fate("hang")]})
    sub = ex.submit(request(bare_driver, dirs))
    status = ex.poll(sub.job_ids)
    assert [status[j].state for j in sub.job_ids] == ["gone", "gone", "running"]
    assert read_status(dirs[0])["state"] == "completed" and read_status(dirs[1])["state"] == "failed"  # type: ignore[index]
    assert (Path(dirs[0]) / "metrics.jsonl").read_text() == '{"step": 0, "loss": 0.25}\n'
    ex.finish(ids[2], objective=0.1)
    assert read_status(dirs[2])["state"] == "completed" and ex.executions == dict.fromkeys(ids, 1)  # type: ignore[index]
    assert ex.find(request(bare_driver, dirs)) == sorted(sub.job_ids)


def test_the_scripted_executor_refuses_and_dies_when_told(bare_driver: BareDriver) -> None:
    dirs = planned_and_prepared(bare_driver)
    ex = ScriptedExecutor(refuse_next="sbatch: error: no partition")
    with pytest.raises(SubmitError, match="no partition"):
        ex.submit(request(bare_driver, dirs))
    ex.kill_in_submit = "after"
    with pytest.raises(DriverKilled):
        ex.submit(request(bare_driver, dirs))
    assert len(ex.submissions) == 1 and len(ex.jobs) == 3  # the scheduler had taken them


def post(fake: FakeLLM, body: dict[str, Any], key: str = "") -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{fake.base_url}/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_the_fake_llm_answers_its_script_over_http() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    with FakeLLM(
        ["hello", {"json": {"a": 1}}, {"status": 429, "body": {"error": {"message": "slow down"}}}]
    ) as fake:
        assert (
            post(fake, {"model": "fake-model", "messages": msgs})[1]["choices"][0]["message"]["content"]
            == "hello"
        )
        assert json.loads(
            post(fake, {"model": "fake-model", "messages": msgs})[1]["choices"][0]["message"]["content"]
        ) == {"a": 1}
        code, body = post(fake, {"model": "fake-model", "messages": msgs})
        assert code == 429 and body["error"]["message"] == "slow down"
        assert post(fake, {"model": "unknown", "messages": msgs})[0] == 404  # refused without a step
        assert fake.remaining == 0 and [r.text() for r in fake.chat_requests][:1] == ["hi"]
        with urllib.request.urlopen(f"{fake.base_url}/models", timeout=5) as resp:
            assert [m["id"] for m in json.loads(resp.read())["data"]] == ["fake-model"]


def test_the_fake_llm_refuses_a_wrong_key_and_unknown_formats() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    with FakeLLM(["ok"], api_key="right", accept=("text",)) as fake:
        assert post(fake, {"model": "fake-model", "messages": msgs}, key="wrong")[0] == 401
        schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
        assert (
            post(fake, {"model": "fake-model", "messages": msgs, "response_format": schema}, key="right")[0]
            == 400
        )
        assert post(fake, {"model": "fake-model", "messages": msgs}, key="right")[0] == 200
    with pytest.raises(ValueError):
        check_step({"fault": "explode"})
    with pytest.raises(ValueError):
        FakeLLM(accept=("yaml",))
