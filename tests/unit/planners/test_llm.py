"""hpc_agent.planners.llm (the package), .llm.schema, .llm.prompt and .llm.planner: the reply's
schema and the check of each proposal, the prompt fitted to its budget, and the planner asking
the scripted OpenAI-compatible server over real HTTP (repair, then TPE for what is missing)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import hpc_agent.planners.llm as llm_planners
from hpc_agent.llm import transport
from hpc_agent.planners.base import PlanContext
from hpc_agent.planners.llm.planner import LLMPlanner
from hpc_agent.planners.llm.prompt import (
    View,
    build_prompt,
    is_placeholder,
    load_brief,
    params_json,
    propose_task,
    repair_messages,
    short,
    system_message,
)
from hpc_agent.planners.llm.schema import Batch, proposals_of, reply_schema, reply_tokens
from hpc_agent.testing.fake_llm import FakeLLM
from unit.conftest import Finished


def view(finished: Finished, n: int = 2) -> View:
    state = finished.state
    return View(
        finished.spec,
        2,
        n,
        tuple(state.configs()),
        state.champion("min"),
        extra_seen=frozenset(state.config_keys()),
    )


def test_the_reply_schema_and_its_size(finished: Finished) -> None:
    schema = reply_schema(finished.spec, n=3)
    props = schema["properties"]["proposals"]
    assert (
        set(schema["required"]) >= {"analysis", "proposals"} and props["minItems"] == props["maxItems"] == 3
    )
    assert set(props["items"]["properties"]["params"]["properties"]) == {"x", "mode"}
    assert "proposals" not in reply_schema(finished.spec, with_proposals=False)["properties"]
    assert reply_tokens(finished.spec, 2) < reply_tokens(finished.spec, 4)
    assert proposals_of([1]) == [1] and proposals_of({"proposals": [2]}) == [2]
    assert proposals_of({"params": {"x": 1}}) == [{"params": {"x": 1}}] and proposals_of("no") is None


GOLDEN = Path(__file__).parents[2] / "golden" / "reply_schema"
EXAMPLES = Path(__file__).parents[3] / "examples"


def golden_case(name: str) -> dict[str, object]:
    """The reply schema of one golden case: an example's spec, varied as the name says."""
    from hpc_agent.config.space import Space
    from hpc_agent.config.spec import load_spec

    if name == "choices":  # every kind of parameter, choices of every type
        spec = load_spec(EXAMPLES / "quickstart" / "campaign.toml")
        space = Space.from_dict(
            {
                "ints": {"type": "choice", "values": [1, 2, 4]},
                "floats": {"type": "choice", "values": [0.1, 0.5]},
                "flag": {"type": "choice", "values": [True, False]},
                "mixed": {"type": "choice", "values": [1, "a"]},
                "depth": {"type": "int", "low": 1, "high": 8},
                "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
            }
        )
        return reply_schema(replace(spec, space=space), n=1)
    example, _, variant = (
        name.partition("-")
        if not name.startswith("nanolm-code")
        else (
            "nanolm-code",
            "",
            name[len("nanolm-code-") :],
        )
    )
    spec = load_spec(EXAMPLES / example / "campaign.toml")
    if variant == "n3":
        return reply_schema(spec, n=3)
    if variant == "analysis":
        return reply_schema(spec, with_proposals=False)
    if variant == "noedit":
        return reply_schema(replace(spec, experiment=replace(spec.experiment, editable=())))
    if variant:
        return reply_schema(replace(spec, planner=replace(spec.planner, edit_format=variant)), n=2)
    return reply_schema(spec)


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_the_reply_schema_is_the_one_the_servers_were_proven_with(name: str) -> None:
    """Generated from the declarations, the schema is byte for byte the one written by hand
    before them (tests/golden/reply_schema, written by that code), which the real llama.cpp
    server's tests proved: the request a server gets has not changed."""
    assert json.dumps(golden_case(name), indent=1) + "\n" == (GOLDEN / f"{name}.json").read_text()


def test_a_proposal_is_read_through_its_declaration(finished: Finished) -> None:
    """Its types are checked by the declaration, the error naming the key and the value;
    keys it does not declare are read past, as a model writes them."""
    batch = Batch(view(finished, 2))
    errors = batch.take(
        [
            {"hypothesis": "params as a list", "params": [0.3, "a"]},
            {"hypothesis": 3, "params": {"x": 0.3, "mode": "a"}},
            {"params": {"x": 0.3, "mode": "a"}},
            {"hypothesis": "with a note", "params": {"x": 0.29, "mode": "a"}, "confidence": "high"},
        ]
    )
    assert errors[:3] == [
        "proposal 1 ('params as a list'): params = [0.3, 'a']: expected an object with every parameter "
        "of the search space",
        "proposal 2: hypothesis = 3: expected a string",
        "proposal 3: missing hypothesis",
    ]
    assert [dict(p.params) for p in batch.accepted] == [{"x": 0.29, "mode": "a"}]


