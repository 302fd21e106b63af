"""campaign.toml -> frozen dataclasses, each section declared once.

A campaign is a folder holding ``campaign.toml`` (the spec), the training code and, optionally,
a research brief. Everything here is checked before anything is written: an unknown key fails
listing the valid ones, a value of the wrong type or range names the key and the fix. Each
section is one declaration (:mod:`hpc_agent.config.schema`): a frozen dataclass whose fields
carry their type, default, range and own checks, read through pydantic. Paths in the spec are
relative to the spec's folder and are resolved here, once.

Two hashes protect a results folder. ``identity_hash`` covers what makes two trials
comparable (name, metric, objective, seeds, search space, the experiment); a results folder
whose identity differs from the spec is refused unless ``--force``. Operational values
(generations, batch size, planner, executor, the goal text) may change between runs: raising
``generations`` is how a finished campaign is extended.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from hpc_agent.config.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONFIRM_SEEDS,
    DEFAULT_EDIT_FORMAT,
    DEFAULT_EVALUATE_TIME_S,
    DEFAULT_GENERATIONS,
    DEFAULT_KILL_GRACE_S,
    DEFAULT_LLM_CONTEXT_TOKENS,
    DEFAULT_LLM_MAX_REPAIRS,
    DEFAULT_LLM_MAX_RETRIES,
    DEFAULT_LLM_TEMPERATURE,
    DEFAULT_LLM_TIMEOUT_S,
    DEFAULT_MAX_PROGRESS_REQUEUES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_NOISE_RUNS,
    DEFAULT_RIGOR_ALPHA,
    DEFAULT_RIGOR_K,
    DEFAULT_SCHEDULE,
    DEFAULT_TIME_BUDGET_S,
    DEFAULT_TPE_STARTUP_TRIALS,
    DEFAULT_TPE_STRATEGY,
    JOB_OVERHEAD_MIN,
)
from hpc_agent.config.kinds import EXECUTOR_KINDS, PLANNER_KINDS
from hpc_agent.config.profiles import PROFILE_KEYS
from hpc_agent.config.schema import Check, Range, Section, Words, problem, validated
from hpc_agent.config.space import Space, check_names, parse_space
from hpc_agent.errors import SpecError
from hpc_agent.job.script import pattern_problem, unknown_placeholders

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


Mode = Literal["min", "max"]
Objective = Literal["last", "best"]  # "last": a trial's last logged value; "best": its best one
Schedule = Literal["sync", "async"]  # "sync": a generation is a barrier; "async": they overlap
PlannerKind = Literal["auto", "llm", "tpe", "random"]  # "auto": the LLM where an endpoint is set, else TPE
ExecutorKind = Literal["auto", "local", "slurm"]  # "auto": SLURM where sbatch is on PATH, else local
TpeStrategy = Literal["refine", "liar"]  # hpc_agent.planners.tpe says what each does
StructuredOutput = Literal["auto", "json_schema", "json_object", "text"]
EditFormat = Literal["search_replace", "whole_file", "diff", "any"]  # asked of the LLM (hpc_agent.edits)
RigorRule = Literal["se", "welch"]

PLANNERS: tuple[str, ...] = get_args(PlannerKind)
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
TPE_STRATEGIES: tuple[str, ...] = get_args(TpeStrategy)
MODES: tuple[str, ...] = get_args(Mode)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
STRUCTURED_OUTPUT: tuple[str, ...] = get_args(StructuredOutput)
EDIT_FORMATS: tuple[str, ...] = get_args(EditFormat)
assert ("auto", *PLANNER_KINDS) == PLANNERS and ("auto", *EXECUTOR_KINDS) == EXECUTORS
RESERVED_PARAMS = ("seed",)  # injected by hpc-agent into every trial's params
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]{0,127}$")


def _base(info: Any) -> Path:
    """The folder relative paths resolve against (the spec's; ``/`` for a resolved spec)."""
    return Path(((info.context if info else None) or {}).get("base", "/"))


def _name(name: str, info: Any) -> str:
    if not _NAME_RE.match(name):
        raise problem(
            f" name = {name!r}: expected letters, digits, '.', '_' or '-' (at most 64)",
            "rename the campaign; the name becomes a folder and a SLURM job name",
        )
    return name


def _metric(metric: str, info: Any) -> str:
    if not _METRIC_RE.match(metric):
        raise problem(f" metric = {metric!r}: expected a JSON key such as 'val_loss'")
    return metric


def _metric_names(names: tuple[str, ...], info: Any) -> tuple[str, ...]:
    bad = [m for m in names if not _METRIC_RE.match(m)]
    if bad:
        raise problem(f" {{key}}: {bad[0]!r} is not a metric name", 'e.g. {key} = ["val_acc"]')
    return names


def _seeds(seeds: Any, info: Any) -> Any:
    """A count n means seeds 0..n-1; a list is taken as it is (each seed once)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise problem(
                f" seeds = {seeds!r}: expected an integer >= 1", "set seeds to a whole number such as 4"
            )
        return tuple(range(seeds))
    if not isinstance(seeds, (list, tuple)):
        raise problem(
            f" seeds = {seeds!r}: expected int or list", "set seeds to a count, or a list of integers"
        )
    listed = list(seeds)
    if not listed or any(isinstance(s, bool) or not isinstance(s, int) for s in listed):
        raise problem(f" seeds = {listed!r}: expected a count or a non-empty list of integers")
    if len(set(listed)) != len(listed):
        raise problem(f" seeds = {listed!r}: seeds repeat")
    return tuple(listed)


Count = Annotated[int, Range(ge=0)]  # 0 usually means "off" or "derived"
Positive = Annotated[int, Range(ge=1)]
Seconds = Annotated[float, Range(gt=0), Words(what="a number of seconds")]
MetricNames = Annotated[tuple[str, ...], Check(_metric_names)]


@dataclass(frozen=True)
class CampaignSection(Section):
    """``[campaign]``: what to optimize and how much of it to run."""

    name: Annotated[str, Check(_name), Words(example='name = "my-campaign" (it names the results folder)')]
    metric: Annotated[str, Check(_metric), Words(example='metric = "val_loss" (the key your code logs)')]
    mode: Mode = "min"
    objective: Objective = "last"
    goal: Annotated[str, Check(lambda goal, info: goal.strip())] = ""  # or read from goal_file
    report_metrics: MetricNames = ()
    holdout_metrics: MetricNames = ()  # gathered and exported, never shown to a planner
    generations: Positive = DEFAULT_GENERATIONS
    batch_size: Positive = DEFAULT_BATCH_SIZE
    seeds: Annotated[tuple[int, ...], Check(_seeds, before=True)] = (0,)  # each proposal runs once per seed
    seed: int = 0  # the planners' seed: same history + same seed = same plan
    baseline: bool = True  # start with the space's defaults when every parameter has one
    schedule: Schedule = DEFAULT_SCHEDULE  # type: ignore[assignment]
    max_in_flight: Count = 0  # async: the slots, trials running at once (0: one batch, seeds included)
    refill_at: Count = 0  # async: plan when this many slots are free (0: 1; an LLM planner: half the slots)

    @classmethod
    def valid_keys(cls) -> list[str]:
        """The fields, and ``goal_file`` (read into ``goal``)."""
        keys = [f.name for f in fields(cls)]
        return [*keys[:5], "goal_file", *keys[5:]]

    @classmethod
    def _before(cls, data: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """``goal_file`` read into ``goal``; the objective left out of the report metrics."""
        if isinstance(data.get("report_metrics"), (list, tuple)):
            data["report_metrics"] = [m for m in data["report_metrics"] if m != data.get("metric")]
        if "goal_file" not in data:
            return data
        goal_file = data.pop("goal_file")
        if not isinstance(goal_file, str):
            raise problem(f" goal_file = {goal_file!r}: expected a string", "set goal_file to a string")
        if goal_file and data.get("goal"):
            raise problem(": set goal or goal_file, not both")
        if goal_file:
            path = (Path(context.get("base", "/")) / goal_file).resolve()
            if not path.is_file():
                raise problem(f" goal_file = {goal_file!r}: no such file ({path})")
            data["goal"] = path.read_text(encoding="utf-8")
        return data

    def _after(self) -> None:
        shared = [m for m in self.holdout_metrics if m == self.metric or m in self.report_metrics]
        if shared:
            raise problem(
                f" holdout_metrics: {shared[0]!r} is also the objective or a report metric",
                "a held-out metric is never shown to a planner: list it in holdout_metrics only",
            )

    @property
    def batch_trials(self) -> int:
        """Trials of a full batch: proposals times seeds."""
        return self.batch_size * len(self.seeds)

    @property
    def slots(self) -> int:
        """Async: the most trials in flight at once (``max_in_flight``, default one batch)."""
        return self.max_in_flight or self.batch_trials

    @property
    def gathered_metrics(self) -> tuple[str, ...]:
        """The metrics read besides the objective: the report metrics and the held-out ones."""
        return (*self.report_metrics, *self.holdout_metrics)


def _command(value: Any, key: str) -> Any:
    """A command as words: a string is split as the shell would, a list is taken as it is."""
    example = "python train.py" if key == "command" else "python prepare.py --evaluate"
    if isinstance(value, str):
        try:
            value = tuple(shlex.split(value))
        except ValueError as e:
            raise problem(f" {key} = {value!r}: cannot be split into words ({e})") from None
    elif isinstance(value, (list, tuple)) and not all(isinstance(c, str) for c in value):
        raise problem(f" {key}: a list command must hold strings only, got {list(value)!r}")
    elif not isinstance(value, (list, tuple)):
        raise problem(f" {key} = {value!r}: expected a string or a list", f'set {key} = "{example}"')
    if not value:
        raise problem(f" {key} is empty", f'set {key} = "{example}"')
    return tuple(value)


def _pairs(value: Any, key: str) -> tuple[tuple[str, Any], ...]:
    """A TOML table as (key, value) pairs, in order (frozen and hashable)."""
    if isinstance(value, Mapping):
        return tuple((str(k), v) for k, v in value.items())
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return value
    raise problem(f" {key} = {value!r}: expected a table", f"write {key} as a table: {key} = {{ ... }}")


def _workdir(raw: str, info: Any) -> str:
    workdir = (_base(info) / raw).resolve()
    if not workdir.is_dir():
        raise problem(f" workdir = {raw!r}: no such folder ({workdir})")
    return str(workdir)


def _editable(names: tuple[str, ...], info: Any) -> tuple[str, ...]:
    workdir = info.data.get("workdir") if info else None
    for name in names:
        if not name:
            raise problem(f" editable: {name!r} is not a file name")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise problem(
                f" editable: {name!r} must be a path inside workdir, without '..'",
                'list files relative to workdir, e.g. editable = ["train.py"]',
            )
        if workdir and not (Path(workdir) / name).is_file():
            raise problem(f" editable: {name!r} is not a file in workdir ({Path(workdir) / name})")
    return tuple(str(Path(e)) for e in names)


def _env(value: Any, info: Any) -> tuple[tuple[str, str], ...]:
    pairs = _pairs(value, "env")
    for k, v in pairs:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise problem(f" env.{k} = {v!r}: expected a string or a number")
        if k.startswith("HPC_AGENT_"):
            raise problem(f" env.{k}: HPC_AGENT_* variables are set by hpc-agent itself")
    return tuple((k, str(v)) for k, v in pairs)


def _patterns(value: Any, info: Any) -> tuple[tuple[str, Any], ...]:
    """``parse = { metric = 'regex with a group' }``: each name a metric, each pattern checked."""
    pairs = _pairs(value, "parse")
    for name, pattern in pairs:
        example = f"{name} = '^{name}:\\s*([-+0-9.eE]+)'"
        if not _METRIC_RE.match(name):
            raise problem(f" parse: {name!r} is not a metric name", "use the name your campaign reads")
        if not isinstance(pattern, str):
            raise problem(
                f" parse.{name} = {pattern!r}: expected a regular expression (a string)",
                f"write it in single quotes: {example}",
            )
        why = pattern_problem(pattern)
        if why:
            raise problem(
                f" parse.{name} = {pattern!r}: the pattern {why}",
                f"e.g. {example} (single quotes keep the backslashes)",
            )
    return pairs


Command = Annotated[tuple[str, ...], Check(lambda value, info: _command(value, "command"), before=True)]
Evaluate = Annotated[tuple[str, ...], Check(lambda value, info: _command(value, "evaluate"), before=True)]


@dataclass(frozen=True)
class ExperimentSection(Section):
    """``[experiment]``: how to run one trial (command, budget, editable files, retries)."""

    command: Annotated[Command, Words(example='command = "python train.py"')]
    workdir: Annotated[str, Check(_workdir)] = "."  # absolute once read: resolved against the spec's folder
    editable: Annotated[tuple[str, ...], Check(_editable)] = ()
    time_budget_s: Seconds = DEFAULT_TIME_BUDGET_S
    kill_grace_s: Annotated[float, Range(ge=0)] = DEFAULT_KILL_GRACE_S
    timeout_min: Annotated[int, Range(ge=0), Words(what="a number of minutes")] = (
        0  # 0: derived from the budget
    )
    env: Annotated[tuple[tuple[str, str], ...], Check(_env, before=True)] = ()
    max_retries: Count = DEFAULT_MAX_RETRIES
    max_progress_requeues: Count = DEFAULT_MAX_PROGRESS_REQUEUES
    parse: Annotated[
        tuple[tuple[str, str], ...], Check(_patterns, before=True)
    ] = ()  # metric -> regex (job.script)
    parse_stderr: bool = False  # the patterns read stderr too
    evaluate: Evaluate = ()  # the fixed evaluator's command, run from the unpatched snapshot
    evaluate_time_s: Seconds = DEFAULT_EVALUATE_TIME_S  # the evaluator's own budget

    @classmethod
    def _before(cls, data: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """``workdir`` is checked (resolved) when it is left out too."""
        return {"workdir": ".", **data} if context else data

    def _after(self) -> None:
        budget, limit = self.time_budget_s, self.timeout_min * 60
        if self.timeout_min and limit < budget:
            raise problem(
                f" timeout_min = {self.timeout_min} is shorter than time_budget_s = {budget:g}",
                "raise timeout_min (the job's limit) above the budget, or leave it out to derive it",
            )
        if self.evaluate and self.timeout_min and limit < budget + self.evaluate_time_s:
            raise problem(
                f" timeout_min = {self.timeout_min} is shorter than time_budget_s + evaluate_time_s = "
                f"{budget + self.evaluate_time_s:g} s: the evaluator runs in the same job",
                "raise timeout_min, lower evaluate_time_s, or leave timeout_min out to derive it",
            )

    def job_timeout_for(self, budget_multiplier: float = 1.0) -> int:
        """The job's time limit for trials at ``budget_multiplier`` times the budget (and the
        evaluator's budget, when there is one)."""
        if self.timeout_min:
            return math.ceil(self.timeout_min * max(1.0, budget_multiplier))
        budget = self.time_budget_s * budget_multiplier
        if self.evaluate:
            budget += self.evaluate_time_s + self.kill_grace_s
        return math.ceil((budget + self.kill_grace_s) / 60) + JOB_OVERHEAD_MIN

    @property
    def job_timeout_min(self) -> int:
        """The job's time limit: ``timeout_min`` if set, else the budget (plus the evaluator's)
        plus grace plus start-up, rounded up."""
        return self.job_timeout_for(1.0)


def _brief(brief: str, info: Any) -> str:
    if not brief:
        return brief
    path = (_base(info) / brief).resolve()
    if not path.is_file():
        raise problem(f" brief = {brief!r}: no such file ({path})")
    return str(path)


def _url(url: str, info: Any) -> str:
    if url and not url.startswith(("http://", "https://")):
        raise problem(f" base_url = {url!r}: expected an http(s) URL such as http://host:8000/v1")
    return url


@dataclass(frozen=True)
class PlannerSection(Section):
    """``[planner]``: who plans, and how to reach and pay an LLM."""

    kind: PlannerKind = "auto"
    model: str = ""  # "" -> $HPC_AGENT_MODEL
    base_url: Annotated[str, Check(_url)] = ""  # "" -> $OPENAI_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable; the key is never stored
    temperature: Annotated[float, Range(ge=0, le=2)] = DEFAULT_LLM_TEMPERATURE
    max_repairs: Count = DEFAULT_LLM_MAX_REPAIRS
    max_retries: Count = DEFAULT_LLM_MAX_RETRIES
    request_timeout_s: Seconds = DEFAULT_LLM_TIMEOUT_S
    context_tokens: Annotated[int, Range(ge=2000)] = DEFAULT_LLM_CONTEXT_TOKENS
    max_tokens: Count = 0  # a reply's room; 0 -> sized to each request's task (analysis + proposals)
    check_model: bool = True  # false: accept a model the endpoint does not list (incomplete gateway lists)
    structured_output: StructuredOutput = "auto"
    edit_format: EditFormat = DEFAULT_EDIT_FORMAT  # type: ignore[assignment]  # the patch form asked for
    brief: Annotated[str, Check(_brief)] = ""  # path of a research brief (program.md); "" -> the one shipped
    price_in_per_mtok: float = 0.0  # cost estimate, currency units per million tokens
    price_out_per_mtok: float = 0.0
    tpe_startup_trials: Positive = DEFAULT_TPE_STARTUP_TRIALS
    tpe_strategy: TpeStrategy = DEFAULT_TPE_STRATEGY  # type: ignore[assignment]


def _profile(profile: str, info: Any) -> str:
    if profile.endswith(".toml") or "/" in profile:  # a path: relative to the spec, like every path
        return str((_base(info) / profile).resolve())
    return profile


@dataclass(frozen=True)
class ExecutorSection(Section):
    """``[executor]``: where trials run; single profile keys may be overridden here."""

    kind: ExecutorKind = "auto"
    parallelism: Count = 0  # 0 = local: number of cores; slurm: no throttle (or the profile's)
    profile: Annotated[str, Check(_profile)] = ""  # a name from slurm_templates/ or a path to a profile .toml
    poll_interval_s: Annotated[float, Range(ge=0)] = 0.0  # 0 = local 0.5 s, slurm 30 s
    overrides: tuple[tuple[str, Any], ...] = ()  # single profile values ([executor] partition = ...)

    @classmethod
    def valid_keys(cls) -> list[str]:
        """Its own keys, and a profile's (each may be overridden here)."""
        return [*(f.name for f in fields(cls) if f.name != "overrides"), *PROFILE_KEYS]

    @classmethod
    def _before(cls, data: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        """A profile's keys (those that are not the executor's own) become ``overrides``."""
        if "overrides" in data:  # not a key of the file: made here
            raise problem(
                f": unknown key ['overrides']; valid keys are: {cls.valid_keys()}",
                "remove or rename 'overrides'",
            )
        own = {f.name for f in fields(cls)}
        given = tuple((k, v) for k, v in data.items() if k not in own and k in PROFILE_KEYS)
        return {**{k: v for k, v in data.items() if k in own or k not in PROFILE_KEYS}, "overrides": given}

    def overrides_dict(self) -> dict[str, Any]:
        """The profile keys this spec overrides."""
        return dict(self.overrides)


@dataclass(frozen=True)
class RigorSection(Section):
    """``[rigor]``: when a challenger becomes the champion (:mod:`hpc_agent.science.rigor`)."""

    rule: RigorRule = "se"  # "se": improvement > k * SE of the difference; "welch": Welch's t-test
    k: Annotated[float, Range(ge=0), Words(what="a number of standard errors", fix="k = 2.0")] = (
        DEFAULT_RIGOR_K
    )
    alpha: Annotated[float, Range(gt=0, lt=1), Words(what="a level", fix="alpha = 0.05")] = (
        DEFAULT_RIGOR_ALPHA
    )
    control: bool = True  # with one seed: run the champion again (a control) to measure the noise
    replicate: bool = True  # a challenger that beats the champion is run again before it is kept
    noise_runs: Positive = DEFAULT_NOISE_RUNS  # with one seed: runs of generation 0's first configuration


Hours = Annotated[
    float, Range(ge=0, finite=True), Words(what="a number of hours", fix="e.g. 12 (0: no limit)")
]


@dataclass(frozen=True)
class StopSection(Section):
    """``[stop]``: when the search ends besides its generations (:mod:`hpc_agent.science.budget`). Zero
    (or an absent ``target``) turns a rule off."""

    max_trials: Count = 0  # trials of the search (controls included; confirmations not)
    max_hours: Hours = 0.0  # wall-clock hours since the campaign began
    max_gpu_hours: Hours = 0.0  # finished trials' hours times their GPUs
    target: Annotated[float | None, Range(finite=True)] = None  # the champion reached it (<= min, >= max)
    plateau_trials: Count = 0  # this many search trials finished without a new champion


@dataclass(frozen=True)
class ConfirmSection(Section):
    """``[confirm]``: screen short, confirm long: the best configurations run again with more
    seeds and a larger budget, and the final champion is decided on those runs."""

    top_k: Count = 0  # 0: no confirmation stage
    seeds: Positive = DEFAULT_CONFIRM_SEEDS
    budget_multiplier: Annotated[float, Range(gt=0), Words(fix="e.g. 4.0")] = 1.0
    every: Count = 0  # 0: once, after the last generation; N: after every N generations


@dataclass(frozen=True)
class CampaignSpec:
    """A whole validated campaign.toml (paths absolute, defaults filled in)."""

    campaign: CampaignSection
    experiment: ExperimentSection
    space: Space
    planner: PlannerSection = field(default_factory=PlannerSection)
    executor: ExecutorSection = field(default_factory=ExecutorSection)
    source: str = ""  # the campaign.toml it was read from (absolute), "" when built in code
    rigor: RigorSection = field(default_factory=RigorSection)
    confirm: ConfirmSection = field(default_factory=ConfirmSection)
    stop: StopSection = field(default_factory=StopSection)

    @property
    def name(self) -> str:
        """The campaign's name (it names the results folder and the jobs)."""
        return self.campaign.name

    @property
    def code_first(self) -> bool:
        """A campaign without a search space: every proposal is a change of the editable files."""
        return not self.space.params

    @property
    def evaluated_metrics(self) -> tuple[str, ...]:
        """The metrics only the fixed evaluator may report (the objective and the held-out
        ones), when ``[experiment] evaluate`` is declared; else none."""
        if not self.experiment.evaluate:
            return ()
        return (self.campaign.metric, *self.campaign.holdout_metrics)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (TOML/JSON-safe); inverse of :func:`spec_from_dict`.
        Keys added since a version are left out at their defaults, so that a spec of an older
        version reads and hashes as it did."""
        camp = _plain(self.campaign)
        exp = _plain(self.experiment)
        exp["env"] = dict(self.experiment.env)
        _new_keys_at_default(exp, self.experiment)
        exe = _plain(self.executor)
        del exe["overrides"]
        exe.update(self.executor.overrides_dict())
        return {
            "campaign": camp,
            "experiment": exp,
            "space": self.space.to_dict(),
            "planner": _without_defaults(_plain(self.planner), {"edit_format": DEFAULT_EDIT_FORMAT}),
            "executor": exe,
            "rigor": _without_defaults(
                _plain(self.rigor), {"replicate": True, "noise_runs": DEFAULT_NOISE_RUNS}
            ),
            "confirm": _plain(self.confirm),
            "stop": {k: v for k, v in _plain(self.stop).items() if v is not None},
        }

    def identity_hash(self) -> str:
        """What makes trials comparable; a results folder belongs to one identity."""
        d = self.to_dict()
        ident = {
            "name": d["campaign"]["name"],
            "metric": d["campaign"]["metric"],
            "mode": d["campaign"]["mode"],
            "objective": d["campaign"]["objective"],
            "seeds": d["campaign"]["seeds"],
            "space": d["space"],
            "experiment": d["experiment"],
        }
        return _hash(ident)

    def spec_hash(self) -> str:
        """A hash of everything: a change is journaled as a ``spec`` event."""
        return _hash(self.to_dict())

    def with_overrides(self, **values: Any) -> CampaignSpec:
        """A copy with command-line overrides applied (``generations``, ``batch_size``, ...),
        checked by the same declarations as the spec."""
        data = self.to_dict()
        given = {k: v for k, v in values.items() if v is not None}
        out: dict[str, Any] = {}
        for name, model in (
            ("campaign", CampaignSection),
            ("planner", PlannerSection),
            ("executor", ExecutorSection),
        ):
            table = dict(data[name])
            table.update({_OVERRIDES[k][1]: v for k, v in given.items() if _OVERRIDES[k][0] == name})
            out[name] = validated(model, table, f"[{name}]")
        if "profile" in given:  # as given: a path is the caller's, found from where it runs
            out["executor"] = replace(out["executor"], profile=given["profile"])
        return replace(self, **out)


# a command-line option -> (its section, its key)
_OVERRIDES = {
    "generations": ("campaign", "generations"),
    "batch_size": ("campaign", "batch_size"),
    "schedule": ("campaign", "schedule"),
    "executor": ("executor", "kind"),
    "parallelism": ("executor", "parallelism"),
    "profile": ("executor", "profile"),
    "poll_interval_s": ("executor", "poll_interval_s"),
    "planner": ("planner", "kind"),
}


def _plain(section: Section) -> dict[str, Any]:
    """A section as TOML-able data (arrays as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(section).items()}  # type: ignore[call-overload]


def _without_defaults(table: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` less the keys that are at their default (keys added in a later version)."""
    return {k: v for k, v in table.items() if k not in defaults or v != defaults[k]}


def _new_keys_at_default(exp: dict[str, Any], section: ExperimentSection) -> None:
    """The keys of issue 18 are written only when set, so that a spec of an older version
    reads and hashes as it did."""
    exp["parse"] = dict(section.parse)
    for key, default in (("parse", {}), ("parse_stderr", False), ("evaluate", [])):
        if exp[key] == default:
            del exp[key]
    if not section.evaluate:
        del exp["evaluate_time_s"]


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- loading

_SECTIONS = ("campaign", "experiment", "space", "planner", "executor", "rigor", "confirm", "stop")
S = TypeVar("S", bound=Section)


def resolve_spec_path(path: str | os.PathLike[str]) -> Path:
    """CAMPAIGN may be a folder holding campaign.toml, or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / "campaign.toml"
    if not p.exists():
        raise SpecError(
            f"campaign spec not found: {p}",
            fix="pass a folder holding campaign.toml, or the .toml file itself "
            "(hpc-agent init NAME scaffolds one)",
        )
    return p.resolve()


def load_spec(path: str | os.PathLike[str]) -> CampaignSpec:
    """Read and validate a campaign.toml (or a folder holding one)."""
    p = resolve_spec_path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: malformed TOML: {e}", fix="fix the syntax at that line") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{p}: not UTF-8 text ({err})", fix="save the spec as UTF-8") from None
    try:
        return parse_spec(data, base=p.parent, source=str(p))
    except SpecError as e:
        raise SpecError(f"{p}: {e.message}", fix=e.fix or _GENERIC_FIX) from None


_GENERIC_FIX = "edit that value; examples/quickstart/campaign.toml is a complete, commented spec"


def parse_spec(data: Mapping[str, Any], base: Path, source: str = "") -> CampaignSpec:
    """Validate a parsed TOML document; relative paths resolve against ``base``."""
    unknown = [k for k in data if k not in _SECTIONS]
    if unknown:
        raise SpecError(
            f"top level: unknown {'section' if len(unknown) == 1 else 'sections'} {unknown}; "
            f"valid sections are: {list(_SECTIONS)}",
            fix=f"remove or rename {unknown[0]!r}",
        )
    for required in ("campaign", "experiment"):
        if required not in data:
            raise SpecError(
                f"missing section [{required}]",
                fix="see examples/quickstart/campaign.toml for a complete spec",
            )
    context = {"base": base}

    def section(name: str, model: type[S]) -> S:
        return validated(model, data.get(name, {}), f"[{name}]", context=context)

    campaign = section("campaign", CampaignSection)
    experiment = section("experiment", ExperimentSection)
    space = _parse_space(data, experiment)
    check_names(space, RESERVED_PARAMS)
    _check_placeholders(experiment, space)
    planner = section("planner", PlannerSection)
    executor = section("executor", ExecutorSection)
    rigor = section("rigor", RigorSection)
    confirm = section("confirm", ConfirmSection)
    stop = section("stop", StopSection)
    return CampaignSpec(campaign, experiment, space, planner, executor, source, rigor, confirm, stop)


def _parse_space(data: Mapping[str, Any], experiment: ExperimentSection) -> Space:
    """``[space]``; without one (or an empty one) the campaign is code-first, which needs
    editable files."""
    table = data.get("space")
    if table:
        return parse_space(table)
    if not experiment.editable:
        raise SpecError(
            "no [space] and no editable file: a campaign needs parameters to search, or files the "
            "agent may change (a code-first campaign)",
            fix="declare [space] parameters (see examples/quickstart), or list "
            '[experiment] editable = ["train.py"] for a campaign of code changes (see examples/nanolm-code)',
        )
    return Space(())


def _check_placeholders(experiment: ExperimentSection, space: Space) -> None:
    """Every ``{name}`` of the commands names a parameter (or seed, args, overrides)."""
    for key, command in (("command", experiment.command), ("evaluate", experiment.evaluate)):
        bad = unknown_placeholders(command, space.names)
        if bad:
            valid = [*space.names, "seed", "args", "overrides"]
            raise SpecError(
                f"[experiment] {key}: placeholder {{{bad[0]}}} names no parameter; valid placeholders are: "
                + ", ".join(f"{{{v}}}" for v in valid),
                fix=f"declare {bad[0]} in [space], or rename the placeholder (write ${{{bad[0]}}} for a "
                "shell variable)",
            )


def spec_from_dict(data: Mapping[str, Any]) -> CampaignSpec:
    """Rebuild a spec from :meth:`CampaignSpec.to_dict` output (paths already absolute)."""
    return parse_spec(data, base=Path("/"), source="")


def journaled_spec(data: Mapping[str, Any]) -> CampaignSpec:
    """A spec as a journal recorded it (:meth:`CampaignSpec.to_dict` output, keys added since
    at their defaults), rebuilt without checks and without importing pydantic: what a reader
    of a results folder (``hpc-agent status``) needs. KeyError or TypeError when it is not
    such a spec."""
    sections: dict[str, type[Section]] = {
        "campaign": CampaignSection,
        "experiment": ExperimentSection,
        "planner": PlannerSection,
        "executor": ExecutorSection,
        "rigor": RigorSection,
        "confirm": ConfirmSection,
        "stop": StopSection,
    }
    built = {name: section.unchecked(data.get(name, {})) for name, section in sections.items()}
    return CampaignSpec(space=Space.from_dict(data.get("space", {})), **built)  # type: ignore[arg-type]
