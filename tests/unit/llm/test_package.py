"""hpc_agent.llm (the package): its public names, and that importing it loads no openai."""

from __future__ import annotations

import subprocess
import sys

import hpc_agent.llm as llm


def test_the_package_exports_what_it_lists() -> None:
    for name in llm.__all__:
        assert getattr(llm, name) is not None, name
    assert llm.parse_json_reply('{"a": 1}') == ({"a": 1}, "")
    assert llm.redact_url("http://u:p@h") == "http://***@h"


def test_importing_the_client_does_not_load_openai() -> None:
    code = "import sys, hpc_agent.llm; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
