"""hpc_agent.config.spec: campaign.toml into frozen dataclasses; its round trip through
to_dict / spec_from_dict / to_toml; the two hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from conftest import write_campaign

from hpc_agent.config.spec import load_spec, resolve_spec_path, spec_from_dict
from hpc_agent.config.toml import to_toml
from hpc_agent.errors import SpecError


def test_the_spec_round_trips_through_its_dict_and_toml(tmp_path: Path) -> None:
    spec = load_spec(write_campaign(tmp_path / "c", generations=3, batch_size=5))
    assert (spec.campaign.generations, spec.campaign.batch_size, spec.name) == (3, 5, "tiny")
    again = spec_from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict() and again.spec_hash() == spec.spec_hash()
    assert spec_from_dict(tomllib.loads(to_toml(spec.to_dict()))).to_dict() == spec.to_dict()
    assert again.source == "" and spec.source.endswith("campaign.toml")  # where it came from


def test_identity_hash_ignores_what_keeps_trials_comparable(tmp_path: Path) -> None:
    spec = load_spec(write_campaign(tmp_path / "c"))
    more = spec.with_overrides(generations=9)
    assert more.campaign.generations == 9
    assert more.identity_hash() == spec.identity_hash() and more.spec_hash() != spec.spec_hash()
    other = load_spec(write_campaign(tmp_path / "d", metric="acc"))
    assert other.identity_hash() != spec.identity_hash()


def test_resolve_spec_path_takes_the_folder_or_the_file(tmp_path: Path) -> None:
    camp = write_campaign(tmp_path / "c")
    assert resolve_spec_path(camp) == resolve_spec_path(camp / "campaign.toml") == camp / "campaign.toml"
    with pytest.raises(SpecError):
        resolve_spec_path(tmp_path / "nowhere")


def test_an_unknown_key_names_the_valid_ones(tmp_path: Path) -> None:
    camp = write_campaign(tmp_path / "c", campaign="generatons = 3")
    with pytest.raises(SpecError) as e:
        load_spec(camp)
    text = str(e.value) + (e.value.fix or "")
    assert "generatons" in text and "generations" in text
