"""One contract suite, run over every built-in planner (as Optuna tests its samplers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.planners import make_planner, resolve_planner_kind
from hpc_agent.planners.base import PlanContext, Planner
from hpc_agent.space import Space
from hpc_agent.spec import parse_spec
from hpc_agent.state import ConfigResult

PLANNERS = ["random", "tpe"]


def spec_for(tmp_path: Path, space: dict, seed: int = 0):  # type: ignore[no-untyped-def]
    (tmp_path / "train.py").write_text("")
    return parse_spec(
        {
            "campaign": {"name": "p", "metric": "loss", "seed": seed},
            "experiment": {"command": "python train.py"},
            "space": space,
        },
        tmp_path,
    )


SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "width": {"type": "int", "low": 8, "high": 64, "step": 8},
    "act": ["relu", "tanh", "gelu"],
}


def history(space: Space, n: int, pending: int = 0) -> tuple[ConfigResult, ...]:
    import random

    rng = random.Random(42)
    out = []
    for i in range(n + pending):
        params = space.sample(rng)
        obj = None if i >= n else (params["lr"] - 0.01) ** 2 * 1e4 + params["width"] / 64  # type: ignore[operator]
        out.append(
            ConfigResult(
                config_id=f"0000-{i:04d}",
                generation=0,
                params=params,
                hypothesis="",
                source="random",
                parent=None,
                patch=None,
                trial_ids=(f"0000-{i:04d}",),
                objective=obj,
                n_completed=0 if obj is None else 1,
                pending=i >= n,
                failed_reasons=(),
            )
        )
    return tuple(out)


def ctx(spec, n: int, hist: tuple[ConfigResult, ...] = (), generation: int = 1) -> PlanContext:  # type: ignore[no-untyped-def]
    return PlanContext(
        spec=spec, generation=generation, n=n, history=hist, champion=None, seed=spec.campaign.seed
    )


@pytest.mark.parametrize("kind", PLANNERS)
def test_batch_is_valid_unique_and_new(tmp_path: Path, kind: str) -> None:
    spec = spec_for(tmp_path, SPACE)
    planner: Planner = make_planner(kind, spec)
    hist = history(spec.space, 20, pending=5)
    plan = planner.propose(ctx(spec, 12, hist))
    assert len(plan.proposals) == 12
    keys = [Space.key(p.params) for p in plan.proposals]
    assert len(set(keys)) == 12
    assert not set(keys) & {Space.key(c.params) for c in hist}
    for p in plan.proposals:
        assert spec.space.validate(p.params)[1] == []
        assert p.source and p.hypothesis


@pytest.mark.parametrize("kind", PLANNERS)
def test_same_history_and_seed_same_plan(tmp_path: Path, kind: str) -> None:
    spec = spec_for(tmp_path, SPACE, seed=3)
    hist = history(spec.space, 15)
    a = make_planner(kind, spec).propose(ctx(spec, 6, hist))
    b = make_planner(kind, spec).propose(ctx(spec, 6, hist))
    assert [p.params for p in a.proposals] == [p.params for p in b.proposals]
    other = spec_for(tmp_path, SPACE, seed=4)
    c = make_planner(kind, other).propose(ctx(other, 6, hist))
    assert [p.params for p in c.proposals] != [p.params for p in a.proposals]


@pytest.mark.parametrize("kind", PLANNERS)
def test_small_space_is_exhausted_not_duplicated(tmp_path: Path, kind: str) -> None:
    spec = spec_for(tmp_path, {"a": ["x", "y"], "b": {"type": "int", "low": 0, "high": 2}})
    hist = history(spec.space, 0)
    plan = make_planner(kind, spec).propose(ctx(spec, 10, hist))
    assert len(plan.proposals) == 6  # 2 x 3 configurations exist
    assert len({Space.key(p.params) for p in plan.proposals}) == 6
    assert "no more unseen configurations" in plan.note


def test_tpe_exploits_a_clear_optimum(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, {"x": {"type": "float", "low": 0.0, "high": 1.0}})
    hist = []
    for i in range(30):
        x = (i * 0.6180339) % 1.0
        hist.append(
            ConfigResult(
                f"0000-{i:04d}",
                0,
                {"x": x},
                "",
                "r",
                None,
                None,
                (f"0000-{i:04d}",),
                (x - 0.8) ** 2,
                1,
                False,
                (),
            )
        )
    plan = make_planner("tpe", spec).propose(ctx(spec, 8, tuple(hist)))
    xs = [float(p.params["x"]) for p in plan.proposals]  # type: ignore[arg-type]
    assert sum(abs(x - 0.8) < 0.2 for x in xs) >= 5, xs


def test_auto_picks_tpe_without_an_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(v, raising=False)
    spec = spec_for(tmp_path, SPACE)
    kind, why = resolve_planner_kind(spec)
    assert kind == "tpe" and "no LLM endpoint" in why
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_planner_kind(spec)[0] == "llm"
