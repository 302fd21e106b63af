from __future__ import annotations

import math
import random

import pytest

from hpc_agent.config.space import ChoiceParam, FloatParam, IntParam, Space, parse_space
from hpc_agent.errors import SpecError


def space() -> Space:
    return parse_space(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "width": {"type": "int", "low": 16, "high": 256, "step": 16},
            "act": ["relu", "tanh"],
            "drop": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        }
    )


def test_types_are_inferred_and_ordered() -> None:
    s = space()
    assert s.names == ("lr", "width", "act", "drop")
    assert isinstance(s["lr"], FloatParam) and s["lr"].log
    assert isinstance(s["width"], IntParam) and s["width"].step == 16
    assert isinstance(s["act"], ChoiceParam)
    assert s.cardinality() == math.inf


def test_validate_normalises_and_reports_every_problem() -> None:
    s = space()
    params, errors = s.validate({"lr": 0.001, "width": 64.0, "act": "relu", "drop": 0.21})
    assert errors == []
    assert params == {"lr": 0.001, "width": 64, "act": "relu", "drop": 0.2}
    assert isinstance(params["width"], int)
    _, errors = s.validate({"lr": 5.0, "width": 17, "act": "gelu", "extra": 1})
    text = "\n".join(errors)
    assert "unknown parameter(s) ['extra']" in text
    assert "lr=5.0 is out of range" in text
    assert "width=17 is not on the grid" in text
    assert "act='gelu' is not one of ['relu', 'tanh']" in text
    assert "missing parameter 'drop'" in text


def test_bool_never_matches_int_choice() -> None:
    p = ChoiceParam("flag", (1, 2))
    assert p.normalize(True)[1] is not None
    assert p.normalize(1)[0] == 1


def test_wrong_types_are_errors_not_crashes() -> None:
    s = space()
    _, errors = s.validate({"lr": "0.01", "width": None, "act": 3, "drop": float("nan")})
    assert len(errors) == 4


def test_samples_are_valid_and_reproducible() -> None:
    s = space()
    a = [s.sample(random.Random(7)) for _ in range(3)]
    b = [s.sample(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(1)
    for _ in range(500):
        params = s.sample(rng)
        assert s.contains(params), params


def test_log_int_sampling_stays_in_range() -> None:
    p = IntParam("n", 1, 1000, log=True)
    rng = random.Random(0)
    values = [p.sample(rng) for _ in range(2000)]
    assert min(values) >= 1 and max(values) <= 1000
    assert sum(v < 32 for v in values) > sum(v > 500 for v in values)  # log scale favours small


def test_key_is_canonical() -> None:
    assert Space.key({"b": 1, "a": 0.1 + 0.2}) == Space.key({"a": 0.3, "b": 1})
    assert Space.key({"a": 0.3}) != Space.key({"a": 0.31})


def test_defaults_and_bad_default() -> None:
    s = parse_space(
        {"x": {"type": "float", "low": 0, "high": 1, "default": 0.5}, "y": {"values": [1, 2], "default": 2}}
    )
    assert s.defaults() == {"x": 0.5, "y": 2}
    with pytest.raises(SpecError, match="default is invalid"):
        parse_space({"x": {"type": "float", "low": 0, "high": 1, "default": 2}})


def test_round_trip() -> None:
    s = space()
    assert parse_space(s.to_dict()) == s
