"""hpc_agent.config.toml: the one TOML writer (resolved specs, ``profiles --show``), read back
by the standard library's reader."""

from __future__ import annotations

import pytest
import tomllib

from hpc_agent.config.toml import to_toml, toml_key, toml_value


def test_values_are_written_as_toml_reads_them() -> None:
    assert toml_value(True) == "true" and toml_value('a"b') == '"a\\"b"'
    assert toml_value(["x", 2]) == '["x", 2]' and toml_value({"k": 1.0}) == "{ k = 1.0 }"
    assert toml_value(0.5) == "0.5" and toml_value(None) == '""' and toml_value((1, 2)) == "[1, 2]"
    assert toml_key("batch_size") == "batch_size" and toml_key("a b") == '"a b"'
    with pytest.raises(TypeError, match="cannot write"):
        toml_value(object())


def test_a_table_round_trips_through_the_standard_reader() -> None:
    data = {
        "campaign": {"name": "c", "lr": 1e-4, "steps": 3, "on": False, "tags": ["a", "b"]},
        "experiment": {"command": ["python", "train.py"], "env": {"A": "line\nbreak \u00e9\t\\"}},
        "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}, "act": ["relu", "gelu"]},
        "executor": {"additional_parameters": {"mail-type": "END"}, "quoted key": 1},
    }
    text = to_toml(data)
    assert tomllib.loads(text) == data
    assert text.index("[space]\nlr = {") > 0  # the space's tables stay in place, inline
