"""hpc_agent.errors: the errors a user sees, with their exit codes and the message's form."""

from __future__ import annotations

from hpc_agent.errors import CampaignError, HpcAgentError, SpecError, UserError


def test_exit_codes_and_rendering() -> None:
    e = UserError("--seeds 0: expected >= 1", fix="e.g. --seeds 3")
    assert isinstance(e, HpcAgentError) and e.exit_code == 2
    assert e.render() == "--seeds 0: expected >= 1\nfix: e.g. --seeds 3"  # `error: ` is the CLI's
    assert isinstance(SpecError("bad"), UserError) and SpecError("bad").exit_code == 2
    assert CampaignError("no trial completed").exit_code == 1
    assert UserError("plain").render() == "plain"
    assert CampaignError("x", log="/r/driver.log").render() == "x\nlog: /r/driver.log"
