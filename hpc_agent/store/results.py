"""A campaign's results folder: whose it is, and what its journal says.

A results folder belongs to one campaign identity (:meth:`CampaignSpec.identity_hash`: name,
metric, objective, seeds, space, the experiment). :func:`check_results` says whether a spec
may run in a folder (reads only); :func:`open_results` records the spec there (a ``campaign``
event in a new folder, a ``spec`` event when it changed), and is called holding the driver
lock. A journal written by an older hpc-agent is compared as this version would have written
it (new keys filled with their defaults), so an upgrade alone is no spec change.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpc_agent import __version__
from hpc_agent.config.spec import CampaignSpec, spec_from_dict
from hpc_agent.config.toml import to_toml
from hpc_agent.errors import CampaignError, UserError
from hpc_agent.job.fileio import atomic_write_text
from hpc_agent.job.trial import trial_id
from hpc_agent.store import events as ev
from hpc_agent.store.journal import FileLock, Journal, lock_holder, pid_alive
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState, replay

DRIVER_LOCK_STALE_S = 900.0  # a driver touches its lock every 30 s; older than this, it died


def check_results(spec: CampaignSpec, results: Path, force: bool = False) -> list[str]:
    """Is ``results`` this campaign's folder (or a new one)? Reads only. Returns what is worth
    saying (spec changes); raises UserError when the folder belongs to another campaign (or to
    none) and ``force`` is not given."""
    journal = Journal(ResultsPaths(results).journal)
    if not journal.exists():
        ours = (".DS_Store", ResultsPaths(results).driver_lock.name, ResultsPaths(results).driver_log.name)
        if results.exists() and any(p.name not in ours for p in results.iterdir()) and not force:
            raise UserError(
                f"{results} exists and is not an hpc-agent results folder (no journal.jsonl)",
                fix="choose an empty or new folder with --results DIR, or --force to use it anyway",
            )
        return []
    state = replay(journal.iter())
    old = _normalized(state.spec)
    changed = _diff_keys(old, spec.to_dict())
    if state.identity_hash and _identity(state) != spec.identity_hash():
        if not force:
            raise UserError(
                f"{results} belongs to a different campaign spec "
                f"(changed: {', '.join(changed[:6]) or 'the experiment files'})",
                fix=f"use another folder (--results DIR), or --force to continue in {results} "
                "with the new spec (its earlier trials stay in the history)",
            )
        return [f"--force: continuing {results} with a changed spec ({', '.join(changed[:6])})"]
    if changed:
        return [f"spec changed since the last run: {', '.join(changed[:6])}"]
    return []


def open_results(spec: CampaignSpec, results: Path, force: bool = False) -> tuple[Journal, list[str]]:
    """Check that ``results`` is this campaign's folder (:func:`check_results`) and record the
    spec: a ``campaign`` event in a new folder, a ``spec`` event when it changed. Call it
    holding the driver lock (:meth:`Campaign.run` does), so that two drivers cannot both
    write a first event. Returns the journal and the messages worth showing."""
    paths = ResultsPaths(results)
    journal = Journal(paths.journal)
    messages = check_results(spec, results, force)
    data = spec.to_dict()
    ident, full = spec.identity_hash(), spec.spec_hash()
    if not journal.exists():
        results.mkdir(parents=True, exist_ok=True)
        journal.write([ev.Campaign(name=spec.name, spec=data, spec_hash=full, identity_hash=ident)])
    else:
        state = replay(journal.iter())
        if state.spec_hash != full and _normalized(state.spec) != data:
            forced = bool(state.identity_hash) and _identity(state) != ident
            journal.write(
                [ev.Spec(name=spec.name, spec=data, spec_hash=full, identity_hash=ident, forced=forced)]
            )
    atomic_write_text(paths.spec, f"# resolved spec, as run (hpc-agent {__version__})\n" + to_toml(data))
    return journal, messages


def _normalized(old: Mapping[str, Any]) -> Mapping[str, Any]:
    """A journaled spec as this version writes it (keys added since filled with their
    defaults), so that an upgrade alone is not a change; the raw one if it no longer parses
    (e.g. its workdir moved)."""
    try:
        return spec_from_dict(old).to_dict()
    except UserError:
        return old


def _identity(state: CampaignState) -> str:
    """The identity of the folder's spec, computed by this version."""
    try:
        return spec_from_dict(state.spec).identity_hash()
    except UserError:
        return state.identity_hash


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_diff_keys(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} -> {_short(b)}")
    return out


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def acquire_driver_lock(paths: ResultsPaths) -> FileLock:
    """Take the folder's driver lock (``driver.lock``, holding ``host pid``), or raise a
    UserError naming the driver that holds it. One driver per results folder."""
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(paths.driver_lock, stale_s=DRIVER_LOCK_STALE_S, timeout_s=0.0)
    try:
        lock.acquire()
    except CampaignError:
        host, pid = lock_holder(paths.driver_lock) or ("?", "?")
        raise UserError(
            f"another hpc-agent driver (pid {pid} on {host}) is running this campaign ({paths.root})",
            fix="watch it with `hpc-agent status`, or stop it first; if it is dead, remove "
            f"{paths.driver_lock}",
        ) from None
    return lock


