"""hpc_agent.config.space: the parameters, the one validation rule every planner is held to,
and an experiment's identity."""

from __future__ import annotations

import math
import random

import pytest

from hpc_agent.config.space import Space, check_names, config_key, parse_space
from hpc_agent.errors import SpecError

TABLE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "layers": {"type": "int", "low": 1, "high": 9, "step": 2},
    "act": {"type": "choice", "values": ["relu", "gelu"]},
}


def test_parse_and_validate() -> None:
    space = parse_space(TABLE)
    assert space.names == ("lr", "layers", "act")
    assert space.validate({"lr": 0.01, "layers": 3, "act": "gelu"}) == (
        {"lr": 0.01, "layers": 3, "act": "gelu"},
        [],
    )
    _, errors = space.validate({"lr": 0.5, "layers": 4, "act": "tanh", "dropout": 0.1})
    assert errors[0] == "unknown parameter(s) ['dropout']; valid parameters are: ['lr', 'layers', 'act']"
    assert len(errors) == 4 and not space.contains({"lr": 0.5, "layers": 3, "act": "relu"})
    assert errors[1:] == [
        "lr=0.5 is out of range (expected float in [0.0001, 0.1], log scale)",
        "layers=4 is not on the grid (expected int in [1, 9], step 2)",
        "act='tanh' is not one of ['relu', 'gelu']",
    ]


def test_samples_are_inside_and_the_count_is_right() -> None:
    space = parse_space(TABLE)
    rng = random.Random(0)
    for _ in range(50):
        assert space.contains(space.sample(rng))
    assert math.isinf(space.cardinality())
    assert parse_space({k: v for k, v in TABLE.items() if k != "lr"}).cardinality() == 5 * 2
    assert space.defaults() is None


def test_bad_tables_raise_spec_errors() -> None:
    with pytest.raises(SpecError, match=r"\[space\] is empty"):
        parse_space({})
    with pytest.raises(SpecError):
        parse_space({"x": {"type": "float", "low": 1.0, "high": 0.0}})
    with pytest.raises(SpecError, match=r"\['seed'\] are reserved"):
        check_names(parse_space({"seed": {"type": "int", "low": 0, "high": 3}}), ["seed"])


def test_config_key_is_the_experiment_identity() -> None:
    assert Space.key({"b": 1, "a": 0.1 + 0.2}) == Space.key({"a": 0.3, "b": 1})
    base = config_key({"a": 1}, None, None)
    assert config_key({"a": 1}, None, "0000-0001") == base + "@0000-0001"
    edit = [{"file": "train.py", "search": "x", "replace": "y"}]
    patched = config_key({"a": 1}, edit, None)
    assert patched.startswith(base + "#") and len(patched) == len(base) + 13
    assert patched != config_key({"a": 1}, [{**edit[0], "replace": "z"}], None)
