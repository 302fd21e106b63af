"""Every path of a results folder, in one place.

The layout is a contract (docs/architecture.md, "On disk"): users read these files, tests and
benchmarks rely on them, and the journal stores trial ids rather than paths so that a results
folder can be moved (or rsync'ed off the cluster) and still be read.

```
results/<name>/
  campaign.toml  journal.jsonl  llm.jsonl  trials.parquet  driver.lock  driver.log
  report.md  report.html  plots/  provenance/run-0002.json  provenance/run-0002.diff
  gen-0003/plan.json  gen-0003/analysis.md
  gen-0003/ended/<trial>.<token>.<attempt>   empty: the runners announce the ends of attempts
  gen-0003/trials/<trial-id>/  params.json patch.diff code/ metrics.jsonl status.json
                               launch.json assignment.json stdout.log stderr.log checkpoint/
                               provenance.json
                               (the trial folder's contract: hpc_agent.job.trial)
  gen-0003/submissions/<token>/  local: what one submission ran (queue.json, lanes, claims)
  submitit/<lane pid>/           local: submitit's pickles and the lane's logs
  submitit/g0003.<token>/        SLURM: array.sh, array.tasks.json, <array>_<task>_0_log.out/.err
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpc_agent.job.trial import ENDED, TRIALS, TrialPaths, generation_of, trial_id

__all__ = ["ResultsPaths", "TrialPaths", "array_folder_name", "generation_of", "trial_id"]


def array_folder_name(generation: int, token: str) -> str:
    """``g0003.<token>``: the folder of one SLURM submission under ``submitit/``."""
    return f"g{generation:04d}.{token}"


@dataclass(frozen=True)
class ResultsPaths:
    """The files of one campaign's results folder."""

    root: Path
    _trials: dict[str, TrialPaths] = field(default_factory=dict, compare=False, repr=False)  # asked before

    @property
    def spec(self) -> Path:
        return self.root / "campaign.toml"

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    @property
    def llm_log(self) -> Path:
        return self.root / "llm.jsonl"

    @property
    def trials_table(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def driver_lock(self) -> Path:
        return self.root / "driver.lock"

    @property
    def driver_log(self) -> Path:
        return self.root / "driver.log"

    @property
    def base(self) -> Path:
        """The campaign's snapshot of the editable files, taken at its first run."""
        return self.root / "base"

    @property
    def evaluator(self) -> Path:
        """The fixed evaluator's folder: the workdir with the unpatched editable files and
        read-only copies of its small text files (``[experiment] evaluate`` runs there)."""
        return self.root / "evaluator"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def provenance(self) -> Path:
        """Per driver run: the experiment code's git commit, dirty state and diff
        (:mod:`hpc_agent.job.provenance`)."""
        return self.root / "provenance"

    def run_provenance(self, run: int, suffix: str = ".json") -> Path:
        """``provenance/run-0002.json`` (or ``.diff``): what driver run ``run`` ran."""
        return self.provenance / f"run-{run:04d}{suffix}"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def generation(self, generation: int) -> Path:
        """A generation's folder, ``gen-0003``."""
        return self.root / f"gen-{generation:04d}"

    def plan(self, generation: int) -> Path:
        """Generation's plan.json: its proposals, the planner's note and reasoning."""
        return self.generation(generation) / "plan.json"

    def analysis(self, generation: int) -> Path:
        """Generation's analysis.md."""
        return self.generation(generation) / "analysis.md"

    def array_folder(self, generation: int, token: str) -> Path:
        """SLURM: one submission's scripts, task lists and job logs (``submitit/g0003.<token>``)."""
        return self.submitit / array_folder_name(generation, token)

    def ended(self, generation: int) -> Path:
        """Where the generation's runners announce the ends of attempts (``gen-0003/ended``)."""
        return self.generation(generation) / ENDED

    def submission(self, generation: int, token: str) -> Path:
        """Local executor: what one submission ran (queue.json, lanes, claims)."""
        return self.generation(generation) / "submissions" / token

    def trial_dir(self, trial: str) -> str:
        """The trial's folder as a string (no pathlib: for the driver's hot paths)."""
        return f"{self.root}/gen-{generation_of(trial):04d}/{TRIALS}/{trial}"

    def trial(self, trial: str) -> TrialPaths:
        """The trial's folder (``gen-0003/trials/0003-0007``): built from strings, since the
        driver asks for thousands of them."""
        found = self._trials.get(trial)
        if found is None:
            found = self._trials[trial] = TrialPaths(Path(self.trial_dir(trial)))
        return found
