#!/usr/bin/env bash
# Install hpc-agent with the example dependencies and run the quickstart campaign.
#   bash scripts/quickstart.sh
# What it does, step by step (run these by hand if you prefer):
#   python3 -m venv .venv
#   .venv/bin/pip install -e '.[examples]' torch==2.13.0
#   .venv/bin/hpc-agent run examples/quickstart --executor local
#   .venv/bin/hpc-agent status results/quickstart
#   .venv/bin/hpc-agent export results/quickstart --format markdown --top 5
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv support separately
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 has no venv module: sudo apt-get install python3-venv" >&2; exit 2
    fi
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch is pinned: this version's CPU wheel installs quickly (an unpinned torch may pull a CUDA build)
"$VENV/bin/python" -m pip install -q -e '.[examples]' 'torch==2.13.0'

# local processes, whatever this machine has; on a cluster: bash scripts/quickstart.sh --executor slurm
"$VENV/bin/hpc-agent" run examples/quickstart --executor local "$@"
"$VENV/bin/hpc-agent" status results/quickstart
"$VENV/bin/hpc-agent" export results/quickstart --format markdown --top 5
