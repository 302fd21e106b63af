"""hpc_agent.config.scaffold: ``hpc-agent init``: a campaign folder from a shipped example."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.config.scaffold import examples_root, scaffold
from hpc_agent.config.spec import load_spec
from hpc_agent.errors import UserError


def test_a_new_campaign_is_a_valid_copy_named_as_asked(tmp_path: Path) -> None:
    assert (examples_root() / "quickstart" / "campaign.toml").is_file()
    dest = scaffold("my-first", "quickstart", tmp_path)
    assert dest == tmp_path / "my-first"
    spec = load_spec(dest)
    assert spec.campaign.name == "my-first"
    assert not (dest / "results").exists() and not (dest / "__pycache__").exists()


def test_bad_names_templates_and_existing_folders_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="campaign name 'a b'"):
        scaffold("a b", "quickstart", tmp_path)
    with pytest.raises(UserError, match="--template 'nope': no such template"):
        scaffold("x", "nope", tmp_path)
    scaffold("x", "quickstart", tmp_path)
    with pytest.raises(UserError, match="already exists"):
        scaffold("x", "quickstart", tmp_path)
