"""hpc_agent.config.profiles: the SLURM profiles of slurm_templates/, validated, overridden."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.config.profiles import (
    Profile,
    available_profiles,
    describe_profiles,
    load_profile,
    profile_path,
    templates_dirs,
)
from hpc_agent.errors import UserError

REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_profiles_are_found_and_all_load() -> None:
    assert templates_dirs()[0] == REPO / "slurm_templates"
    names = available_profiles()
    assert {"cpu", "local", "gpu-gres", "preemptible"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.name == name and p.description, name
    text = describe_profiles()
    assert text.startswith("SLURM cluster profiles") and all(f"  {n}" in text for n in names)


def test_a_profile_file_by_path_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        'description = "mine"\npartition = "gpu"\ngres = "gpu:1"\nadditional_parameters = { nice = 10 }\n'
    )
    assert profile_path(str(f)) == f.resolve()
    p = load_profile(str(f), {"mem_gb": 8})
    assert (p.name, p.partition, p.gres, p.mem_gb, p.extra) == ("mine", "gpu", "gpu:1", 8, {"nice": 10})
    assert p.to_dict() == {
        "description": "mine",
        "partition": "gpu",
        "gres": "gpu:1",
        "mem_gb": 8,
        "additional_parameters": {"nice": 10},
    }
    assert load_profile() == Profile()


def test_unknown_keys_and_bad_names_are_user_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('partiton = "gpu"\n')
    with pytest.raises(UserError) as e:
        load_profile(str(f))
    assert "unknown key ['partiton']" in str(e.value) and "partition" in (e.value.fix or "")
    with pytest.raises(UserError, match=r"--profile nope\.toml: no such file"):
        profile_path("nope.toml")
    with pytest.raises(UserError):
        load_profile("", {"cpus_per_task": "many"})
