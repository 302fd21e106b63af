"""campaign.toml -> frozen dataclasses, with every default in one block.

A campaign is a folder holding ``campaign.toml`` (the spec), the training code and, optionally,
a research brief. Everything here is checked before anything is written: an unknown key fails
listing the valid ones, a value of the wrong type or range names the key and the fix. Paths
in the spec are relative to the spec's folder and are resolved here, once.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hpc_agent.config.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONFIRM_SEEDS,
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
from hpc_agent.config.space import Space, check_names, parse_space
from hpc_agent.errors import SpecError
from hpc_agent.job.script import pattern_problem, unknown_placeholders

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


PLANNERS = ("auto", *PLANNER_KINDS)  # "auto": the LLM where an endpoint is configured, else TPE
EXECUTORS = ("auto", *EXECUTOR_KINDS)  # "auto": SLURM where sbatch is on PATH, else local
TPE_STRATEGIES = ("refine", "liar")  # hpc_agent.planners.tpe says what each does
MODES = ("min", "max")
OBJECTIVES = ("last", "best")
SCHEDULES = ("sync", "async")
STRUCTURED_OUTPUT = ("auto", "json_schema", "json_object", "text")
RESERVED_PARAMS = ("seed",)  # injected by hpc-agent into every trial's params
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]{0,127}$")


@dataclass(frozen=True)
class CampaignSection:
    """``[campaign]``: what to optimize and how much of it to run."""

    name: str
    metric: str
    mode: str = "min"
    objective: str = "last"  # "last": a trial's last logged value; "best": its best one
    goal: str = ""
    report_metrics: tuple[str, ...] = ()
    holdout_metrics: tuple[str, ...] = ()  # gathered and exported, never shown to a planner
    generations: int = DEFAULT_GENERATIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    seeds: tuple[int, ...] = (0,)  # each proposal runs once per seed
    seed: int = 0  # the planners' seed: same history + same seed = same plan
    baseline: bool = True  # start with the space's defaults when every parameter has one
    schedule: str = DEFAULT_SCHEDULE  # "sync": a generation is a barrier; "async": they overlap
    max_in_flight: int = 0  # async: the slots, trials running at once (0: one batch, seeds included)
    refill_at: int = 0  # async: plan when this many slots are free (0: 1; an LLM planner: half the slots)

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


@dataclass(frozen=True)
class ExperimentSection:
    """``[experiment]``: how to run one trial (command, budget, editable files, retries)."""

    command: tuple[str, ...]
    workdir: str  # absolute, resolved against the spec's folder
    editable: tuple[str, ...] = ()
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    timeout_min: int = 0  # the job's limit; 0 = derived from the budget
    env: tuple[tuple[str, str], ...] = ()
    max_retries: int = DEFAULT_MAX_RETRIES
    max_progress_requeues: int = DEFAULT_MAX_PROGRESS_REQUEUES
    parse: tuple[tuple[str, str], ...] = ()  # metric -> regex on the output (hpc_agent.job.script)
    parse_stderr: bool = False  # the patterns read stderr too
    evaluate: tuple[str, ...] = ()  # the fixed evaluator's command, run from the unpatched snapshot
    evaluate_time_s: float = DEFAULT_EVALUATE_TIME_S  # the evaluator's own budget

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


@dataclass(frozen=True)
class PlannerSection:
    """``[planner]``: who plans, and how to reach and pay an LLM."""

    kind: str = "auto"
    model: str = ""  # "" -> $HPC_AGENT_MODEL
    base_url: str = ""  # "" -> $OPENAI_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable; the key is never stored
    temperature: float = DEFAULT_LLM_TEMPERATURE
    max_repairs: int = DEFAULT_LLM_MAX_REPAIRS
    max_retries: int = DEFAULT_LLM_MAX_RETRIES
    request_timeout_s: float = DEFAULT_LLM_TIMEOUT_S
    context_tokens: int = DEFAULT_LLM_CONTEXT_TOKENS
    max_tokens: int = 0  # a reply's room; 0 -> sized to each request's task (analysis + proposals)
    check_model: bool = True  # false: accept a model the endpoint does not list (incomplete gateway lists)
    structured_output: str = "auto"
    brief: str = ""  # path of a research brief (program.md); "" -> the one shipped
    price_in_per_mtok: float = 0.0  # cost estimate, currency units per million tokens
    price_out_per_mtok: float = 0.0
    tpe_startup_trials: int = DEFAULT_TPE_STARTUP_TRIALS
    tpe_strategy: str = DEFAULT_TPE_STRATEGY


@dataclass(frozen=True)
class ExecutorSection:
    """``[executor]``: where trials run; single profile keys may be overridden here."""

    kind: str = "auto"
    parallelism: int = 0  # 0 = local: number of cores; slurm: no throttle (or the profile's)
    profile: str = ""  # a name from slurm_templates/ or a path to a profile .toml
    poll_interval_s: float = 0.0  # 0 = local 0.5 s, slurm 30 s
    overrides: tuple[tuple[str, Any], ...] = ()  # single profile values ([executor] partition = ...)

    def overrides_dict(self) -> dict[str, Any]:
        """The profile keys this spec overrides."""
        return dict(self.overrides)


@dataclass(frozen=True)
class RigorSection:
    """``[rigor]``: when a challenger becomes the champion (:mod:`hpc_agent.science.rigor`)."""

    rule: str = "se"  # "se": improvement > k * SE of the difference; "welch": Welch's t-test
    k: float = DEFAULT_RIGOR_K
    alpha: float = DEFAULT_RIGOR_ALPHA
    control: bool = True  # with one seed: run the champion again (a control) to measure the noise


@dataclass(frozen=True)
class StopSection:
    """``[stop]``: when the search ends besides its generations (:mod:`hpc_agent.science.budget`). Zero
    (or an absent ``target``) turns a rule off."""

    max_trials: int = 0  # trials of the search (controls included; confirmations not)
    max_hours: float = 0.0  # wall-clock hours since the campaign began
    max_gpu_hours: float = 0.0  # finished trials' hours times their GPUs
    target: float | None = None  # the champion reached it (<= with mode min, >= with max)
    plateau_trials: int = 0  # this many search trials finished without a new champion


@dataclass(frozen=True)
class ConfirmSection:
    """``[confirm]``: screen short, confirm long: the best configurations run again with more
    seeds and a larger budget, and the final champion is decided on those runs."""

    top_k: int = 0  # 0: no confirmation stage
    seeds: int = DEFAULT_CONFIRM_SEEDS
    budget_multiplier: float = 1.0  # HPC_AGENT_TIME_BUDGET_S and HPC_AGENT_FIDELITY scale with it
    every: int = 0  # 0: once, after the last generation; N: after every N generations


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
        """The resolved spec as plain data (TOML/JSON-safe); inverse of :func:`spec_from_dict`."""
        camp = asdict(self.campaign)
        camp["report_metrics"] = list(self.campaign.report_metrics)
        camp["holdout_metrics"] = list(self.campaign.holdout_metrics)
        camp["seeds"] = list(self.campaign.seeds)
        exp = asdict(self.experiment)
        exp["command"] = list(self.experiment.command)
        exp["editable"] = list(self.experiment.editable)
        exp["env"] = dict(self.experiment.env)
        _new_keys_at_default(exp, self.experiment)
        exe = {k: v for k, v in asdict(self.executor).items() if k != "overrides"}
        exe.update(self.executor.overrides_dict())
        return {
            "campaign": camp,
            "experiment": exp,
            "space": self.space.to_dict(),
            "planner": asdict(self.planner),
            "executor": exe,
            "rigor": asdict(self.rigor),
            "confirm": asdict(self.confirm),
            "stop": {k: v for k, v in asdict(self.stop).items() if v is not None},
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
        """A copy with command-line overrides applied (``generations``, ``batch_size``, ...)."""
        camp, exe, plan = asdict(self.campaign), asdict(self.executor), asdict(self.planner)
        for key, value in values.items():
            if value is None:
                continue
            if key in ("generations", "batch_size"):
                camp[key] = _positive_int(value, f"--{key.replace('_', '-')}")
            elif key == "schedule":
                camp[key] = _choice(value, SCHEDULES, "--schedule")
            elif key == "executor":
                exe["kind"] = value
            elif key in ("parallelism", "profile", "poll_interval_s"):
                exe[key] = value
            elif key == "planner":
                plan["kind"] = value
            else:  # pragma: no cover - programming error, not user input
                raise KeyError(key)
        camp["report_metrics"] = tuple(camp["report_metrics"])
        camp["holdout_metrics"] = tuple(camp["holdout_metrics"])
        camp["seeds"] = tuple(camp["seeds"])
        exe["overrides"] = tuple(exe["overrides"])
        return replace(
            self,
            campaign=CampaignSection(**camp),
            planner=PlannerSection(**plan),
            executor=ExecutorSection(**exe),
        )


def _new_keys_at_default(exp: dict[str, Any], section: ExperimentSection) -> None:
    """The keys of issue 18 are written only when set, so that a spec of an older version
    reads and hashes as it did."""
    exp["parse"] = dict(section.parse)
    exp["evaluate"] = list(section.evaluate)
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
_CAMPAIGN_KEYS = (
    "name", "goal", "goal_file", "metric", "mode", "objective", "report_metrics", "holdout_metrics",
    "generations", "batch_size", "seeds", "seed", "baseline", "schedule", "max_in_flight", "refill_at",
)  # fmt: skip
_EXPERIMENT_KEYS = (
    "command", "workdir", "editable", "time_budget_s", "kill_grace_s", "timeout_min", "env",
    "max_retries", "max_progress_requeues", "parse", "parse_stderr", "evaluate", "evaluate_time_s",
)  # fmt: skip
_PLANNER_KEYS = tuple(PlannerSection.__dataclass_fields__)
_EXECUTOR_KEYS = ("kind", "parallelism", "profile", "poll_interval_s")


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
    _only(data, _SECTIONS, "top level", "sections")
    for required in ("campaign", "experiment"):
        if required not in data:
            raise SpecError(
                f"missing section [{required}]",
                fix="see examples/quickstart/campaign.toml for a complete spec",
            )
    for sec in _SECTIONS:
        if sec in data and not isinstance(data[sec], Mapping):
            raise SpecError(f"[{sec}] must be a table, got {data[sec]!r}")
    campaign = _parse_campaign(data["campaign"], base)
    experiment = _parse_experiment(data["experiment"], base)
    space = _parse_space(data, experiment)
    check_names(space, RESERVED_PARAMS)
    _check_placeholders(experiment, space)
    planner = _parse_planner(data.get("planner", {}), base)
    executor = _parse_executor(data.get("executor", {}), base)
    rigor = _parse_rigor(data.get("rigor", {}))
    confirm = _parse_confirm(data.get("confirm", {}))
    stop = _parse_stop(data.get("stop", {}), campaign)
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


def _only(table: Mapping[str, Any], valid: tuple[str, ...], where: str, what: str = "keys") -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise SpecError(
            f"{where}: unknown {what[:-1] if len(unknown) == 1 else what} {unknown}; "
            f"valid {what} are: {list(valid)}",
            fix=f"remove or rename {unknown[0]!r}",
        )


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise SpecError(f"{where} {key} = {value!r}: expected {names}", fix=f"set {key} to a {names}")
    return value


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        key = name.split()[-1]
        raise SpecError(
            f"{name} = {value!r}: expected an integer >= {minimum}",
            fix=f"set {key} to a whole number such as {max(minimum, 4) if minimum else 2}",
        )
    return value


def _choice(value: Any, options: tuple[str, ...], name: str) -> str:
    if value not in options:
        key = name.split()[-1]
        raise SpecError(
            f"{name} = {value!r}: expected one of {list(options)}", fix=f'set {key} = "{options[0]}"'
        )
    return str(value)


def _parse_campaign(t: Mapping[str, Any], base: Path) -> CampaignSection:
    w = "[campaign]"
    _only(t, _CAMPAIGN_KEYS, w)
    name = _get(t, "name", str, w, None)
    if name is None:
        raise SpecError(f"{w}: missing name", fix='add name = "my-campaign" (it names the results folder)')
    if not _NAME_RE.match(name):
        raise SpecError(
            f"{w} name = {name!r}: expected letters, digits, '.', '_' or '-' (at most 64)",
            fix="rename the campaign; the name becomes a folder and a SLURM job name",
        )
    metric = _get(t, "metric", str, w, None)
    if metric is None:
        raise SpecError(f"{w}: missing metric", fix='add metric = "val_loss" (the key your code logs)')
    if not _METRIC_RE.match(metric):
        raise SpecError(f"{w} metric = {metric!r}: expected a JSON key such as 'val_loss'")
    goal = _get(t, "goal", str, w, "")
    goal_file = _get(t, "goal_file", str, w, "")
    if goal and goal_file:
        raise SpecError(f"{w}: set goal or goal_file, not both")
    if goal_file:
        gp = (base / goal_file).resolve()
        if not gp.is_file():
            raise SpecError(f"{w} goal_file = {goal_file!r}: no such file ({gp})")
        goal = gp.read_text(encoding="utf-8")
    report = _metric_list(t, "report_metrics", w)
    holdout = _metric_list(t, "holdout_metrics", w)
    shared = [m for m in holdout if m == metric or m in report]
    if shared:
        raise SpecError(
            f"{w} holdout_metrics: {shared[0]!r} is also the objective or a report metric",
            fix="a held-out metric is never shown to a planner: list it in holdout_metrics only",
        )
    seeds_raw = _get(t, "seeds", (int, list), w, 1)
    if isinstance(seeds_raw, int):
        seeds = tuple(range(_positive_int(seeds_raw, f"{w} seeds")))
    else:
        if not seeds_raw or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds_raw):
            raise SpecError(f"{w} seeds = {seeds_raw!r}: expected a count or a non-empty list of integers")
        if len(set(seeds_raw)) != len(seeds_raw):
            raise SpecError(f"{w} seeds = {seeds_raw!r}: seeds repeat")
        seeds = tuple(seeds_raw)
    return CampaignSection(
        name=name,
        metric=metric,
        mode=_choice(_get(t, "mode", str, w, "min"), MODES, f"{w} mode"),
        objective=_choice(_get(t, "objective", str, w, "last"), OBJECTIVES, f"{w} objective"),
        goal=goal.strip(),
        report_metrics=tuple(m for m in report if m != metric),
        holdout_metrics=tuple(holdout),
        generations=_positive_int(_get(t, "generations", int, w, DEFAULT_GENERATIONS), f"{w} generations"),
        batch_size=_positive_int(_get(t, "batch_size", int, w, DEFAULT_BATCH_SIZE), f"{w} batch_size"),
        seeds=seeds,
        seed=_get(t, "seed", int, w, 0),
        baseline=_get(t, "baseline", bool, w, True),
        schedule=_choice(_get(t, "schedule", str, w, DEFAULT_SCHEDULE), SCHEDULES, f"{w} schedule"),
        max_in_flight=_positive_int(_get(t, "max_in_flight", int, w, 0), f"{w} max_in_flight", 0),
        refill_at=_positive_int(_get(t, "refill_at", int, w, 0), f"{w} refill_at", 0),
    )


def _metric_list(t: Mapping[str, Any], key: str, w: str) -> list[str]:
    names = _get(t, key, list, w, [])
    bad = [m for m in names if not isinstance(m, str) or not _METRIC_RE.match(m)]
    if bad:
        raise SpecError(f"{w} {key}: {bad[0]!r} is not a metric name", fix=f'e.g. {key} = ["val_acc"]')
    return list(names)


def _parse_rigor(t: Mapping[str, Any]) -> RigorSection:
    w = "[rigor]"
    _only(t, tuple(RigorSection.__dataclass_fields__), w)
    d = RigorSection()
    k = _get(t, "k", float, w, d.k)
    alpha = _get(t, "alpha", float, w, d.alpha)
    if k < 0:
        raise SpecError(f"{w} k = {k}: expected a number of standard errors >= 0", fix="k = 2.0")
    if not 0 < alpha < 1:
        raise SpecError(f"{w} alpha = {alpha}: expected a level in (0, 1)", fix="alpha = 0.05")
    rule = _choice(_get(t, "rule", str, w, d.rule), ("se", "welch"), f"{w} rule")
    return RigorSection(rule=rule, k=k, alpha=alpha, control=_get(t, "control", bool, w, d.control))


def _parse_stop(t: Mapping[str, Any], campaign: CampaignSection) -> StopSection:
    w = "[stop]"
    _only(t, tuple(StopSection.__dataclass_fields__), w)
    hours = {k: _get(t, k, float, w, 0.0) for k in ("max_hours", "max_gpu_hours")}
    for k, v in hours.items():
        if v < 0 or not math.isfinite(v):
            raise SpecError(
                f"{w} {k} = {v}: expected a number of hours >= 0", fix=f"e.g. {k} = 12 (0: no limit)"
            )
    target = _get(t, "target", float, w, None)
    if target is not None and not math.isfinite(target):
        raise SpecError(f"{w} target = {target}: expected a finite value of {campaign.metric}")
    return StopSection(
        max_trials=_positive_int(_get(t, "max_trials", int, w, 0), f"{w} max_trials", 0),
        max_hours=hours["max_hours"],
        max_gpu_hours=hours["max_gpu_hours"],
        target=target,
        plateau_trials=_positive_int(_get(t, "plateau_trials", int, w, 0), f"{w} plateau_trials", 0),
    )


def _parse_confirm(t: Mapping[str, Any]) -> ConfirmSection:
    w = "[confirm]"
    _only(t, tuple(ConfirmSection.__dataclass_fields__), w)
    d = ConfirmSection()
    multiplier = _get(t, "budget_multiplier", float, w, d.budget_multiplier)
    if multiplier <= 0:
        raise SpecError(f"{w} budget_multiplier = {multiplier}: expected a positive number", fix="e.g. 4.0")
    return ConfirmSection(
        top_k=_positive_int(_get(t, "top_k", int, w, d.top_k), f"{w} top_k", 0),
        seeds=_positive_int(_get(t, "seeds", int, w, d.seeds), f"{w} seeds"),
        budget_multiplier=multiplier,
        every=_positive_int(_get(t, "every", int, w, d.every), f"{w} every", 0),
    )


def _parse_experiment(t: Mapping[str, Any], base: Path) -> ExperimentSection:
    w = "[experiment]"
    _only(t, _EXPERIMENT_KEYS, w)
    command = _command(t, w)
    workdir_raw = _get(t, "workdir", str, w, ".")
    workdir = (base / workdir_raw).resolve()
    if not workdir.is_dir():
        raise SpecError(f"{w} workdir = {workdir_raw!r}: no such folder ({workdir})")
    editable = _editable(t, w, workdir)
    budget = _get(t, "time_budget_s", float, w, DEFAULT_TIME_BUDGET_S)
    if budget <= 0:
        raise SpecError(f"{w} time_budget_s = {budget}: expected a positive number of seconds")
    grace = _get(t, "kill_grace_s", float, w, DEFAULT_KILL_GRACE_S)
    if grace < 0:
        raise SpecError(f"{w} kill_grace_s = {grace}: expected >= 0")
    timeout_min = _get(t, "timeout_min", int, w, 0)
    if timeout_min < 0:
        raise SpecError(f"{w} timeout_min = {timeout_min}: expected a positive number of minutes")
    if timeout_min and timeout_min * 60 < budget:
        raise SpecError(
            f"{w} timeout_min = {timeout_min} is shorter than time_budget_s = {budget:g}",
            fix="raise timeout_min (the job's limit) above the budget, or leave it out to derive it",
        )
    env = _get(t, "env", dict, w, {})
    for k, v in env.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise SpecError(f"{w} env.{k} = {v!r}: expected a string or a number")
        if k.startswith("HPC_AGENT_"):
            raise SpecError(f"{w} env.{k}: HPC_AGENT_* variables are set by hpc-agent itself")
    retries = _get(t, "max_retries", int, w, DEFAULT_MAX_RETRIES)
    progress = _get(t, "max_progress_requeues", int, w, DEFAULT_MAX_PROGRESS_REQUEUES)
    evaluate = _command(t, w, "evaluate") if "evaluate" in t else ()
    evaluate_time = _get(t, "evaluate_time_s", float, w, DEFAULT_EVALUATE_TIME_S)
    if evaluate_time <= 0:
        raise SpecError(f"{w} evaluate_time_s = {evaluate_time}: expected a positive number of seconds")
    if evaluate and timeout_min and timeout_min * 60 < budget + evaluate_time:
        raise SpecError(
            f"{w} timeout_min = {timeout_min} is shorter than time_budget_s + evaluate_time_s = "
            f"{budget + evaluate_time:g} s: the evaluator runs in the same job",
            fix="raise timeout_min, lower evaluate_time_s, or leave timeout_min out to derive it",
        )
    return ExperimentSection(
        command=command,
        workdir=str(workdir),
        editable=editable,
        time_budget_s=budget,
        kill_grace_s=grace,
        timeout_min=timeout_min,
        env=tuple((str(k), str(v)) for k, v in env.items()),
        max_retries=_positive_int(retries, f"{w} max_retries", 0),
        max_progress_requeues=_positive_int(progress, f"{w} max_progress_requeues", 0),
        parse=_parse_patterns(t, w),
        parse_stderr=_get(t, "parse_stderr", bool, w, False),
        evaluate=evaluate,
        evaluate_time_s=evaluate_time,
    )


def _parse_patterns(t: Mapping[str, Any], w: str) -> tuple[tuple[str, str], ...]:
    """``parse = { metric = 'regex with a group' }``: each name a metric, each pattern checked."""
    table = _get(t, "parse", dict, w, {})
    out = []
    for name, pattern in table.items():
        if not _METRIC_RE.match(name):
            raise SpecError(
                f"{w} parse: {name!r} is not a metric name", fix="use the name your campaign reads"
            )
        if not isinstance(pattern, str):
            raise SpecError(
                f"{w} parse.{name} = {pattern!r}: expected a regular expression (a string)",
                fix=f"write it in single quotes: {name} = '^{name}:\\s*([-+0-9.eE]+)'",
            )
        problem = pattern_problem(pattern)
        if problem:
            raise SpecError(
                f"{w} parse.{name} = {pattern!r}: the pattern {problem}",
                fix=f"e.g. {name} = '^{name}:\\s*([-+0-9.eE]+)' (single quotes keep the backslashes)",
            )
        out.append((str(name), pattern))
    return tuple(out)


def _command(t: Mapping[str, Any], w: str, key: str = "command") -> tuple[str, ...]:
    raw_cmd = _get(t, key, (str, list), w, None)
    example = "python train.py" if key == "command" else "python prepare.py --evaluate"
    if raw_cmd is None:
        raise SpecError(f"{w}: missing {key}", fix=f'add {key} = "{example}"')
    if isinstance(raw_cmd, str):
        try:
            command = tuple(shlex.split(raw_cmd))
        except ValueError as e:
            raise SpecError(f"{w} {key} = {raw_cmd!r}: cannot be split into words ({e})") from None
    else:
        if not all(isinstance(c, str) for c in raw_cmd):
            raise SpecError(f"{w} {key}: a list command must hold strings only, got {raw_cmd!r}")
        command = tuple(raw_cmd)
    if not command:
        raise SpecError(f"{w} {key} is empty", fix=f'set {key} = "{example}"')
    return command


def _editable(t: Mapping[str, Any], w: str, workdir: Path) -> tuple[str, ...]:
    editable = _get(t, "editable", list, w, [])
    for name in editable:
        if not isinstance(name, str) or not name:
            raise SpecError(f"{w} editable: {name!r} is not a file name")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise SpecError(
                f"{w} editable: {name!r} must be a path inside workdir, without '..'",
                fix='list files relative to workdir, e.g. editable = ["train.py"]',
            )
        if not (workdir / name).is_file():
            raise SpecError(f"{w} editable: {name!r} is not a file in workdir ({workdir / name})")
    return tuple(str(Path(e)) for e in editable)


def _parse_planner(t: Mapping[str, Any], base: Path) -> PlannerSection:
    w = "[planner]"
    _only(t, _PLANNER_KEYS, w)
    d = PlannerSection()
    kind = _choice(_get(t, "kind", str, w, d.kind), PLANNERS, f"{w} kind")
    so = _choice(
        _get(t, "structured_output", str, w, d.structured_output), STRUCTURED_OUTPUT, f"{w} structured_output"
    )
    brief = _get(t, "brief", str, w, "")
    if brief:
        bp = (base / brief).resolve()
        if not bp.is_file():
            raise SpecError(f"{w} brief = {brief!r}: no such file ({bp})")
        brief = str(bp)
    base_url = _get(t, "base_url", str, w, "")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise SpecError(f"{w} base_url = {base_url!r}: expected an http(s) URL such as http://host:8000/v1")
    temperature = _get(t, "temperature", float, w, d.temperature)
    if not 0 <= temperature <= 2:
        raise SpecError(f"{w} temperature = {temperature}: expected a number in [0, 2]")
    out = PlannerSection(
        kind=kind,
        model=_get(t, "model", str, w, ""),
        base_url=base_url,
        api_key_env=_get(t, "api_key_env", str, w, d.api_key_env),
        temperature=temperature,
        max_repairs=_positive_int(_get(t, "max_repairs", int, w, d.max_repairs), f"{w} max_repairs", 0),
        max_retries=_positive_int(_get(t, "max_retries", int, w, d.max_retries), f"{w} max_retries", 0),
        request_timeout_s=_get(t, "request_timeout_s", float, w, d.request_timeout_s),
        context_tokens=_positive_int(
            _get(t, "context_tokens", int, w, d.context_tokens), f"{w} context_tokens", 2000
        ),
        max_tokens=_positive_int(_get(t, "max_tokens", int, w, d.max_tokens), f"{w} max_tokens", 0),
        check_model=_get(t, "check_model", bool, w, d.check_model),
        structured_output=so,
        brief=brief,
        price_in_per_mtok=_get(t, "price_in_per_mtok", float, w, 0.0),
        price_out_per_mtok=_get(t, "price_out_per_mtok", float, w, 0.0),
        tpe_startup_trials=_positive_int(
            _get(t, "tpe_startup_trials", int, w, d.tpe_startup_trials), f"{w} tpe_startup_trials"
        ),
        tpe_strategy=_choice(
            _get(t, "tpe_strategy", str, w, d.tpe_strategy), TPE_STRATEGIES, f"{w} tpe_strategy"
        ),
    )
    if out.request_timeout_s <= 0:
        raise SpecError(f"{w} request_timeout_s = {out.request_timeout_s}: expected > 0")
    return out


def _parse_executor(t: Mapping[str, Any], base: Path) -> ExecutorSection:
    w = "[executor]"
    _only(t, _EXECUTOR_KEYS + tuple(PROFILE_KEYS), w)  # a profile's keys may be overridden one by one
    kind = _choice(_get(t, "kind", str, w, "auto"), EXECUTORS, f"{w} kind")
    parallelism = _positive_int(_get(t, "parallelism", int, w, 0), f"{w} parallelism", 0)
    poll = _get(t, "poll_interval_s", float, w, 0.0)
    if poll < 0:
        raise SpecError(f"{w} poll_interval_s = {poll}: expected >= 0")
    overrides = tuple((k, v) for k, v in t.items() if k not in _EXECUTOR_KEYS)
    profile = _get(t, "profile", str, w, "")
    if profile.endswith(".toml") or "/" in profile:  # a path: relative to the spec, like every path
        profile = str((base / profile).resolve())
    return ExecutorSection(kind, parallelism, profile, poll, overrides)


# ------------------------------------------------------------------------------- writing


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for resolved specs (tables of scalars, lists and inline tables)."""
    lines: list[str] = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        sub: list[tuple[str, Mapping[str, Any]]] = []
        for key, value in table.items():
            if isinstance(value, Mapping) and section != "space":
                sub.append((key, value))
                continue
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in sub:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        return '""'
    raise TypeError(f"cannot write {value!r} as TOML")
