#!/usr/bin/env bash
# Install what the tests need, start the local SLURM cluster, run every check.
#   bash scripts/test.sh            (what .ci/run runs; needs root for the SLURM daemons)
# Environment: VENV (default .venv), PYTEST_ARGS (extra pytest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

echo "== install (venv: $VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch is pinned here: this exact version is a CPU wheel available offline
"$VENV/bin/python" -m pip install -q -e '.[dev,examples]' 'torch==2.13.0'
echo "== pdflatex (tests/test_tables.py compiles the LaTeX tables; ~70 s to install on Debian)"
if ! command -v pdflatex >/dev/null && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    texlive-latex-base texlive-latex-recommended >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends texlive-latex-base texlive-latex-recommended >/dev/null; }
fi
echo "== chromium + chromedriver (tests/test_serve_browser.py drives the live page with Selenium)"
if ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    chromium chromium-driver >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends chromium chromium-driver >/dev/null; }
fi
echo "== git (export --format git runs it; tests/test_git_export.py)"
if ! command -v git >/dev/null && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends git >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         --no-install-recommends git >/dev/null; }
fi
echo "== llama.cpp server (the real LLM of tests/test_llm_real.py)"
VENV="$VENV" bash scripts/install-llama.sh

echo "== local SLURM cluster"
bash scripts/local-slurm.sh start
trap 'bash scripts/local-slurm.sh stop || true' EXIT

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check hpc_agent tests bench examples scripts
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
export HPC_AGENT_REQUIRE_SLURM=1   # a SLURM test that cannot run fails instead of skipping
export HPC_AGENT_REQUIRE_LLAMA=1   # so does a real-LLM test whose server cannot start
export HPC_AGENT_REQUIRE_LATEX=1   # and the LaTeX compile test without pdflatex
export HPC_AGENT_REQUIRE_BROWSER=1 # and the live page's test without chromium or selenium
# pytest exit code 5 ("no tests collected") is a failure too: set -e keeps it
"$VENV/bin/python" -m pytest ${PYTEST_ARGS:-} -p no:cacheprovider
