"""The LLM planner: validation and repair, fallbacks, the prompt budget, and whole campaigns
through the CLI against the scripted OpenAI-compatible server (real openai client, real HTTP,
real local executor)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import TINY_TRAIN

import hpc_agent.llm.transport as transport
from hpc_agent.config.space import Space
from hpc_agent.config.spec import CampaignSpec, load_spec
from hpc_agent.planners import resolve_planner_kind
from hpc_agent.planners.base import AnalysisContext, PlanContext
from hpc_agent.planners.llm import LLMPlanner, View, build_prompt, propose_task
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state
from hpc_agent.store.state import ConfigResult
from hpc_agent.testing import FakeLLM

SECRET = "sk-hpcagent-test-SECRET-7f3a9c21"
LINE = 'loss = (x - 0.3) ** 2 + (0.0 if y == "a" else 0.1)'
FAST = ("--executor", "local", "--poll-interval", "0.05", "-q")


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.01)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeLLM]]:
    """Start a scripted endpoint and point the environment at it, as a user would."""
    started: list[FakeLLM] = []

    def start(script: list[Any], **kw: Any) -> FakeLLM:
        kw.setdefault("api_key", SECRET)
        fake = FakeLLM(script, **kw).start()
        started.append(fake)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("HPC_AGENT_MODEL", "fake-model")
        return fake

    yield start
    for f in started:
        f.stop()


# the scripted replies fill whole batches: no control, no noise runs, no replicates (the rule
# of release 0.1.0: any improvement is kept; tests/test_rigor.py tests the rule)
NO_CONTROL = "\n[rigor]\ncontrol = false\nnoise_runs = 1\nreplicate = false\n"


def prop(x: float, mode: str = "a", patch: Any = None, hypothesis: str = "a hypothesis") -> dict[str, Any]:
    return {"hypothesis": hypothesis, "params": {"x": x, "mode": mode}, "patch": patch}


def reply(*proposals: dict[str, Any], analysis: str = "reasoning") -> dict[str, Any]:
    return {"json": {"analysis": analysis, "proposals": list(proposals)}}


def edit(search: str, replace: str, file: str = "train.py") -> dict[str, str]:
    return {"file": file, "search": search, "replace": replace}


def ctx_for(spec: CampaignSpec, results: Path, n: int = 2, **kw: Any) -> PlanContext:
    results.mkdir(parents=True, exist_ok=True)
    history = kw.pop("history", ())
    seen = frozenset(Space.key(c.params) for c in history if not c.patch)
    return PlanContext(
        spec=spec,
        generation=kw.pop("generation", 0),
        n=n,
        history=history,
        champion=kw.pop("champion", None),
        results_dir=results,
        extra_seen=seen,
        **kw,
    )


def config(cid: str, x: float, mode: str = "a", objective: float | None = 0.5, **kw: Any) -> ConfigResult:
    values: dict[str, Any] = {
        "config_id": cid,
        "generation": int(cid.split("-")[0]),
        "params": {"x": x, "mode": mode},
        "hypothesis": "h",
        "source": "llm",
        "parent": None,
        "patch": None,
        "trial_ids": (cid,),
        "objective": objective,
        "n_completed": 1 if objective is not None else 0,
        "pending": False,
        "failed_reasons": () if objective is not None else (f"{cid}: failed: exit code 1: boom",),
    }
    values.update(kw)
    return ConfigResult(**values)


@pytest.fixture
def spec(make_campaign: Callable[..., Path]) -> CampaignSpec:
    return load_spec(make_campaign(extra="\n[planner]\nmax_repairs = 2\nmax_retries = 2\n"))


def user_text(fake: FakeLLM, i: int) -> str:
    return str(fake.chat_requests[i].messages[-1]["content"])


def log_of(results: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (results / "llm.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------- one round trip


def test_a_valid_reply_is_one_round_trip(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    patch = [edit(LINE, LINE.replace("** 2", "** 2 * 0.5"))]
    fake = serve([reply(prop(0.1), prop(0.5, patch=patch, hypothesis="halve the loss"), analysis="why")])
    planner = LLMPlanner(spec)
    plan = planner.propose(ctx_for(spec, tmp_path / "r"))
    assert [p.params for p in plan.proposals] == [{"x": 0.1, "mode": "a"}, {"x": 0.5, "mode": "a"}]
    assert [p.source for p in plan.proposals] == ["llm", "llm"]
    assert plan.proposals[1].patch == (edit(LINE, LINE.replace("** 2", "** 2 * 0.5")),)
    assert plan.proposals[1].hypothesis == "halve the loss"
    assert plan.proposals[0].parent is None and plan.proposals[1].parent is None  # no champion yet
    assert plan.rationale == "why"
    assert plan.note == "llm: 2 proposal(s), 1 round trip(s)"
    assert len(fake.chat_requests) == 1
    prompt = fake.chat_requests[0].text()
    for needed in (
        "x: float in [-1, 1]",
        'mode: one of ["a", "b"]',
        "## train.py",
        LINE,
        "Propose exactly 2",
    ):
        assert needed in prompt
    (rec,) = log_of(tmp_path / "r")
    assert rec["purpose"] == "propose" and len(rec["proposals"]) == 2 and rec["validation_errors"] is None
    assert rec["prompt"]["tokens_estimate"] <= rec["prompt"]["first_budget"]
    assert planner.describe() == f"llm (fake-model at {fake.base_url})"


def test_control_characters_inside_strings(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    raw = (
        '{"analysis": "line one\nline two\twith a tab", "proposals": ['
        '{"hypothesis": "raw\nnewline", "params": {"x": 0.2, "mode": "b"}, "patch": null},'
        '{"hypothesis": "bell \x07", "params": {"x": -0.2, "mode": "a"}, "patch": null}]}'
    )
    fake = serve([raw])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 1
    assert [p.source for p in plan.proposals] == ["llm", "llm"]
    assert plan.proposals[0].hypothesis == "raw\nnewline"
    assert plan.rationale == "line one\nline two\twith a tab"


# ------------------------------------------------------------------------------- repairs

BAD_CASES = [
    pytest.param("{not json at all", "not valid JSON", id="invalid-json"),
    pytest.param("", "your reply was empty", id="empty-reply"),
    pytest.param(
        {"reply": '{"analysis": "a very long', "finish_reason": "length"},
        "cut off at the length limit",
        id="truncated",
    ),
    pytest.param(
        reply(prop(3.0), prop(0.1)), "x=3.0 is out of range (expected float in [-1, 1])", id="out-of-range"
    ),
    pytest.param(
        reply({"hypothesis": "h", "params": {"x": 0.2, "mode": "a", "lr": 0.1}}, prop(0.1)),
        "unknown parameter(s) ['lr']; valid parameters are: ['x', 'mode']",
        id="unknown-key",
    ),
    pytest.param(
        reply(prop(0.2, patch=[edit("[campaign]", "[campaign]\n", file="campaign.toml")]), prop(0.1)),
        "file 'campaign.toml' is not editable; only these files may change: ['train.py']",
        id="non-editable-file",
    ),
    pytest.param(
        reply(prop(0.2, patch=[edit(LINE, "loss = 0", file="../camp/train.py")]), prop(0.1)),
        "file '../camp/train.py' leaves the workdir ('..')",
        id="dotdot-path",
    ),
    pytest.param(
        reply(prop(0.2, patch=[edit("loss = (x - 0.3) ** 3", "loss = 0")]), prop(0.1)),
        "edit 1: the search text was not found in train.py",
        id="patch-does-not-apply",
    ),
    pytest.param(
        reply(prop(0.2, patch=[edit("/etc/passwd", "x", file="/etc/passwd")]), prop(0.1)),
        "file '/etc/passwd' is an absolute path",
        id="absolute-path",
    ),
]


@pytest.mark.parametrize(("bad", "error"), BAD_CASES)
def test_invalid_output_is_repaired_with_the_exact_error(
    spec: CampaignSpec, tmp_path: Path, serve: Any, bad: Any, error: str
) -> None:
    good = reply(prop(-0.5), prop(0.7))
    fake = serve([bad, good])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 2
    repair = user_text(fake, 1)
    assert error in repair
    assert [p.source for p in plan.proposals] == ["llm", "llm"]
    assert "2 round trip(s)" in plan.note
    first, second = log_of(tmp_path / "r")
    assert (first["purpose"], second["purpose"], second["round"]) == ("propose", "repair", 1)
    assert any(error in e for e in first["validation_errors"])
    # the repair shows the model its own reply, then the errors
    assert [m["role"] for m in fake.chat_requests[1].messages] == ["system", "user", "assistant", "user"]


def test_partial_batches_keep_what_was_valid(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    fake = serve([reply(prop(3.0), prop(0.1)), reply(prop(0.6))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert [p.params["x"] for p in plan.proposals] == [0.1, 0.6]
    repair = user_text(fake, 1)
    assert "Accepted so far: 1 of 2 proposal(s)" in repair and '{"x": 0.1, "mode": "a"}' in repair
    assert "exactly 1 new proposal(s)" in repair


def test_extra_proposals_cover_invalid_ones_without_a_repair(
    spec: CampaignSpec, tmp_path: Path, serve: Any
) -> None:
    fake = serve([reply(prop(3.0), prop(0.1), prop(0.2))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 1 and [p.params["x"] for p in plan.proposals] == [0.1, 0.2]
    (rec,) = log_of(tmp_path / "r")
    assert "x=3.0 is out of range" in rec["validation_errors"][0]  # logged, though nothing needed repair


def test_what_stays_invalid_is_dropped_and_filled_by_tpe(
    spec: CampaignSpec, tmp_path: Path, serve: Any
) -> None:
    fake = serve([reply(prop(3.0), prop(0.1)), reply(prop(-4.0)), reply(prop(9.0))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 3  # one request and max_repairs = 2 repairs
    assert [p.source for p in plan.proposals] == ["llm", "tpe-fill"]
    assert spec.space.contains(plan.proposals[1].params)
    assert "dropped 1 invalid LLM proposal(s)" in plan.note and "1 proposal(s) filled by TPE" in plan.note
    last = log_of(tmp_path / "r")[-1]
    assert any("x=9.0 is out of range" in e for e in last["validation_errors"])


def test_wrong_count_is_repaired(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    fake = serve([reply(prop(0.1)), reply(prop(0.2), prop(0.25))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert "you proposed 1 experiment(s); 2 were asked for" in user_text(fake, 1)
    assert [p.params["x"] for p in plan.proposals] == [0.1, 0.2]  # extras beyond the batch are ignored


def test_duplicates_of_past_in_flight_and_batch(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    history = (config("0000-0000", 0.1), config("0000-0001", 0.2, objective=None, pending=True))
    fake = serve([reply(prop(0.1), prop(0.2), prop(0.3), prop(0.3)), reply(prop(0.4), prop(0.45))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r", n=3, history=history, generation=1))
    repair = user_text(fake, 1)
    assert 'proposal 1 (\'a hypothesis\'): {"x": 0.1, "mode": "a"} already ran (config 0000-0000)' in repair
    assert '{"x": 0.2, "mode": "a"} is in flight (config 0000-0001)' in repair
    assert (
        'proposal 4 (\'a hypothesis\'): {"x": 0.3, "mode": "a"} duplicates proposal 3 of your reply' in repair
    )
    assert [p.params["x"] for p in plan.proposals] == [0.3, 0.4, 0.45]
    # a patch makes the same params a different experiment
    fake2 = serve([reply(prop(0.1, patch=[edit(LINE, LINE + "  # v2")]), prop(0.9))])
    plan2 = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r2", history=history, generation=1))
    assert len(fake2.chat_requests) == 1 and plan2.proposals[0].patch


def test_patches_edit_the_champions_code(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    """The champion has code changes: new patches apply to its files, and every proposal runs on them."""
    results = tmp_path / "r"
    champ_code = ResultsPaths(results).trial("0000-0001").code
    champ_code.mkdir(parents=True)
    patched = TINY_TRAIN.replace("** 2", "** 2 * 0.5")
    (champ_code / "train.py").write_text(patched)
    champion = config("0000-0001", 0.5, objective=0.02, patch=(edit("** 2", "** 2 * 0.5"),))
    history = (config("0000-0000", 0.0, objective=0.09), champion)
    # "** 2 + " exists in the base file only: against the champion it does not apply
    fake = serve([
        reply(prop(0.3, patch=[edit("** 2 + ", "** 3 + ")]), prop(0.2)),
        reply(prop(0.3, patch=[edit("** 2 * 0.5", "** 2 * 0.25")])),
    ])  # fmt: skip
    ctx = ctx_for(spec, results, history=history, champion=champion, generation=1)
    plan = LLMPlanner(spec).propose(ctx)
    assert "the search text was not found in train.py" in user_text(fake, 1)
    assert "** 2 * 0.5" in fake.chat_requests[0].text()  # the champion's version is shown
    assert [p.parent for p in plan.proposals] == ["0000-0001", "0000-0001"]
    assert plan.proposals[1].patch == (edit("** 2 * 0.5", "** 2 * 0.25"),)


# ------------------------------------------------------------------------------- transport


def test_429_then_success(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    fake = serve([{"status": 429, "headers": {"Retry-After": "0.05"}}, reply(prop(0.1), prop(0.2))])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert [p.source for p in plan.proposals] == ["llm", "llm"]
    assert len(fake.chat_requests) == 2
    (rec,) = log_of(tmp_path / "r")
    assert rec["attempts"] == 2 and rec["retries"][0]["wait_s"] == 0.05


def test_endpoint_down_falls_back_to_tpe(spec: CampaignSpec, tmp_path: Path, serve: Any) -> None:
    fake = serve([{"status": 500, "forever": True}])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert len(fake.chat_requests) == 3  # max_retries = 2
    assert [p.source for p in plan.proposals] == ["tpe", "tpe"]
    assert plan.note.startswith(
        "LLM request failed: the server failed (HTTP 500: fake_llm: injected HTTP 500) (3 attempt(s))"
    )
    assert "TPE planned this generation" in plan.note and "could not be reached" not in plan.note
    (rec,) = log_of(tmp_path / "r")
    assert rec["error"].startswith("the server failed (HTTP 500") and rec["error_kind"] == "failed"


def test_endpoint_down_during_repairs_keeps_the_valid_proposals(
    spec: CampaignSpec, tmp_path: Path, serve: Any
) -> None:
    serve([reply(prop(0.1), prop(5.0)), {"status": 503, "forever": True}])
    plan = LLMPlanner(spec).propose(ctx_for(spec, tmp_path / "r"))
    assert [p.source for p in plan.proposals] == ["llm", "tpe-fill"]
    assert "LLM request failed during repairs: the server failed (HTTP 503" in plan.note


def test_json_schema_rejected_then_json_object_remembered(
    spec: CampaignSpec, tmp_path: Path, serve: Any
) -> None:
    fake = serve([reply(prop(0.1), prop(0.2)), reply(prop(0.3), prop(0.4))], accept=("json_object", "text"))
    results = tmp_path / "r"
    LLMPlanner(spec).propose(ctx_for(spec, results))
    LLMPlanner(spec).propose(ctx_for(spec, results, generation=1))  # a restarted driver
    assert [r.response_format for r in fake.chat_requests] == [
        "json_schema",
        "json_object+schema",
        "json_object",
        "json_object",
    ]
    assert [r["response_format"] for r in log_of(results)] == ["json_object", "json_object"]


# ------------------------------------------------------------------------------- analysis + reuse


def analysis_ctx(results: Path, spec: CampaignSpec, g: int) -> AnalysisContext:
    state = load_state(results)
    table = pl.read_parquet(ResultsPaths(results).trials_table)
    last = g + 1 >= spec.campaign.generations
    left = spec.campaign.generations - (g + 1)
    return AnalysisContext(
        spec, g, state, table, (), results, plan_for=None if last else g + 1, generations_left=left
    )


def plan_ctx_from(results: Path, spec: CampaignSpec, g: int) -> PlanContext:
    state = load_state(results)
    seen = frozenset(Space.key(c.params) for c in state.configs() if not c.patch)
    return PlanContext(spec=spec, generation=g, n=spec.campaign.batch_size, history=tuple(state.configs()),
                       champion=state.champion("min"), results_dir=results, extra_seen=seen,
                       generations_left=spec.campaign.generations - g)  # fmt: skip


def test_analysis_and_next_proposals_in_one_round_trip_survive_a_restart(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(generations=1)
    cli_run("run", str(camp), "--planner", "tpe", *FAST)
    results = tmp_path / "results" / "tiny"
    spec = load_spec(camp).with_overrides(generations=3)
    fake = serve([reply(prop(0.31), prop(0.29), analysis="## What worked\nx near 0.3")])
    text = LLMPlanner(spec).analyze(analysis_ctx(results, spec, 0))
    assert text.startswith("# Generation 0: analysis\n\n## What worked")
    assert "propose exactly 2 new experiment(s) for generation 1" in fake.chat_requests[0].text()
    # a new planner (a restarted driver) reuses the proposals from llm.jsonl: no request
    plan = LLMPlanner(spec).propose(plan_ctx_from(results, spec, 1))
    assert len(fake.chat_requests) == 1
    assert [p.params["x"] for p in plan.proposals] == [0.31, 0.29]
    assert "proposals written with the analysis of generation 0" in plan.note
    assert plan.rationale == "## What worked\nx near 0.3"
    reused = log_of(results)[-1]
    assert reused["round_trip"] is False and reused["purpose"] == "propose"


def test_stale_proposals_are_not_reused(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(generations=1)
    cli_run("run", str(camp), "--planner", "tpe", *FAST)
    results = tmp_path / "results" / "tiny"
    spec = load_spec(camp).with_overrides(generations=3)
    fake = serve([reply(prop(0.31), prop(0.29)), reply(prop(0.11), prop(0.12))])
    LLMPlanner(spec).analyze(analysis_ctx(results, spec, 0))
    # a smaller batch (the campaign added a control trial): the proposals made still serve
    ctx = replace(plan_ctx_from(results, spec, 1), n=1)
    plan = LLMPlanner(spec).propose(ctx)
    assert len(fake.chat_requests) == 1 and [p.params["x"] for p in plan.proposals] == [0.31]
    # another history (a trial more than they were made for): stale, asked again
    ctx = plan_ctx_from(results, spec, 1)
    changed = replace(ctx, history=ctx.history[:-1])
    plan = LLMPlanner(spec).propose(changed)
    assert len(fake.chat_requests) == 2 and [p.params["x"] for p in plan.proposals] == [0.11, 0.12]


def test_analysis_falls_back_to_the_deterministic_one(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(generations=1, extra="\n[planner]\nmax_retries = 0\nmax_repairs = 1\n")
    cli_run("run", str(camp), "--planner", "tpe", *FAST)
    results = tmp_path / "results" / "tiny"
    spec = load_spec(camp)
    serve([{"status": 502}, "prose, no JSON", "still prose"])
    down = LLMPlanner(spec).analyze(analysis_ctx(results, spec, 0))
    assert down.startswith("# Generation 0: analysis")
    assert "No analysis from the LLM (the server failed (HTTP 502" in down
    unreadable = LLMPlanner(spec).analyze(analysis_ctx(results, spec, 0))
    assert "could not be read" in unreadable and "Best of this generation" in unreadable


# ------------------------------------------------------------------------------- the prompt budget


def big_history(n: int) -> tuple[ConfigResult, ...]:
    out = []
    for i in range(n):
        g, k = divmod(i, 10)
        cid = f"{g:04d}-{k:04d}"
        failed = i % 7 == 3
        x = round(-1 + 2 * ((i * 37) % 100) / 100, 4)
        objective = None if failed else 0.1 + (i % 13) / 10
        patch = (edit(LINE, LINE + f"  # {i}"),) if i % 5 == 0 else None
        hypothesis = f"hypothesis number {i}: " + "because " * 12
        out.append(config(cid, x, "ab"[i % 2], objective, hypothesis=hypothesis, patch=patch))
    return tuple(out)


@pytest.mark.parametrize("n", [0, 10, 300])
def test_prompt_fits_the_context_budget(make_campaign: Callable[..., Path], n: int) -> None:
    spec = load_spec(make_campaign(extra="\n[planner]\ncontext_tokens = 6000\n"))
    history = big_history(n)
    ranked = sorted((c for c in history if c.objective is not None), key=lambda c: (c.objective, c.config_id))
    analyses = tuple((g, f"# Generation {g}: analysis\n\n" + "Findings. " * 80) for g in range(n // 10))
    view = View(spec, n // 10, 4, history, ranked[0] if ranked else None, analyses, 3)
    prompt = build_prompt(view, "brief", propose_task(view))
    stats = prompt.stats
    assert stats.tokens <= stats.first_budget < stats.budget == 6000
    text = prompt.messages[1]["content"]
    if n == 300:
        assert stats.omitted_configs > 0 and stats.omitted_analyses > 0
        assert f"({stats.omitted_configs} of 300 configurations omitted to fit the context budget" in text
        for c in ranked[:8]:
            assert c.config_id in text  # the best are always shown
    # never a record cut in the middle: a config is shown whole (hypothesis included) or not at all
    for c in history:
        if f" {c.config_id} (gen" in text:
            assert f"hypothesis number {int(c.config_id[:4]) * 10 + int(c.config_id[5:])}: " in text
    assert prompt == build_prompt(view, "brief", propose_task(view))  # deterministic


def test_failures_show_their_stderr_tail(make_campaign: Callable[..., Path], tmp_path: Path) -> None:
    spec = load_spec(make_campaign())
    results = tmp_path / "r"
    status = ResultsPaths(results).trial("0000-0001").status
    status.parent.mkdir(parents=True)
    status.write_text(
        json.dumps({"state": "failed", "stderr_tail": "Traceback\n  File x\nZeroDivisionError: boom"})
    )
    history = (config("0000-0000", 0.1), config("0000-0001", 0.9, objective=None))
    view = View(spec, 1, 2, history, history[0], (), 2, results)
    text = build_prompt(view, "brief", propose_task(view)).messages[1]["content"]
    assert "FAILED: failed: exit code 1: boom" in text
    assert "stderr (last lines):\n    Traceback\n      File x\n    ZeroDivisionError: boom" in text


# ------------------------------------------------------------------------------- whole campaigns

ENV_DUMP = TINY_TRAIN + "print('ENVIRON', json.dumps(dict(os.environ), sort_keys=True))\n"


def test_three_generation_campaign_through_the_cli(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(generations=3, script=ENV_DUMP, extra=NO_CONTROL)
    half = LINE.replace("** 2", "** 2 * 0.5")
    fake = serve([
        # generation 0: a parameter change and a code change
        reply(prop(0.0, hypothesis="baseline-ish"), prop(0.5, patch=[edit(LINE, half)], hypothesis="halve")),
        # analysis of 0 + proposals for 1: patch the champion (the patched config) again
        reply(prop(0.3, patch=[edit("** 2 * 0.5", "** 2 * 0.25")], hypothesis="quarter"),
              prop(0.4, "b", hypothesis="params only, on the champion's code"),
              analysis="## Generation 0\nThe patch halved the loss."),
        # analysis of 1 + proposals for 2
        reply(prop(0.31), prop(0.29), analysis="Quarter won."),
        # analysis of 2 (the last): no proposals
        reply(analysis="Done: 0.3 with the quartered loss is best."),
    ])  # fmt: skip
    out = cli_run("run", str(camp), "--planner", "llm", *FAST)
    assert "done: 3 generation(s)" in out.output
    results = tmp_path / "results" / "tiny"
    paths = ResultsPaths(results)
    assert len(fake.chat_requests) == 4  # 1 propose + 3 analyses (each with the next proposals)

    plans = [json.loads(paths.plan(g).read_text()) for g in range(3)]
    assert all(t["source"] == "llm" for p in plans for t in p["trials"])
    assert [t["parent"] for t in plans[0]["trials"]] == [None, None]
    assert [t["parent"] for t in plans[1]["trials"]] == ["0000-0001", "0000-0001"]
    assert [t["parent"] for t in plans[2]["trials"]] == ["0001-0000", "0001-0000"]
    assert plans[1]["rationale"] == "## Generation 0\nThe patch halved the loss."

    code = {
        t: (paths.trial(t).code / "train.py").read_text()
        for t in ("0000-0000", "0000-0001", "0001-0000", "0001-0001", "0002-0000")
    }
    assert LINE in code["0000-0000"]
    assert half in code["0000-0001"]
    assert LINE.replace("** 2", "** 2 * 0.25") in code["0001-0000"]
    assert half in code["0001-0001"]  # no patch, but runs on the champion's code
    assert LINE.replace("** 2", "** 2 * 0.25") in code["0002-0000"]
    diff = paths.trial("0001-0000").patch.read_text()
    assert f"-{LINE}" in diff and "+" + LINE.replace("** 2", "** 2 * 0.25") in diff
    assert (camp / "train.py").read_text() == ENV_DUMP  # the user's file is never touched

    state = load_state(results)
    assert state.champion("min").config_id == "0001-0000"
    assert (
        paths.analysis(0)
        .read_text()
        .startswith("# Generation 0: analysis\n\n## Generation 0\nThe patch halved")
    )
    assert "Done: 0.3 with the quartered loss is best." in paths.analysis(2).read_text()

    logs = cli_run("logs", str(results)).output
    assert "total: 4 round trip(s) (3 analyze, 1 propose), 0 failed" in logs
    assert "no request: proposals made with the analysis of generation 0" in logs

    # the key: sent to the endpoint, and nowhere else
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in fake.requests)
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []
    for t in state.trials:
        env = json.loads(paths.trial(t).stdout.read_text().split("ENVIRON ", 1)[1])
        assert "OPENAI_API_KEY" not in env and SECRET not in json.dumps(env)


def test_campaign_completes_with_the_endpoint_down(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(generations=2, extra="\n[planner]\nmax_retries = 1\n" + NO_CONTROL)
    fake = serve([{"status": 500, "forever": True}])
    out = cli_run("run", str(camp), "--planner", "llm", *FAST)
    assert "done: 2 generation(s)" in out.output
    results = tmp_path / "results" / "tiny"
    paths = ResultsPaths(results)
    for g in range(2):
        plan = json.loads(paths.plan(g).read_text())
        assert plan["note"].startswith("LLM request failed: the server failed (HTTP 500")
        assert {t["source"] for t in plan["trials"]} <= {"tpe", "tpe-random"}
        assert "No analysis from the LLM (the server failed (HTTP 500" in paths.analysis(g).read_text()
    assert len(fake.chat_requests) == 2 * 2 * 2  # (propose + analyze) x 2 generations x 2 attempts
    journal = [json.loads(x) for x in (results / "journal.jsonl").read_text().splitlines()]
    analyzed = [e for e in journal if e["event"] == "analyzed"]
    assert [e["author"] for e in analyzed] == ["deterministic", "deterministic"]
    assert all(e["fallback"].startswith("LLM request failed: the server failed (HTTP 500") for e in analyzed)
    assert load_state(results).counts()["completed"] == 4


def test_json_schema_refused_with_http_500_in_a_campaign(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    """llama-cpp-python answers json_schema with HTTP 500 and takes llama.cpp's json_object form
    with a schema: one step down for the whole campaign, never a transport retry."""
    camp = make_campaign(generations=2, extra=NO_CONTROL)
    fake = serve(
        [reply(prop(0.1), prop(0.2)), reply(prop(0.3), prop(0.35)), {"json": {"analysis": "end"}}],
        accept=("json_object+schema", "json_object", "text"),
        refuse_status=500,
    )
    cli_run("run", str(camp), "--planner", "llm", *FAST)
    formats = [r.response_format for r in fake.chat_requests]
    assert formats == ["json_schema", "json_object+schema", "json_object+schema", "json_object+schema"]
    sent = fake.chat_requests[1].body["response_format"]
    assert sent["type"] == "json_object" and "proposals" in sent["schema"]["properties"]
    # the last generation's analysis asks for nothing that will never run
    last = fake.chat_requests[-1]
    assert list(last.body["response_format"]["schema"]["properties"]) == ["analysis"]
    assert "nothing more will run" in last.text() and "propose exactly" not in last.messages[-1]["content"]
    assert all(isinstance(r.body.get("max_tokens"), int) for r in fake.chat_requests)
    results = tmp_path / "results" / "tiny"
    (rec,) = [r for r in log_of(results) if r.get("negotiation")]
    assert rec["negotiation"][0]["response_format"] == "json_schema"
    assert rec["attempts"] == 1 and rec["retries"] is None  # the 500 was not retried
    journal = [json.loads(x) for x in (results / "journal.jsonl").read_text().splitlines()]
    authors = [e["author"] for e in journal if e["event"] == "analyzed"]
    assert authors == [f"llm (fake-model at {fake.base_url})"] * 2
    logs = cli_run("logs", str(results)).output
    assert "generation None" not in logs and "proposals for generation 1: 2" in logs


# ------------------------------------------------------------------------------- preflight


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.mark.parametrize("case", ["connection-refused", "bad-key", "unknown-model"])
def test_preflight_failures_exit_2_before_anything_is_submitted(
    make_campaign: Callable[..., Path],
    cli_run: Any,
    tmp_path: Path,
    serve: Any,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    camp = make_campaign()
    fake = serve([reply(prop(0.1), prop(0.2))])
    expected = {
        "connection-refused": "cannot reach the LLM endpoint at http://127.0.0.1:",
        "bad-key": "refused the API key (HTTP 401",
        "unknown-model": "model 'gpt-imaginary' (HPC_AGENT_MODEL) is not served by",
    }[case]
    if case == "connection-refused":
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_free_port()}/v1")
    elif case == "bad-key":
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key")
    else:
        monkeypatch.setenv("HPC_AGENT_MODEL", "gpt-imaginary")
    out = cli_run("run", str(camp), "--planner", "llm", *FAST, code=2)
    assert expected in out.output and "fix:" in out.output
    assert not (tmp_path / "results").exists()  # nothing written, nothing submitted
    assert fake.remaining == 1  # the chat script was never used
    assert SECRET not in out.output and "sk-wrong-key" not in out.output


def test_auto_picks_the_llm_when_an_endpoint_is_configured(
    make_campaign: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(make_campaign())
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HPC_AGENT_MODEL"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_planner_kind(spec)[0] == "tpe"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_planner_kind(spec)[0] == "llm"


def test_the_driver_does_not_import_openai_until_the_llm_is_used() -> None:
    code = (
        "import sys, hpc_agent.cli, hpc_agent.loop.campaign, hpc_agent.planners.llm, hpc_agent.llm; "
        "assert 'openai' not in sys.modules, 'openai imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_context_smaller_than_the_prompt_is_learned_once(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    """The server refuses the first prompt (over its context): the prompt is refitted at once to
    what it said, and every later request of the campaign fits from the start."""
    big = TINY_TRAIN + "\n".join(f"# note {i}: " + "a long comment about the model " * 6 for i in range(120))
    camp = make_campaign(generations=2, script=big, extra="\n[planner]\nmax_tokens = 500\n" + NO_CONTROL)
    refusal = {
        "status": 400,
        "body": {
            "error": {
                "message": "This model's maximum context length is 4096 tokens. However, you requested "
                "9000 tokens (8500 in the messages, 500 in the completion). Please reduce the length.",
                "code": "context_length_exceeded",
            }
        },
    }
    fake = serve(
        [
            refusal,
            reply(prop(0.1), prop(0.2)),
            reply(prop(0.3), prop(0.4)),
            {"json": {"analysis": "x near 0.3 wins"}},
        ]
    )
    cli_run("run", str(camp), "--planner", "llm", *FAST)
    results = tmp_path / "results" / "tiny"
    records = [r for r in log_of(results) if r.get("round_trip")]
    assert [r.get("error_kind") for r in records] == ["context", None, None, None]  # one adaptation
    first, *rest = records
    assert first["context_limit"] == 4096 and "# note 119" in first["messages"][1]["content"]
    for r in rest:  # fitted: the big file is left out, the estimate within the learned limit
        assert r["prompt_tokens_estimate"] + r["max_tokens"] <= 4096
        assert "not shown to fit the context budget" in r["messages"][1]["content"]
    plan = json.loads(ResultsPaths(results).plan(0).read_text())
    assert [t["source"] for t in plan["trials"]] == ["llm", "llm"]
    assert "its context is 4,096 tokens" in plan["note"] and "[planner] context_tokens" in plan["note"]
    assert "llm: 2 proposal(s), 2 round trip(s)" in plan["note"]
    assert len(fake.chat_requests) == 4


def test_a_context_too_small_for_the_shortest_prompt_is_a_user_error(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    camp = make_campaign(extra="\n[planner]\nmax_tokens = 500\n")
    refusal = {"status": 400, "body": {"error": {"message": "maximum context length is 600 tokens"}}}
    serve([refusal, reply(prop(0.1), prop(0.2))])
    out = cli_run("run", str(camp), "--planner", "llm", *FAST, code=2)
    assert "the LLM server's context (600 tokens) cannot hold the shortest prompt" in out.output
    assert "--n_ctx" in out.output and not list((tmp_path / "results" / "tiny").glob("gen-*/trials/*"))


def test_the_reply_formats_placeholders_are_not_accepted(
    make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path, serve: Any
) -> None:
    """Small models copy the format's example: a placeholder is asked again, not written down."""
    camp = make_campaign(generations=1, extra=NO_CONTROL)
    fake = serve([
        reply(prop(0.1, hypothesis="<what you change, why>"), prop(0.2), analysis="<markdown>"),
        reply(prop(0.15, hypothesis="a smaller x lowers the loss")),
        {"json": {"analysis": "..."}},
        {"json": {"analysis": "x = 0.2 beat x = 0.15."}},
    ])  # fmt: skip
    cli_run("run", str(camp), "--planner", "llm", *FAST)
    results = tmp_path / "results" / "tiny"
    assert "the placeholder of the reply format" in user_text(fake, 1)
    plan = json.loads(ResultsPaths(results).plan(0).read_text())
    assert [t["hypothesis"] for t in plan["trials"]] == ["a hypothesis", "a smaller x lowers the loss"]
    assert plan["rationale"] == "reasoning"  # the repair's, not "<markdown>"
    assert "x = 0.2 beat x = 0.15." in ResultsPaths(results).analysis(0).read_text()
    assert len(fake.chat_requests) == 4
