"""What one declaration per input (issue 19, hpc_agent.config.schema) costs at start-up.

    python bench/bench_config.py [--baseline REF] [--reps 7]

Each case is a fresh interpreter, timed from outside; the cases are alternated and each figure
is the median of ``--reps`` runs, next to the bare interpreter (``python -c pass``) measured in
the same run. ``--baseline REF`` (a git commit, e.g. the one before the declarations) runs
``hpc-agent status`` and the spec's import with that commit's ``hpc_agent/`` too (extracted with
``git archive`` into a temporary folder), alternated with this checkout's.

The cases: importing the configuration (no pydantic: it is imported on the first validation);
importing pydantic's model machinery (what the import would cost if the sections were pydantic
models); a first validation (load_spec of examples/quickstart: pydantic imported and the models
built); ``hpc-agent status`` on a small results folder (the journal of tests/fixtures, 16
trials), which rebuilds the journaled spec without checks and never imports pydantic.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(code: list[str], pythonpath: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *code], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def extract(ref: str, into: Path) -> Path:
    """``hpc_agent/`` as of ``ref``, into a folder of its own."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref, "hpc_agent"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "src", filter="data")
    return into / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="", help="a git commit to compare with (its hpc_agent/)")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        results.mkdir()
        shutil.copy(ROOT / "tests" / "fixtures" / "journal-0.1.0.jsonl", results / "journal.jsonl")
        status = ["-m", "hpc_agent", "status", str(results)]
        spec = ["-c", "import hpc_agent.config.spec"]
        quickstart = ROOT / "examples" / "quickstart"
        first = f"from hpc_agent.config.spec import load_spec; load_spec({str(quickstart)!r})"
        cases: dict[str, tuple[list[str], Path]] = {
            "bare interpreter": (["-c", "pass"], ROOT),
            "import hpc_agent.config.spec": (spec, ROOT),
            "import pydantic's models": (["-c", "import pydantic.main, pydantic.dataclasses"], ROOT),
            "first validation (load_spec)": (["-c", first], ROOT),
            "hpc-agent status": (status, ROOT),
        }
        if args.baseline:
            old = extract(args.baseline, Path(tmp))
            cases[f"import hpc_agent.config.spec @ {args.baseline}"] = (spec, old)
            cases[f"hpc-agent status @ {args.baseline}"] = (status, old)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.reps):
            for name, (code, path) in cases.items():
                times[name].append(timed(code, path))
    bare = statistics.median(times["bare interpreter"])
    out = {}
    print(f"{'case':48s} {'median ms':>10s} {'minus bare':>11s}")
    for name, values in times.items():
        med = statistics.median(values)
        out[name] = {"median_s": med, "minus_bare_s": med - bare, "runs": values}
        print(f"{name:48s} {med * 1000:10.0f} {(med - bare) * 1000:11.0f}")
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "config.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
