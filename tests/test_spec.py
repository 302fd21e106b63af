"""campaign.toml validation: a corpus of bad specs, each refused with a message that names the
key and the fix, exit code 2, and nothing written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpc_agent.config.spec import load_spec, parse_spec, spec_from_dict
from hpc_agent.config.toml import to_toml
from hpc_agent.errors import SpecError

GOOD = """
[campaign]
name = "demo"
metric = "loss"
generations = 2
batch_size = 3

[experiment]
command = "python train.py"
editable = ["train.py"]

[space]
lr = { type = "float", low = 1e-4, high = 1e-1, log = true }
width = { type = "int", low = 16, high = 256, step = 16 }
act = ["relu", "tanh"]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    p = tmp_path / "campaign.toml"
    p.write_text(textwrap.dedent(text))
    return p


def test_good_spec_parses_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.name == "demo"
    assert spec.campaign.mode == "min" and spec.campaign.objective == "last"
    assert spec.experiment.command == ("python", "train.py")
    assert spec.experiment.workdir == str(tmp_path.resolve())
    assert spec.space.names == ("lr", "width", "act")
    assert spec.space["act"].kind == "choice"
    assert spec.campaign.batch_trials == 3
    assert spec.experiment.job_timeout_min >= 6  # 300 s budget + grace + overhead


def test_folder_or_file_both_work(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    assert load_spec(tmp_path).name == load_spec(tmp_path / "campaign.toml").name


def test_round_trip_through_dict_and_toml(tmp_path: Path) -> None:
    import tomllib

    spec = load_spec(write(tmp_path, GOOD))
    again = spec_from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    assert again.identity_hash() == spec.identity_hash()
    reread = spec_from_dict(tomllib.loads(to_toml(spec.to_dict())))
    assert reread.spec_hash() == spec.spec_hash()


def test_identity_ignores_operational_values(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    longer = spec.with_overrides(generations=10, batch_size=8, planner="random", executor="local")
    assert longer.identity_hash() == spec.identity_hash()
    assert longer.spec_hash() != spec.spec_hash()


def test_seeds_expand_trials(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD.replace("batch_size = 3", "batch_size = 3\nseeds = 2")))
    assert spec.campaign.seeds == (0, 1)
    assert spec.campaign.batch_trials == 6


# Each case: (what to change in GOOD, a fragment the message must contain).
BAD = [
    ('name = "demo"\nmetric = "loss"\nname', "malformed TOML"),
    ("generations = 2", "unknown key ['generatons']", "generatons = 2"),
    ("[space]", "unknown section ['spaces']", "[spaces]"),
    (
        'lr = { type = "float", low = 1e-4, high = 1e-1, log = true }',
        "low (0.5) > high (0.1)",
        'lr = { type = "float", low = 0.5, high = 0.1 }',
    ),
    (
        'lr = { type = "float", low = 1e-4, high = 1e-1, log = true }',
        "log scale needs low > 0",
        'lr = { type = "float", low = 0.0, high = 0.1, log = true }',
    ),
    ('act = ["relu", "tanh"]', "values must be a non-empty list", "act = []"),
    ('act = ["relu", "tanh"]', "unknown key(s) ['choices']", 'act = { type = "choice", choices = ["a"] }'),
    (
        'act = ["relu", "tanh"]',
        "type 'categorical' is not one of",
        'act = { type = "categorical", values = ["a"] }',
    ),
    (
        'width = { type = "int", low = 16, high = 256, step = 16 }',
        "integer bounds",
        'width = { type = "int", low = 1.5, high = 256 }',
    ),
    ('metric = "loss"', "missing metric", ""),
    ('name = "demo"', "expected letters, digits", 'name = "my campaign!"'),
    ('metric = "loss"', "expected one of ['min', 'max']", 'metric = "loss"\nmode = "minimize"'),
    ("batch_size = 3", "batch_size = 0: expected an integer >= 1", "batch_size = 0"),
    ("generations = 2", "generations = 'two': expected an integer", 'generations = "two"'),
    ('command = "python train.py"', "missing command", ""),
    ('editable = ["train.py"]', "is not a file in workdir", 'editable = ["nope.py"]'),
    ('editable = ["train.py"]', "without '..'", 'editable = ["../train.py"]'),
    (
        'command = "python train.py"',
        "time_budget_s = -1.0",
        'command = "python train.py"\ntime_budget_s = -1',
    ),
    (
        'command = "python train.py"',
        "shorter than time_budget_s",
        'command = "python train.py"\ntime_budget_s = 600\ntimeout_min = 5',
    ),
    (
        'command = "python train.py"',
        "HPC_AGENT_* variables are set by hpc-agent",
        'command = "python train.py"\nenv = { HPC_AGENT_SEED = "1" }',
    ),
    ("batch_size = 3", "seeds repeat", "batch_size = 3\nseeds = [1, 1]"),
    ("batch_size = 3", "set goal or goal_file, not both", 'batch_size = 3\ngoal = "x"\ngoal_file = "g.md"'),
    ('act = ["relu", "tanh"]', "reserved", "seed = [1, 2]"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[1][:40] for c in BAD])
def test_bad_spec_is_refused_with_the_key_named(tmp_path: Path, case: tuple[str, ...]) -> None:
    old, fragment = case[0], case[1]
    new = case[2] if len(case) > 2 else ""
    if fragment == "malformed TOML":
        text = GOOD.replace('name = "demo"', 'name = "demo"\nname')
    else:
        assert old in GOOD, old
        text = GOOD.replace(old, new, 1)
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text))
    assert fragment in err.value.message, err.value.message