def test_a_batch_takes_the_valid_proposals_and_says_what_is_wrong(finished: Finished) -> None:
    batch = Batch(view(finished, 2))
    old = dict(finished.state.trials["0000-0000"].params)
    errors = batch.take(
        {
            "proposals": [
                {"hypothesis": "smaller x", "params": {"x": 0.31, "mode": "a"}},
                {"hypothesis": "out of range", "params": {"x": 7.0, "mode": "a"}},
                {"hypothesis": "a repeat", "params": old},
                {"hypothesis": "<hypothesis>", "params": {"x": 0.2, "mode": "b"}},
            ]
        }
    )
    assert [dict(p.params) for p in batch.accepted] == [{"x": 0.31, "mode": "a"}] and batch.missing == 1
    assert (
        len(errors) == 3
        and any("already ran" in e for e in errors)
        and any("placeholder" in e for e in errors)
    )
    assert batch.take("nonsense") == [
        'the reply has no "proposals" list; reply with {"analysis": "...", "proposals": [...]}'
    ]


def test_the_prompt_fits_its_budget_and_says_what_it_left_out(finished: Finished) -> None:
    brief = load_brief("")
    assert brief and "x" in system_message(finished.spec, brief)
    v = view(finished)
    full = build_prompt(v, brief, propose_task(v))
    assert [m["role"] for m in full.messages][:2] == ["system", "user"] and full.stats.omitted_configs == 0
    assert full.stats.shown_configs == full.stats.history_configs == len(finished.state.configs())
    tight = build_prompt(v, brief, propose_task(v), budget=full.stats.tokens // 2)
    assert tight.stats.tokens < full.stats.tokens or tight.stats.omitted_configs > 0
    assert build_prompt(v, brief, propose_task(v)).messages == full.messages  # pure
    again = repair_messages(full.messages, '{"proposals": []}', ["2 more proposal(s) are needed"], 24_000)
    assert (
        again[-2] == {"role": "assistant", "content": '{"proposals": []}'}
        and "2 more proposal(s)" in again[-1]["content"]
    )
    assert is_placeholder("...") and is_placeholder("<markdown>") and not is_placeholder("lower the rate")
    assert params_json({"b": 1, "a": 0.5}) == '{"b": 1, "a": 0.5}' and short("a  b\nc", 3) == "a …"


def test_the_planner_asks_repairs_and_completes_with_tpe(
    finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.0)
    first = {
        "analysis": "x near 0.3 is best",
        "proposals": [
            {"hypothesis": "x slightly above the best", "params": {"x": 0.33, "mode": "a"}},
            {"hypothesis": "x far out", "params": {"x": 5.0, "mode": "a"}},
        ],
    }
    repaired = {
        "analysis": "fixed",
        "proposals": [{"hypothesis": "x slightly below", "params": {"x": 0.27, "mode": "a"}}],
    }
    with FakeLLM([{"json": first}, {"json": repaired}]) as fake:
        spec = replace(
            finished.spec,
            planner=replace(finished.spec.planner, kind="llm", base_url=fake.base_url, model="fake-model"),
        )
        planner = LLMPlanner.for_spec(spec)
        assert planner.describe() == f"llm (fake-model at {fake.base_url})"
        state = finished.state
        ctx = PlanContext(
            spec,
            2,
            3,
            tuple(state.configs()),
            state.champion("min"),
            results_dir=tmp_path,
            extra_seen=frozenset(state.config_keys()),
        )
        plan = planner.propose(ctx)
        second_request = fake.chat_requests[1].text()
    assert [p.source for p in plan.proposals][:2] == ["llm", "llm"] and len(plan.proposals) == 3
    assert [dict(p.params) for p in plan.proposals[:2]] == [
        {"x": 0.33, "mode": "a"},
        {"x": 0.27, "mode": "a"},
    ]
    assert "x far out" in second_request  # the invalid proposal's error went back to the model
    log = [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]
    assert [r["purpose"] for r in log if r.get("round_trip", True)][:2] == ["propose", "repair"]
    assert llm_planners.LLMPlanner is LLMPlanner


def test_an_llm_that_never_answers_leaves_the_generation_to_tpe(
    finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.0)
    with FakeLLM([{"status": 500, "forever": True}]) as fake:
        planner_spec = replace(
            finished.spec.planner, kind="llm", base_url=fake.base_url, model="fake-model", max_retries=0
        )
        spec = replace(finished.spec, planner=planner_spec)
        state = finished.state
        ctx = PlanContext(
            spec,
            2,
            2,
            tuple(state.configs()),
            state.champion("min"),
            results_dir=tmp_path,
            extra_seen=frozenset(state.config_keys()),
        )
        plan = LLMPlanner.for_spec(spec).propose(ctx)
    assert len(plan.proposals) == 2 and all(p.source != "llm" for p in plan.proposals)
    assert plan.note == (
        "LLM request failed: the server failed (HTTP 500: fake_llm: injected HTTP 500) (1 attempt(s)); "
        "TPE planned this generation"
    )
