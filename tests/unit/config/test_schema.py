"""One declaration per input (hpc_agent.config.schema): each section of campaign.toml, the space's
parameters and the SLURM profile are declared once; pydantic reads them (strict types, ranges,
unknown keys refused) and its errors come back in the project's words. The keys of issues 20 and
18b are accepted without changing the hash of a spec that leaves them out, and reading a results
folder never imports pydantic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_agent.config.profiles import Profile, load_profile
from hpc_agent.config.schema import json_schema, validated
from hpc_agent.config.spec import (
    CampaignSection,
    ExperimentSection,
    PlannerSection,
    RigorSection,
    StopSection,
    journaled_spec,
    parse_spec,
    spec_from_dict,
)
from hpc_agent.errors import SpecError, UserError


def spec_data(**sections: dict[str, object]) -> dict[str, object]:
    data: dict[str, object] = {
        "campaign": {"name": "a", "metric": "loss"},
        "experiment": {"command": "python train.py"},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    }
    data.update(sections)
    return data


@pytest.mark.parametrize(
    ("section", "table", "message", "fix"),
    [
        (
            CampaignSection,
            {"name": "a", "metric": "m", "batch_size": 0},
            "[s] batch_size = 0: expected an integer >= 1",
            "whole number such as 4",
        ),
        (
            CampaignSection,
            {"name": "a", "metric": "m", "seed": True},
            "[s] seed = True: expected an integer",
            "set seed to an integer",
        ),
        (
            CampaignSection,
            {"name": "a", "metric": "m", "mode": "minimize"},
            "expected one of ['min', 'max']",
            'set mode = "min"',
        ),
        (CampaignSection, {"metric": "m"}, "[s]: missing name", 'add name = "my-campaign"'),
        (
            CampaignSection,
            {"name": "a", "metric": "m", "seeds": [1, 1]},
            "seeds = [1, 1]: seeds repeat",
            None,
        ),
        (
            CampaignSection,
            {"name": "a", "metric": "m", "report_metrics": [3]},
            "report_metrics: 3 is not a string",
            "report_metrics",
        ),
        (RigorSection, {"alpha": 1}, "[s] alpha = 1.0: expected a level in (0, 1)", "alpha = 0.05"),
        (
            StopSection,
            {"max_hours": float("inf")},
            "[s] max_hours = inf: expected a finite number",
            "0: no limit",
        ),
        (StopSection, {"target": "x"}, "[s] target = 'x': expected a number", "set target to a number"),
        (
            PlannerSection,
            {"temperature": 3},
            "[s] temperature = 3.0: expected a number in [0, 2]",
            "in [0, 2]",
        ),
    ],
)
def test_errors_name_the_key_the_value_and_the_fix(
    section: type, table: dict[str, object], message: str, fix: str | None
) -> None:
    with pytest.raises(SpecError) as err:
        validated(section, table, "[s]")
    assert message in err.value.message, err.value.message
    assert fix is None or fix in (err.value.fix or ""), err.value.fix


def test_unknown_keys_are_all_listed_with_the_valid_ones() -> None:
    with pytest.raises(SpecError) as err:
        validated(StopSection, {"max_trails": 3, "targte": 1.0}, "[stop]")
    assert "unknown keys ['max_trails', 'targte']" in err.value.message
    assert "'max_trials'" in err.value.message and "'target'" in err.value.message
    assert err.value.fix == "remove or rename 'max_trails'"


def test_a_number_is_read_as_a_float_and_strings_are_not_numbers() -> None:
    got = validated(ExperimentSection, {"command": "x", "time_budget_s": 60}, "[experiment]")
    assert got.time_budget_s == 60.0 and isinstance(got.time_budget_s, float)
    with pytest.raises(SpecError, match=r"time_budget_s = '60': expected a number"):
        validated(ExperimentSection, {"command": "x", "time_budget_s": "60"}, "[experiment]")


def test_the_keys_of_issues_20_and_18b_are_declared(tmp_path: Path) -> None:
    plain = parse_spec(spec_data(), tmp_path)
    given = parse_spec(
        spec_data(rigor={"noise_runs": 5, "replicate": False}, planner={"edit_format": "whole_file"}),
        tmp_path,
    )
    assert (given.rigor.noise_runs, given.rigor.replicate, given.planner.edit_format) == (
        5,
        False,
        "whole_file",
    )
    assert (plain.rigor.noise_runs, plain.rigor.replicate, plain.planner.edit_format) == (
        3,
        True,
        "search_replace",
    )
    # left out at their defaults: a spec without them hashes as it did before they existed
    assert "noise_runs" not in plain.to_dict()["rigor"] and "edit_format" not in plain.to_dict()["planner"]
    assert given.to_dict()["rigor"]["noise_runs"] == 5 and given.spec_hash() != plain.spec_hash()
    assert spec_from_dict(given.to_dict()) == given
    for bad, words in [
        ({"rigor": {"noise_runs": 0}}, "[rigor] noise_runs = 0: expected an integer >= 1"),
        ({"rigor": {"replicate": "yes"}}, "[rigor] replicate = 'yes': expected true or false"),
        ({"planner": {"edit_format": "patch"}}, "[planner] edit_format = 'patch': expected one of"),
    ]:
        with pytest.raises(SpecError) as err:
            parse_spec(spec_data(**bad), tmp_path)
        assert words in err.value.message, err.value.message


def test_command_line_overrides_are_checked_by_the_same_declaration(tmp_path: Path) -> None:
    spec = parse_spec(spec_data(), tmp_path)
    assert spec.with_overrides(batch_size=2, schedule="async").campaign.batch_size == 2
    with pytest.raises(
        SpecError, match=r"\[campaign\] schedule = 'later': expected one of \['sync', 'async'\]"
    ):
        spec.with_overrides(schedule="later")
    assert spec.with_overrides(profile="./site.toml").executor.profile == "./site.toml"  # as given


def test_a_journaled_spec_is_rebuilt_without_checks_equal_to_the_checked_one(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("pass\n")
    spec = parse_spec(
        spec_data(
            campaign={"name": "a", "metric": "loss", "seeds": 2, "report_metrics": ["acc"]},
            experiment={"command": ["python", "train.py"], "env": {"A": 1}, "editable": ["train.py"]},
            space={"x": {"type": "int", "low": 1, "high": 9, "step": 2, "default": 3}, "act": ["a", "b"]},
            executor={"kind": "slurm", "partition": "gpu"},
            stop={"target": 0.1},
        ),
        tmp_path,
    )
    again = journaled_spec(spec.to_dict())
    assert again == spec and again.spec_hash() == spec.spec_hash()
    with pytest.raises(TypeError):
        journaled_spec({**spec.to_dict(), "stop": {"max_trails": 3}})


def test_the_profile_is_one_declaration_too() -> None:
    assert validated(Profile, {"setup": "module load x"}, "p", error=UserError).setup == ("module load x",)
    with pytest.raises(UserError) as err:
        load_profile("", {"gres": "gpu 1"})
    assert (
        "[executor] in campaign.toml: gres = 'gpu 1': expected a string without spaces" in err.value.message
    )
    assert err.value.fix == "correct gres (see the commented profiles in slurm_templates/)"


def test_the_json_schema_comes_from_the_same_declaration() -> None:
    schema = json_schema(CampaignSection)
    assert schema["additionalProperties"] is False and schema["required"] == list(schema["properties"])
    assert "title" not in schema and "default" not in schema["properties"]["batch_size"]
    assert schema["properties"]["batch_size"]["minimum"] == 1
    assert schema["properties"]["mode"]["enum"] == ["min", "max"]
    assert (
        json_schema(RigorSection)["properties"]["alpha"] | {"exclusiveMinimum": 0, "exclusiveMaximum": 1}
        == (json_schema(RigorSection)["properties"]["alpha"])
    )


def test_reading_a_results_folder_does_not_import_pydantic() -> None:
    """``hpc-agent status`` stays quick: the declarations import without pydantic, which is
    imported on the first validation only."""
    code = (
        "import sys, hpc_agent.cli, hpc_agent.outputs.status, hpc_agent.store.results;"
        "assert 'pydantic' not in sys.modules, 'imported';"
        "from hpc_agent.config.spec import spec_from_dict;"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
