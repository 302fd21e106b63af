"""Cluster profiles: where and how a generation's job array runs on SLURM.

A profile is a small TOML file of the keys below, in ``slurm_templates/`` (``--profile NAME``)
or anywhere (``--profile path/to/cluster.toml``); ``[executor]`` in campaign.toml may override
any single key. Every key maps to one sbatch option (or to how hpc-agent submits), so a
researcher can copy the closest profile and adapt it in a minute. No profile at all means the
cluster's own defaults (``sbatch`` with nothing but a time limit).

Units are in the names (``mem_gb``, ``timeout_min``, ``signal_delay_s``); 0 or "" means "not
set: the cluster's default". Unknown keys fail, listing the valid ones and the file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from hpc_agent.config.defaults import DEFAULT_SIGNAL_DELAY_S
from hpc_agent.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# sbatch options hpc-agent sets itself: a profile may not override them through additional_parameters
_RESERVED_SBATCH = ("array", "job-name", "output", "error", "open-mode", "wckey", "signal", "time")


@dataclass(frozen=True)
class Profile:
    """One cluster profile, validated. ``name`` and ``path`` say where it came from."""

    name: str = ""
    path: str = ""
    # -- the keys a profile file may set (PROFILE_KEYS), all defaults "not set" --
    description: str = ""
    partition: str = ""  # -p; "" = the cluster's default partition
    account: str = ""  # -A
    qos: str = ""  # --qos
    gres: str = ""  # --gres, e.g. "gpu:1" or "gpu:a100:2" (clusters that count GPUs as GRES)
    gpus_per_node: int = 0  # --gpus-per-node (clusters with GPU TRES); use one of gres / gpus_per_node
    cpus_per_task: int = 0  # -c
    mem_gb: float = 0.0  # --mem
    constraint: str = ""  # -C, node features: "a100", "skylake|cascadelake"
    exclude: str = ""  # -x, nodes to avoid
    reservation: str = ""  # --reservation
    timeout_min: int = 0  # --time; 0 = derived from [experiment] (time budget + grace + overhead)
    setup: tuple[str, ...] = ()  # shell lines run in the job before the trial (module load ...)
    requeue: bool = False  # let SLURM itself requeue a job after a node failure or a preemption
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S  # stop the trial this long before the job's limit
    array_parallelism: int = 0  # at most this many trials at once (%N); 0 = no limit
    max_array_size: int = 0  # at most this many tasks per array; 0 = the cluster's MaxArraySize
    additional_parameters: tuple[tuple[str, Any], ...] = ()  # any other sbatch option
    python: str = ""  # command that starts Python in the job; "" = the driver's interpreter
    poll_interval_s: float = 0.0  # seconds between squeue polls; 0 = 30 s

    @property
    def extra(self) -> dict[str, Any]:
        """``additional_parameters`` as a dict of sbatch options."""
        return dict(self.additional_parameters)

    def to_dict(self) -> dict[str, Any]:
        """The keys that differ from the defaults, as plain TOML-able data."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "path") or value == f.default:
                continue
            if f.name == "setup":
                value = list(value)
            elif f.name == "additional_parameters":
                value = dict(value)
            out[f.name] = value
        return out


# Every key a profile (or [executor] in campaign.toml) may set. Unknown keys fail listing these.
PROFILE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Profile) if f.name not in ("name", "path"))

_TYPES: dict[str, str] = {
    "description": "str",
    "partition": "name",
    "account": "name",
    "qos": "name",
    "gres": "name",
    "gpus_per_node": "count",
    "cpus_per_task": "count",
    "mem_gb": "positive",
    "constraint": "str",
    "exclude": "name",
    "reservation": "name",
    "timeout_min": "count",
    "setup": "lines",
    "requeue": "bool",
    "signal_delay_s": "count",
    "array_parallelism": "count",
    "max_array_size": "count",
    "additional_parameters": "table",
    "python": "str",
    "poll_interval_s": "positive",
}
assert set(_TYPES) == set(PROFILE_KEYS)

_EXPECTED = {
    "str": "a string",
    "name": 'a string without spaces (e.g. "gpu")',
    "count": "an integer >= 0",
    "positive": "a number >= 0",
    "lines": 'a list of shell lines (e.g. ["module load cuda/12.1"])',
    "bool": "true or false",
    "table": 'a table of sbatch options (e.g. { mail-type = "END" })',
}


# ------------------------------------------------------------------------------- finding


