"""hpc_agent.executors (the registry's loader) and hpc_agent.executors.base (the seam)."""

from __future__ import annotations

import os

import pytest

from hpc_agent.errors import UserError
from hpc_agent.executors import EXECUTOR_KINDS, executor_class, make_executor, resolve_kind
from hpc_agent.executors.base import JobStatus, SubmitRequest, job_name, scrubbed_environ
from hpc_agent.executors.local import LocalExecutor


def test_kinds_resolve_and_make_their_executor() -> None:
    assert set(EXECUTOR_KINDS) == {"local", "slurm"}
    assert resolve_kind("local") == "local" and executor_class("local") is LocalExecutor
    ex = make_executor("local", parallelism=3, poll_interval_s=0.2)
    assert isinstance(ex, LocalExecutor) and ex.describe() == "local (3 at a time)"
    with pytest.raises(UserError, match="--executor 'pbs': expected one of auto, local, slurm"):
        resolve_kind("pbs")


def test_the_seams_data() -> None:
    req = SubmitRequest("ab12", 3, "demo", ("0003-0000",), ("/r/t",), "/q", "/s", 5)
    assert req.job_name == job_name("demo", 3, "ab12") == "hpca.demo.g0003.ab12"
    assert JobStatus("1", "pending").alive and JobStatus("1", "running").alive
    assert not JobStatus("1", "gone").alive


def test_secrets_are_out_of_the_environment_only_while_submitting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_KEY", "s3cret")
    with scrubbed_environ(["MY_SECRET_KEY", "NOT_SET_AT_ALL"]):
        assert "MY_SECRET_KEY" not in os.environ
    assert os.environ["MY_SECRET_KEY"] == "s3cret"