def driver_info(paths: ResultsPaths) -> dict[str, Any] | None:
    """The driver holding the results folder's lock, if it is alive (on this host we know;
    on another host, ``alive`` is None and the lock's age tells how fresh it is)."""
    holder = lock_holder(paths.driver_lock)
    try:
        age = time.time() - paths.driver_lock.stat().st_mtime
    except OSError:
        return None
    if holder is None:
        return None
    host, pid = holder
    alive: bool | None = None
    if host == socket.gethostname():
        alive = pid_alive(pid)
        if not alive:
            return None
    return {"host": host, "pid": pid, "lock_age_s": round(age, 1), "alive": alive}


def load_state(results: Path) -> CampaignState:
    """The state of the campaign in ``results`` (UserError when it is no results folder)."""
    journal = Journal(ResultsPaths(results).journal)
    if not journal.exists():
        raise UserError(
            f"{results} is not a campaign results folder (no journal.jsonl)",
            fix="pass the folder `hpc-agent run` wrote to, e.g. results/<campaign name>",
        )
    return replay(journal.iter())


def analyses_before(
    paths: ResultsPaths, state: CampaignState, generation: int, cache: dict[int, str] | None = None
) -> list[tuple[int, str]]:
    """(generation, analysis.md) of every analyzed generation before ``generation``, oldest
    first. ``cache``: the analyses read before (an analysis.md is written once), kept by the
    caller: each generation's plan then reads one file, not all of them again."""
    cache = {} if cache is None else cache
    out = []
    for g, rec in state.generations.items():
        if g < generation and rec.analyzed:
            if g not in cache:
                try:
                    cache[g] = paths.analysis(g).read_text(encoding="utf-8")
                except FileNotFoundError:
                    continue
            out.append((g, cache[g]))
    return out


def spec_of(state: CampaignState) -> CampaignSpec:
    """The spec the campaign last ran with, as recorded in its journal."""
    return spec_from_dict(state.spec)


def resolve_trial(state: CampaignState, text: str, mode: str) -> str:
    """A trial id from what the user typed: the id (``0002-0003``), ``2-3``, or ``best``
    (the best completed trial). UserError naming the campaign's trials otherwise."""
    if text == "best":
        best = state.best(mode)
        if best is None:
            raise UserError("no trial has completed yet: there is no best trial", fix="pass a trial id")
        return best.trial_id
    if text in state.trials:
        return text
    parts = text.split("-")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        tid = trial_id(int(parts[0]), int(parts[1]))
        if tid in state.trials:
            return tid
    ids = sorted(state.trials)
    shown = ", ".join(ids[:3]) + (f", ..., {ids[-1]}" if len(ids) > 3 else "")
    raise UserError(
        f"trial {text!r}: no such trial in this campaign ({len(ids)} trials: {shown or 'none'})",
        fix="pass a trial id as `hpc-agent export` or `status` shows it (e.g. 0001-0002), or `best`",
    )