def templates_dirs() -> list[Path]:
    """Where named profiles live: the source checkout's ``slurm_templates/``, else the copy an
    installed wheel carries (``hpc_agent/_slurm_templates``)."""
    package = Path(__file__).resolve().parents[1]  # hpc_agent/
    return [d for d in (package.parent / "slurm_templates", package / "_slurm_templates") if d.is_dir()]


def available_profiles() -> dict[str, Path]:
    """Profile name -> file, first folder wins."""
    out: dict[str, Path] = {}
    for d in templates_dirs():
        for p in sorted(d.glob("*.toml")):
            out.setdefault(p.stem, p)
    return out


def profile_path(name: str) -> Path:
    """The file of a profile given by name (``generic-gpu``) or by path (``./my.toml``)."""
    looks_like_path = name.endswith(".toml") or "/" in name
    if looks_like_path:
        p = Path(name).expanduser()
        if p.is_file():
            return p.resolve()
        raise UserError(
            f"--profile {name}: no such file",
            fix=f"pass an existing .toml file, or one of the named profiles: {_names()}",
        )
    found = available_profiles().get(name)
    if found is None:
        raise UserError(
            f"--profile {name!r}: unknown profile",
            fix=f"use one of: {_names()} (see `hpc-agent profiles`), or a path to a .toml file",
        )
    return found


def _names() -> str:
    return ", ".join(available_profiles()) or "(none found)"


# ------------------------------------------------------------------------------- loading


def load_profile(name: str = "", overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load a profile by name or path ("" = none: the cluster's defaults) and apply single-key
    overrides (``[executor]`` in campaign.toml)."""
    if name:
        path = profile_path(name)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"profile {path}: invalid TOML ({e})", fix="fix the file's syntax") from None
        profile = Profile(name=path.stem, path=str(path), **_validated(data, f"profile {path}"))
    else:
        profile = Profile()
    if overrides:
        profile = replace(profile, **_validated(overrides, "[executor] in campaign.toml"))
    return profile


def _validated(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(k for k in data if k not in PROFILE_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            fix=f"valid keys are: {', '.join(PROFILE_KEYS)}",
        )
    return {k: _check(k, v, where) for k, v in data.items()}


def _check(key: str, value: Any, where: str) -> Any:
    kind = _TYPES[key]

    def bad(extra: str = "") -> UserError:
        return UserError(
            f"{where}: {key} = {value!r}: expected {_EXPECTED[kind]}{extra}",
            fix=f"correct {key} (see the commented profiles in slurm_templates/)",
        )

    if kind in ("str", "name"):
        if not isinstance(value, str):
            raise bad()
        if kind == "name" and any(c.isspace() for c in value):
            raise bad()
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad()
        return value
    if kind == "positive":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad()
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "lines":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
        return tuple(value)
    # table of extra sbatch options
    if not isinstance(value, Mapping):
        raise bad()
    out = []
    for k, v in value.items():
        flag = str(k).replace("_", "-")
        if flag in _RESERVED_SBATCH:
            raise bad(f"; --{flag} is set by hpc-agent itself (time: use timeout_min)")
        if flag in ("partition", "account", "qos", "gres", "constraint", "exclude", "reservation"):
            raise bad(f"; use the profile key {flag} instead")
        if isinstance(v, bool) and v is False:
            continue
        if not isinstance(v, (str, int, float, bool)):
            raise bad(f"; the value of {k!r} must be a string, a number or true")
        out.append((str(k), v))
    return tuple(out)


# ------------------------------------------------------------------------------- showing


def describe_profiles() -> str:
    """The text of ``hpc-agent profiles``: every named profile, one line each."""
    profiles = available_profiles()
    if not profiles:
        return "no profiles found (looked in: slurm_templates/)\n"
    width = max(len(n) for n in profiles)
    lines = ["SLURM cluster profiles (use with --profile NAME, or --profile path/to/file.toml):", ""]
    for name in profiles:
        try:
            desc = load_profile(name).description
        except UserError as e:
            desc = f"INVALID: {e.message}"
        lines.append(f"  {name:<{width}}  {desc.strip().splitlines()[0] if desc.strip() else ''}")
    lines += [
        "",
        f"folder: {next(iter(profiles.values())).parent}",
        "show one: hpc-agent profiles --show NAME   (copy it next to your campaign to adapt it)",
    ]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A profile value as TOML (for ``hpc-agent profiles --show``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)
