"""What the live page shows on demand: a trial's page, the champion's lineage, the analyses.

Each is built from the :class:`~hpc_agent.serve.feed.Feed`'s state and the files of the
results folder, read only; the trial page is ``hpc-agent show``'s gathering
(:func:`hpc_agent.outputs.show.view_of`) as data. Held-out metrics (``[campaign] holdout_metrics``)
are left out of a trial's curves unless the page asks for them.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from hpc_agent.job.fileio import tail_text
from hpc_agent.serve.feed import TAIL_BYTES, Feed, _num, config_row, trial_row

MAX_CURVE_POINTS = 2000  # a curve is thinned to this many points for the page
STDERR_LINES = 60


def trial_page(feed: Feed, trial_id: str, holdout: bool = False) -> dict[str, Any] | None:
    """Everything about one trial (None: no such trial): params, hypothesis, verdict, patch
    diff, curves, stderr tail, provenance, logs and the command that reruns it."""
    from hpc_agent.outputs.show import view_of

    feed.refresh()
    with feed.lock:
        st = feed.state
        if trial_id not in st.trials:
            return None
        v = view_of(feed.paths, st, trial_id)
        config = st.config(v.record.config_id)
    hidden = set(st.spec.get("campaign", {}).get("holdout_metrics", []) or [])
    curves = {k: _thin(pts) for k, pts in v.curves.items() if holdout or k not in hidden}
    tp = feed.paths.trial(trial_id)
    results = str(feed.paths.root)
    return {
        "trial": trial_row(v.record),
        "config": config_row(config) if config else None,
        "metric": v.metric,
        "mode": v.mode,
        "planner": v.planner,
        "is_best": v.is_best,
        "params": dict(v.record.params),
        "hypothesis": v.record.hypothesis,
        "parent": v.record.parent,
        "verdict": v.verdict,
        "again": list(v.again),
        "status": dict(v.status or {}),
        "patch": v.patch,
        "curves": curves,
        "holdout_hidden": sorted(hidden & set(v.curves)) if not holdout else [],
        "metric_problem": v.metric_problem,
        "stderr_tail": tail_text(tp.stderr, STDERR_LINES, TAIL_BYTES),
        "attempts": [dict(a) for a in v.attempts],
        "run": v.run,
        "run_record": {k: x for k, x in (v.run_record or {}).items() if k != "diff"},
        "logs": [list(pair) for pair in v.logs],
        "folder": str(v.folder),
        "rerun": f"hpc-agent rerun {shlex.quote(results)} {trial_id}",
        "show": f"hpc-agent show {shlex.quote(results)} {trial_id}",
    }


def _thin(points: Sequence[tuple[float, float]]) -> list[list[float | None]]:
    """At most :data:`MAX_CURVE_POINTS` points (every k-th, the last one kept), NaN as null."""
    step = max(1, -(-len(points) // MAX_CURVE_POINTS))
    kept = list(points[::step])
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return [[x, _num(y)] for x, y in kept]


def lineage_page(feed: Feed) -> dict[str, Any]:
    """The champion's lineage: each kept step, oldest first, with its own diff against its
    parent's code (computed again only when the champion changed)."""
    from hpc_agent.config.spec import spec_from_dict
    from hpc_agent.science.lineage import champion_lineage

    feed.refresh()
    with feed.lock:
        st = feed.state
        mode = str(st.spec.get("campaign", {}).get("mode", "min"))
        champ = st.champion(mode)
        key = (champ.config_id, champ.objective) if champ else None
        cached = feed.cache.get("lineage")
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        try:
            steps = champion_lineage(feed.paths, st, spec_from_dict(st.spec))
        except Exception as e:  # a spec this version cannot read: say why
            return {"steps": [], "error": str(e)}
    page = {
        "steps": [
            {
                "trial": s.trial_id,
                "gen": s.generation,
                "source": s.source,
                "hypothesis": s.hypothesis,
                "params": dict(s.params),
                "objective": _num(s.objective),
                "n": s.n,
                "parent": s.parent,
                "diff": s.diff,
            }
            for s in steps
        ]
    }
    feed.cache["lineage"] = (key, page)
    return page


def analyses_page(feed: Feed, after: int = -1) -> dict[str, Any]:
    """Every analysis.md of a generation after ``after``, rendered to HTML (raw HTML in
    them escaped), newest first; each is read and rendered once (it is written once)."""
    from markdown_it import MarkdownIt

    feed.refresh()
    with feed.lock:
        analyzed = [g for g, r in feed.state.generations.items() if r.analyzed and g > after]
    cache: dict[int, str] = feed.cache.setdefault("analyses", {})
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    out = []
    for g in sorted(analyzed, reverse=True):
        if g not in cache:
            try:
                text = feed.paths.analysis(g).read_text(encoding="utf-8", errors="replace")
            except (FileNotFoundError, NotADirectoryError):
                continue
            cache[g] = md.render(text)
        out.append({"gen": g, "html": cache[g]})
    return {"analyses": out}
