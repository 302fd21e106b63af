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
from typing import Annotated, Any

from hpc_agent.config.defaults import DEFAULT_SIGNAL_DELAY_S
from hpc_agent.config.schema import Check, Range, Section, Words, problem, validated
from hpc_agent.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# sbatch options hpc-agent sets itself: a profile may not override them through additional_parameters
_RESERVED_SBATCH = ("array", "job-name", "output", "error", "open-mode", "wckey", "signal", "time")


_FIX = "correct {key} (see the commented profiles in slurm_templates/)"
_TABLE = 'a table of sbatch options (e.g. { mail-type = "END" })'
_NAME = 'a string without spaces (e.g. "gpu")'


def _no_spaces(value: str, info: Any) -> str:
    if any(c.isspace() for c in value):
        raise problem(f": {{key}} = {value!r}: expected {_NAME}", _FIX)
    return value


def _one_line(value: Any, info: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _sbatch_options(value: Any, info: Any) -> Any:
    if not isinstance(value, Mapping):
        return value  # refused by the type, with the table's words
    return tuple(_sbatch_option(k, v, value) for k, v in value.items() if v is not False)


Name = Annotated[str, Check(_no_spaces), Words(expects=_NAME)]
Count = Annotated[int, Range(ge=0)]
Amount = Annotated[float, Range(ge=0)]
Lines = Annotated[
    tuple[str, ...],
    Check(_one_line, before=True),
    Words(expects='a list of shell lines (e.g. ["module load cuda/12.1"])'),
]
SbatchOptions = Annotated[
    tuple[tuple[str, Any], ...], Check(_sbatch_options, before=True), Words(expects=_TABLE)
]


@dataclass(frozen=True)
class Profile(Section):
    """One cluster profile, validated. ``name`` and ``path`` say where it came from (set by
    :func:`load_profile`, never read from a file)."""

    name: str = ""
    path: str = ""
    # -- the keys a profile file may set (PROFILE_KEYS), all defaults "not set" --
    description: str = ""
    partition: Name = ""  # -p; "" = the cluster's default partition
    account: Name = ""  # -A
    qos: Name = ""  # --qos
    gres: Name = ""  # --gres, e.g. "gpu:1" or "gpu:a100:2" (clusters that count GPUs as GRES)
    gpus_per_node: Count = 0  # --gpus-per-node (clusters with GPU TRES); use one of gres / gpus_per_node
    cpus_per_task: Count = 0  # -c
    mem_gb: Amount = 0.0  # --mem
    constraint: str = ""  # -C, node features: "a100", "skylake|cascadelake"
    exclude: Name = ""  # -x, nodes to avoid
    reservation: Name = ""  # --reservation
    timeout_min: Count = 0  # --time; 0 = derived from [experiment] (time budget + grace + overhead)
    setup: Lines = ()  # shell lines run in the job before the trial (module load ...); one string: one line
    requeue: bool = False  # let SLURM itself requeue a job after a node failure or a preemption
    signal_delay_s: Count = DEFAULT_SIGNAL_DELAY_S  # stop the trial this long before the job's limit
    array_parallelism: Count = 0  # at most this many trials at once (%N); 0 = no limit
    max_array_size: Count = 0  # at most this many tasks per array; 0 = the cluster's MaxArraySize
    additional_parameters: SbatchOptions = ()  # any other sbatch option
    python: str = ""  # command that starts Python in the job; "" = the driver's interpreter
    poll_interval_s: Amount = 0.0  # seconds between squeue polls; 0 = 30 s

    @classmethod
    def valid_keys(cls) -> list[str]:
        """The keys a profile file (or ``[executor]``) may set."""
        return [f.name for f in fields(cls) if f.name not in ("name", "path")]

    @property
    def extra(self) -> dict[str, Any]:
        """``additional_parameters`` as a dict of sbatch options."""
        return dict(self.additional_parameters)

    def to_dict(self) -> dict[str, Any]:
        """The keys that differ from the defaults, as plain TOML-able data."""
        out: dict[str, Any] = {}
        for key in PROFILE_KEYS:
            value = getattr(self, key)
            if value == _DEFAULTS[key]:
                continue
            if key == "setup":
                value = list(value)
            elif key == "additional_parameters":
                value = dict(value)
            out[key] = value
        return out


def _sbatch_option(key: Any, value: Any, table: Mapping[str, Any]) -> tuple[str, Any]:
    """One entry of ``additional_parameters``, refused when hpc-agent sets that option itself
    or a profile key says it."""
    flag = str(key).replace("_", "-")
    why = ""
    if flag in _RESERVED_SBATCH:
        why = f"; --{flag} is set by hpc-agent itself (time: use timeout_min)"
    elif flag in ("partition", "account", "qos", "gres", "constraint", "exclude", "reservation"):
        why = f"; use the profile key {flag} instead"
    elif not isinstance(value, (str, int, float, bool)):
        why = f"; the value of {key!r} must be a string, a number or true"
    if why:
        raise problem(
            f": additional_parameters = {dict(table)!r}: expected {_TABLE}{why}",
            _FIX.format(key="additional_parameters"),
        )
    return str(key), value


# Every key a profile (or [executor] in campaign.toml) may set. Unknown keys fail listing these.
PROFILE_KEYS: tuple[str, ...] = tuple(Profile.valid_keys())
_DEFAULTS = {f.name: f.default for f in fields(Profile)}


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
        profile = replace(_validated(data, f"profile {path}"), name=path.stem, path=str(path))
    else:
        profile = Profile()
    if overrides:
        given = _validated(overrides, "[executor] in campaign.toml")
        profile = replace(profile, **{k: getattr(given, k) for k in overrides})
    return profile


def _validated(data: Mapping[str, Any], where: str) -> Profile:
    """A profile file's table (or ``[executor]``'s overrides) read by :class:`Profile`'s
    declaration; ``name`` and ``path`` are where it came from, not keys of it."""
    own = sorted(k for k in ("name", "path") if k in data)
    if own:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(own)}", fix=f"valid keys are: {', '.join(PROFILE_KEYS)}"
        )
    return validated(Profile, data, where, error=UserError, fix=_FIX, sep=": ", keys_in_fix=True)


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
