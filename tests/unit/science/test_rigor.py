"""hpc_agent.science.rigor: the noise floor, the promotion rule and its verdicts, the
confirmations and the final champion."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hpc_agent.config.spec import RigorSection
from hpc_agent.science.rigor import (
    Noise,
    confirmations,
    final_champion,
    judge,
    noise,
    student_t_cdf,
    verdicts_due,
)
from hpc_agent.store.state import ConfigResult
from unit.conftest import Finished


def config(cid: str, values: tuple[float, ...], **kw: object) -> ConfigResult:
    mean = sum(values) / len(values) if values else None
    return ConfigResult(cid, 0, {}, "", "", None, None, (cid,), mean, len(values), False, (), values, **kw)  # type: ignore[arg-type]


def test_the_noise_floor_pools_configurations_with_two_runs() -> None:
    assert noise([config("a", (1.0,))]).sigma is None
    floor = noise([config("a", (1.0, 1.2)), config("b", (2.0, 2.2)), config("c", (5.0,))])
    assert floor.sigma == pytest.approx(0.1414, abs=1e-3) and floor.n == 2 and floor.how == "seeds"
    assert floor.describe() == "σ = 0.1414 (n = 2, from seeds)"
    assert Noise(None, 0, "").describe().startswith("not estimated yet")


def test_the_promotion_rule() -> None:
    rule = RigorSection()
    champ = config("champ", (1.0, 1.0))
    floor = Noise(0.1, 10, "seeds")
    assert judge(config("x", ()), champ, floor, rule, "min")[0] == "crash"
    assert judge(config("x", (0.5,)), None, floor, rule, "min")[:2] == (
        "keep",
        "the first configuration to complete (the reference)",
    )
    worse = judge(config("x", (1.5,)), champ, floor, rule, "min")
    assert worse[0] == "discard" and worse[1] == "worse than the champion champ by 0.5"
    assert judge(config("x", (0.99,)), champ, floor, rule, "min")[0] == "discard"  # within the noise
    verdict, why, improvement, se = judge(config("x", (0.5,)), champ, floor, rule, "min")
    assert (
        verdict == "keep"
        and improvement == pytest.approx(0.5)
        and se is not None
        and why.startswith("better by 0.5")
    )
    assert judge(config("x", (1.5,)), champ, floor, rule, "max")[0] == "keep"
    welch = replace(rule, rule="welch")
    assert judge(config("x", (0.5, 0.52)), config("c", (1.0, 1.02)), floor, welch, "min")[0] == "keep"


def test_student_t_cdf() -> None:
    assert student_t_cdf(0.0, 5) == pytest.approx(0.5)
    assert student_t_cdf(2.015, 5) == pytest.approx(0.95, abs=1e-3)
    assert student_t_cdf(-2.015, 5) == pytest.approx(0.05, abs=1e-3)


def test_a_finished_campaign_has_its_verdicts_and_no_confirmation(finished: Finished) -> None:
    assert verdicts_due(finished.state, finished.spec) == []  # all judged already
    assert confirmations(finished.state) == {}
    champ, confirmed = final_champion(finished.state, "min")
    assert champ is not None and champ == finished.state.champion("min") and confirmed is None
