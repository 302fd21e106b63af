"""Where a trial's code came from: its chain of parents back to the campaign's base code.

A trial that edits code edits its parent's version (the champion when it was planned), so a
champion's code is the base plus every change kept along its lineage. :func:`lineage` walks
the chain from the base to a trial and gives each step's own change as a unified diff
against its parent's code (the trials' ``code/`` copies, or ``base/``); ``patch.diff`` in a
trial's folder is the whole change against the base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.edits.patches import unified_diff
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState


@dataclass(frozen=True)
class LineageStep:
    """One trial of a lineage: who proposed what, how it scored (its configuration's mean
    over seeds, ``n`` completed), and its own code change against its parent (``diff``; ""
    when it kept its parent's code)."""

    trial_id: str
    generation: int
    source: str
    hypothesis: str
    params: Mapping[str, Any]
    objective: float | None
    n: int
    parent: str | None
    diff: str


def lineage(
    paths: ResultsPaths, state: CampaignState, trial_id: str, editable: Sequence[str]
) -> list[LineageStep]:
    """The chain from the first ancestor (which edits the base) to ``trial_id``, oldest first."""
    configs = {c.config_id: c for c in state.configs()}
    chain = []
    seen: set[str] = set()
    current: str | None = trial_id
    while current and current in state.trials and current not in seen:
        seen.add(current)
        chain.append(state.trials[current])
        current = state.trials[current].parent
    steps = []
    for t in reversed(chain):
        c = configs.get(t.config_id)
        before = _code(paths, t.parent, editable)
        after = _code(paths, t.trial_id, editable)
        steps.append(
            LineageStep(
                trial_id=t.trial_id,
                generation=t.generation,
                source=t.source,
                hypothesis=t.hypothesis,
                params=dict(t.params),
                objective=c.objective if c else t.objective,
                n=c.n_completed if c else 0,
                parent=t.parent,
                diff=unified_diff(before, after) if t.patch and after else "",
            )
        )
    return steps


def champion_lineage(paths: ResultsPaths, state: CampaignState, spec: CampaignSpec) -> list[LineageStep]:
    """The lineage of the best configuration so far (its first trial); [] before one completes."""
    champ = state.champion(spec.campaign.mode)
    if champ is None:
        return []
    return lineage(paths, state, champ.trial_ids[0], spec.experiment.editable)


def _code(paths: ResultsPaths, trial_id: str | None, editable: Sequence[str]) -> dict[str, str]:
    """The editable files of a trial's code (``base/`` for None); a missing file is left out."""
    root = paths.trial(trial_id).code if trial_id else paths.base
    out = {}
    for name in editable:
        try:
            out[name] = (root / name).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            continue
    return out
