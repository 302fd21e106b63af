"""The API experiment code calls. Standard library only: importing it costs nothing.

```python
import hpc_agent

cfg = hpc_agent.params({"lr": 1e-3, "hidden": 64})   # defaults, overridden by the trial's params
for epoch in range(epochs):
    ...
    hpc_agent.log(step=epoch, val_loss=val_loss, val_acc=val_acc)
    if hpc_agent.time_left() < 5:                      # the budget is enforced: stop in time
        break
torch.save(state, hpc_agent.checkpoint_dir() / "last.pt")
```

Outside a campaign (``python train.py`` by hand) the same calls work: ``params`` returns the
defaults, ``log`` prints the line, ``checkpoint_dir`` is ``./checkpoint``. Code that does not
want to import hpc_agent can read and write the files named by the environment instead:

=============================  ==============================================
``HPC_AGENT_PARAMS``           path of params.json (the trial's configuration)
``HPC_AGENT_METRICS``          path of metrics.jsonl: append one JSON object a line
``HPC_AGENT_CHECKPOINT_DIR``   a folder kept across requeues of the same trial
``HPC_AGENT_TIME_BUDGET_S``    seconds the trial may run before SIGTERM
``HPC_AGENT_TRIAL_DIR``        the trial's folder
``HPC_AGENT_FIDELITY``         1 for the search; a confirmation's budget
                               multiplier (``[confirm] budget_multiplier``)
=============================  ==============================================
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

_metrics_file: IO[str] | None = None
_metrics_path: str | None = None


def params(defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trial's parameters, on top of ``defaults`` (which is all you get outside a campaign)."""
    out = dict(defaults or {})
    path = os.environ.get("HPC_AGENT_PARAMS")
    if path:
        with open(path, encoding="utf-8") as f:
            out.update(json.load(f))
    return out


def log(step: int | None = None, **metrics: Any) -> None:
    """Append one metrics line: ``{"step": step, "val_loss": ..., ...}``, flushed at once.

    Values must be numbers (Python, NumPy or 0-d tensor scalars are converted with ``float``).
    A non-finite value is written as ``NaN``/``Infinity``: a diverged run is data, not a crash.
    """
    record: dict[str, Any] = {}
    if step is not None:
        record["step"] = int(step)
    for key, value in metrics.items():
        record[key] = _number(key, value)
    record["time"] = round(time.time(), 3)
    line = json.dumps(record, allow_nan=True) + "\n"
    f = _open_metrics()
    if f is None:
        sys.stdout.write("metrics " + line)
        sys.stdout.flush()
        return
    f.write(line)
    f.flush()


def _number(key: str, value: Any) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "item"):  # numpy scalar, 0-d torch tensor
        value = value.item()
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"hpc_agent.log: {key}={value!r} is not a number") from None
    return x


def _open_metrics() -> IO[str] | None:
    global _metrics_file, _metrics_path
    path = os.environ.get("HPC_AGENT_METRICS")
    if not path:
        return None
    if _metrics_file is None or _metrics_path != path:
        _metrics_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        _metrics_path = path
    return _metrics_file


def checkpoint_dir() -> Path:
    """A folder that survives requeues of this trial: save here, resume from here."""
    p = Path(os.environ.get("HPC_AGENT_CHECKPOINT_DIR", "checkpoint"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def trial_dir() -> Path | None:
    """The trial's folder (``HPC_AGENT_TRIAL_DIR``), or None outside a campaign."""
    d = os.environ.get("HPC_AGENT_TRIAL_DIR")
    return Path(d) if d else None


def seed() -> int:
    """The trial's seed (each proposal runs once per seed of ``[campaign] seeds``)."""
    return int(os.environ.get("HPC_AGENT_SEED", "0"))


def time_budget_s() -> float | None:
    """The trial's time budget in seconds (``HPC_AGENT_TIME_BUDGET_S``), or None outside a campaign."""
    b = os.environ.get("HPC_AGENT_TIME_BUDGET_S")
    return float(b) if b else None


def fidelity() -> float:
    """How much budget this run has relative to the search's trials: 1.0, or more for a
    confirmation run (``[confirm] budget_multiplier``; ``HPC_AGENT_FIDELITY``). The budget
    itself (``time_budget_s``) is already scaled: read this to scale what is not time-based
    (a step count, an evaluation set)."""
    return float(os.environ.get("HPC_AGENT_FIDELITY", "1") or 1)


def time_left() -> float:
    """Seconds until the runner sends SIGTERM (``inf`` outside a campaign)."""
    budget = time_budget_s()
    start = os.environ.get("HPC_AGENT_START_TIME")
    if budget is None or start is None:
        return math.inf
    return budget - (time.time() - float(start))