def test_unknown_planner_key_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, GOOD + '\n[planner]\nmodle = "x"\n'))
    assert (
        "modle" in err.value.message
        and "valid keys are" in err.value.message
        and "'model'" in err.value.message
    )
    assert err.value.fix and "modle" in err.value.fix


def test_missing_section(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing section \[experiment\]"):
        parse_spec({"campaign": {"name": "a", "metric": "m"}, "space": {"x": [1, 2]}}, tmp_path)
    # [space] is optional (issue 18: a code-first campaign), but then files must be editable
    with pytest.raises(SpecError, match=r"no \[space\] and no editable file") as err:
        parse_spec({"campaign": {"name": "a", "metric": "m"}, "experiment": {"command": "x"}}, tmp_path)
    assert err.value.fix and "editable" in err.value.fix


def test_a_code_first_spec_round_trips(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("LR = 0.1\n")
    data = {
        "campaign": {"name": "a", "metric": "m"},
        "experiment": {
            "command": "python train.py",
            "editable": ["train.py"],
            "parse": {"m": "^m: (\\S+)"},
            "evaluate": "python prepare.py --evaluate",
        },
    }
    spec = parse_spec(data, tmp_path)
    assert spec.code_first and spec.space.defaults() == {}
    assert spec.evaluated_metrics == ("m",)
    assert spec.experiment.parse == (("m", "^m: (\\S+)"),)
    again = spec_from_dict(spec.to_dict())
    assert again == spec and again.identity_hash() == spec.identity_hash()
    assert spec.experiment.job_timeout_min > spec.experiment.time_budget_s / 60 + 10  # + the evaluator's
    # a spec without the new keys hashes as it did: they are left out at their defaults
    plain = parse_spec(
        {**data, "experiment": {"command": "python train.py", "editable": ["train.py"]}}, tmp_path
    )
    assert not {"parse", "parse_stderr", "evaluate", "evaluate_time_s"} & set(plain.to_dict()["experiment"])


def test_goal_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "program.md").write_text("Make it fast.\n")
    spec = load_spec(
        write(tmp_path, GOOD.replace("batch_size = 3", 'batch_size = 3\ngoal_file = "program.md"'))
    )
    assert spec.campaign.goal == "Make it fast."


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("batch_size = 3", "batch_size = 0"),
        GOOD.replace("[space]", '[space]\nbad = { type = "float", low = 1, high = 0 }'),
        "this is not toml = = =",
    ],
)
def test_cli_bad_spec_exit_2_no_traceback_nothing_written(tmp_path: Path, cli_run, text: str) -> None:  # type: ignore[no-untyped-def]
    camp = tmp_path / "camp"
    camp.mkdir()
    write(camp, text)
    result = cli_run("run", str(camp), "--executor", "local", code=2)
    assert "error:" in result.output and "fix:" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "results").exists()
