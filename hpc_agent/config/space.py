"""The search space: what a planner may choose, and the one place that says what is valid.

Three kinds of parameter, declared under ``[space]`` in campaign.toml::

    lr         = { type = "float", low = 1e-4, high = 1e-1, log = true }
    hidden     = { type = "int", low = 16, high = 256, step = 16 }
    activation = { type = "choice", values = ["relu", "tanh", "gelu"] }
    dropout    = [0.0, 0.1, 0.3]          # shorthand for a choice

Every planner (random, TPE, the LLM) proposes through the same :meth:`Space.validate`, so an
LLM's out-of-range value is caught by exactly the rule that bounds TPE. Values are normalised
(``64.0`` for an int becomes ``64``) before anything is written, and :meth:`Space.key` gives
the canonical form used to refuse duplicate configurations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from hpc_agent.config.schema import Check, Range, Section, Words, problem, validated
from hpc_agent.errors import SpecError

_SORTED = json.JSONEncoder(sort_keys=True).encode  # json.dumps(sort_keys=True) makes one a call

Scalar = str | int | float | bool

_TYPES = ("float", "int", "choice")
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class FloatParam:
    """A float in [low, high], uniform or on a log scale, optionally on a grid of ``step``."""

    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    default: float | None = None

    kind = "float"

    def normalize(self, value: object) -> tuple[float | None, str | None]:
        """``(value, None)`` when valid, else ``(None, reason)``."""
        if not _is_number(value):
            return None, f"{self.name}={value!r} is not a number (expected a float in {self.describe()})"
        x = float(value)  # type: ignore[arg-type]
        if not math.isfinite(x):
            return None, f"{self.name}={value!r} is not finite (expected a float in {self.describe()})"
        # a relative tolerance, so that 1e-4 printed as 0.0001 by an LLM still counts as in range
        tol = 1e-9 * max(abs(self.low), abs(self.high), 1e-300)
        if x < self.low - tol or x > self.high + tol:
            return None, f"{self.name}={value!r} is out of range (expected {self.describe()})"
        x = min(max(x, self.low), self.high)
        if self.step is not None:
            x = self.low + round((x - self.low) / self.step) * self.step
            x = float(f"{x:.12g}")
        return x, None

    def sample(self, rng: random.Random) -> float:
        """A random value (log-uniform when ``log``)."""
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        value, _ = self.normalize(min(max(x, self.low), self.high))
        assert value is not None  # sampled inside the bounds by construction
        return value

    def describe(self) -> str:
        """ "float in [0.0001, 0.1], log scale"."""
        scale = ", log scale" if self.log else ""
        step = f", step {self.step:g}" if self.step is not None else ""
        return f"float in [{self.low:g}, {self.high:g}]{scale}{step}"

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of a value (its range in the description, which every server takes)."""
        return {"type": "number", "description": self.describe()}

    def cardinality(self) -> float:
        """How many distinct values (infinite without a step)."""
        if self.step is None:
            return math.inf
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def to_dict(self) -> dict[str, Any]:
        """The parameter as the spec writes it."""
        out: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class IntParam:
    """An integer in [low, high], uniform or on a log scale, optionally every ``step``."""

    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1
    default: int | None = None

    kind = "int"

    def normalize(self, value: object) -> tuple[int | None, str | None]:
        """The value as an int inside the range, or why it is not one."""
        if not _is_number(value) or (isinstance(value, float) and not value.is_integer()):
            return None, f"{self.name}={value!r} is not an integer (expected {self.describe()})"
        x = int(value)  # type: ignore[call-overload]
        if x < self.low or x > self.high:
            return None, f"{self.name}={value!r} is out of range (expected {self.describe()})"
        if (x - self.low) % self.step:
            return None, f"{self.name}={value!r} is not on the grid (expected {self.describe()})"
        return x, None

    def sample(self, rng: random.Random) -> int:
        """A random value (log-uniform when ``log``)."""
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            k = int((min(int(x), self.high) - self.low) // self.step)
        else:
            k = rng.randrange(int(self.cardinality()))
        return self.low + k * self.step

    def describe(self) -> str:
        """ "int in [16, 256], log scale"."""
        scale = ", log scale" if self.log else ""
        step = f", step {self.step}" if self.step != 1 else ""
        return f"int in [{self.low}, {self.high}]{scale}{step}"

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of a value (its range in the description, which every server takes)."""
        return {"type": "integer", "description": self.describe()}

    def cardinality(self) -> float:
        """How many distinct values."""
        return (self.high - self.low) // self.step + 1

    def to_dict(self) -> dict[str, Any]:
        """The parameter as the spec writes it."""
        out: dict[str, Any] = {"type": "int", "low": self.low, "high": self.high, "log": self.log}
        if self.step != 1:
            out["step"] = self.step
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class ChoiceParam:
    """One of a list of values (strings, numbers or booleans)."""

    name: str
    values: tuple[Scalar, ...]
    default: Scalar | None = None

    kind = "choice"

    def normalize(self, value: object) -> tuple[Scalar | None, str | None]:
        """The value if it is one of the choices (1 and 1.0 are the same), else why not."""
        for v in self.values:
            # bool is an int in Python: compare types too, so True never matches 1
            if type(v) is type(value) and v == value:
                return v, None
            if _is_number(v) and _is_number(value) and float(v) == float(value):  # type: ignore[arg-type]
                return v, None
        return None, f"{self.name}={value!r} is not one of {list(self.values)!r}"

    def sample(self, rng: random.Random) -> Scalar:
        """A random choice."""
        return rng.choice(self.values)

    def describe(self) -> str:
        """ "one of ['relu', 'gelu']"."""
        return f"one of {json.dumps(list(self.values))}"

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of a value: one of the choices (typed when they share a type)."""
        out: dict[str, Any] = {"enum": list(self.values), "description": self.describe()}
        types = {_JSON_TYPES.get(type(v)) for v in self.values}
        if len(types) == 1 and None not in types:
            out["type"] = types.pop()
        return out

    def cardinality(self) -> float:
        """How many choices."""
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        """The parameter as the spec writes it."""
        out: dict[str, Any] = {"type": "choice", "values": list(self.values)}
        if self.default is not None:
            out["default"] = self.default
        return out


Param = FloatParam | IntParam | ChoiceParam


@dataclass(frozen=True)
class Space:
    """An ordered set of parameters; the order is the declaration order in campaign.toml."""

    params: tuple[Param, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters' names, in the spec's order."""
        return tuple(p.name for p in self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.params)

    def validate(self, params: Mapping[str, object]) -> tuple[dict[str, Scalar], list[str]]:
        """Normalise a proposed configuration; return it with every problem found (none: valid)."""
        errors: list[str] = []
        out: dict[str, Scalar] = {}
        unknown = [k for k in params if k not in self.names]
        if unknown:
            errors.append(f"unknown parameter(s) {unknown}; valid parameters are: {list(self.names)}")
        for p in self.params:
            if p.name not in params:
                errors.append(f"missing parameter {p.name!r} ({p.describe()})")
                continue
            value, err = p.normalize(params[p.name])
            if err:
                errors.append(err)
            elif value is not None:
                out[p.name] = value
        return out, errors

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of a configuration: every parameter, nothing else."""
        props = {p.name: p.json_schema() for p in self.params}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def contains(self, params: Mapping[str, object]) -> bool:
        """Is this configuration inside the space?"""
        return not self.validate(params)[1]

    def sample(self, rng: random.Random) -> dict[str, Scalar]:
        """A random configuration."""
        return {p.name: p.sample(rng) for p in self.params}

    def defaults(self) -> dict[str, Scalar] | None:
        """The baseline configuration, when every parameter declares a default (``{}`` for an
        empty space: a code-first campaign's baseline is its unmodified code)."""
        if any(p.default is None for p in self.params):
            return None
        return {p.name: p.default for p in self.params}  # type: ignore[misc]

    def cardinality(self) -> float:
        """How many distinct configurations exist (``inf`` with a continuous parameter)."""
        n = 1.0
        for p in self.params:
            n *= p.cardinality()
        return n

    def describe(self) -> dict[str, str]:
        """Each parameter described in words."""
        return {p.name: p.describe() for p in self.params}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The space as the spec writes it."""
        return {p.name: p.to_dict() for p in self.params}

    @classmethod
    def from_dict(cls, table: Mapping[str, Mapping[str, Any]]) -> Space:
        """A space as :meth:`to_dict` wrote it, rebuilt without checks (a journaled spec)."""
        kinds: dict[str, Any] = {"float": FloatParam, "int": IntParam, "choice": ChoiceParam}
        params = []
        for name, raw in table.items():
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k != "type"}
            params.append(kinds[raw["type"]](name=name, **args))
        return cls(tuple(params))

    @staticmethod
    def key(params: Mapping[str, object]) -> str:
        """Canonical text of a configuration: equal configurations give equal keys."""

        def canon(v: object) -> object:
            if isinstance(v, float):
                return float(f"{v:.10g}")
            return v

        return _SORTED({k: canon(params[k]) for k in sorted(params)})


# ---------------------------------------------------------------------------------- parsing


def parse_space(table: Mapping[str, Any], where: str = "[space]") -> Space:
    """Build a :class:`Space` from the ``[space]`` table of campaign.toml, or raise SpecError."""
    if not isinstance(table, Mapping):
        raise SpecError(f"{where} must be a table of parameters", fix=_SPACE_FIX)
    if not table:
        raise SpecError(f"{where} is empty: declare at least one parameter to search", fix=_SPACE_FIX)
    return Space(tuple(_parse_param(name, raw, f"[space.{name}]") for name, raw in table.items()))


_SPACE_FIX = (
    'declare parameters like: lr = { type = "float", low = 1e-4, high = 1e-1, log = true }, '
    'hidden = { type = "int", low = 16, high = 256 }, act = { type = "choice", values = ["relu", "tanh"] }'
)


@dataclass(frozen=True)
class _Range(Section):
    """A float or int parameter as campaign.toml declares it (checks shared by both)."""

    low: Annotated[float, Words(example="low = 1e-4 (the lower bound)")]
    high: Annotated[float, Words(example="high = 0.1 (the upper bound)")]
    log: bool = False
    default: Any = None  # checked against the parameter it belongs to

    def _after(self) -> None:
        low, high, log = self.low, self.high, self.log
        if low > high:
            raise problem(f": low ({low}) > high ({high})", "swap them, or fix the bound")
        if low == high:
            raise problem(f": low == high ({low}): nothing to search", "widen the range")
        if log and low <= 0:
            raise problem(
                f": log scale needs low > 0, got low = {low}",
                "use a positive lower bound (e.g. 1e-6), or set log = false",
            )
        if log and self._stepped():
            raise problem(": log scale and step cannot be combined", "drop one of them")

    def _stepped(self) -> bool:
        return False


@dataclass(frozen=True)
class _FloatInput(_Range):
    type: Literal["float"] = "float"
    step: Annotated[float | None, Range(gt=0)] = None

    def _stepped(self) -> bool:
        return self.step is not None


_BOUND = "integer bounds for an int parameter"


@dataclass(frozen=True)
class _IntInput(_Range):
    low: Annotated[int, Words(expects=_BOUND, example="low = 16 (the lower bound)")]
    high: Annotated[int, Words(expects=_BOUND, example="high = 256 (the upper bound)")]
    type: Literal["int"] = "int"
    step: Annotated[int, Range(ge=1)] = 1

    def _stepped(self) -> bool:
        return self.step != 1


def _listed(values: Any, info: Any) -> Any:
    if not isinstance(values, (list, tuple)) or not values:
        shown = list(values) if isinstance(values, tuple) else values
        raise problem(f": values must be a non-empty list, got {shown!r}", _SPACE_FIX)
    bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
    if bad:
        raise problem(f": values must be strings, numbers or booleans, got {bad[0]!r}")
    if len({json.dumps(v) for v in values}) != len(values):
        raise problem(f": values contain duplicates: {list(values)!r}", "list each value once")
    return tuple(values)


@dataclass(frozen=True)
class _ChoiceInput(Section):
    values: Annotated[
        tuple[Any, ...], Check(_listed, before=True), Words(example='values = ["relu", "tanh"]')
    ]
    type: Literal["choice"] = "choice"
    default: Any = None


_INPUTS: dict[str, type[Section]] = {"float": _FloatInput, "int": _IntInput, "choice": _ChoiceInput}


def _parse_param(name: str, raw: Any, where: str) -> Param:
    if not name.isidentifier():
        raise SpecError(f"{where}: parameter name {name!r} must be a Python identifier", fix=_SPACE_FIX)
    if isinstance(raw, list):
        raw = {"type": "choice", "values": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected a table or a list of choices, got {raw!r}", fix=_SPACE_FIX)
    kind = raw.get("type", _implied_type(raw))
    if kind not in _TYPES:
        raise SpecError(f"{where}: type {kind!r} is not one of {list(_TYPES)}", fix=_SPACE_FIX)
    model = _INPUTS[kind]
    unknown = sorted(set(raw) - set(model.valid_keys()))
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {unknown} for a {kind} parameter; valid keys are: {model.valid_keys()}",
            fix=f"remove or rename {unknown[0]!r}",
        )
    given = validated(model, raw, where)
    param: Param
    if isinstance(given, _ChoiceInput):
        param = ChoiceParam(name, given.values)
    elif isinstance(given, _IntInput):
        param = IntParam(name, given.low, given.high, given.log, given.step)
    else:
        assert isinstance(given, _FloatInput)  # _INPUTS has three kinds
        param = FloatParam(name, given.low, given.high, given.log, given.step)
    with_default: Param = _with_default(param, raw, where)
    return with_default


def _implied_type(raw: Mapping[str, Any]) -> str:
    """The type of a parameter that does not say: a choice with values, an int with integer
    bounds (and no log scale), else a float."""
    if "values" in raw:
        return "choice"
    if isinstance(raw.get("low"), int) and isinstance(raw.get("high"), int) and not raw.get("log"):
        return "int"
    return "float"


def _with_default(param: Any, raw: Mapping[str, Any], where: str) -> Any:
    if "default" not in raw:
        return param
    value, err = param.normalize(raw["default"])
    if err:
        raise SpecError(f"{where}: default is invalid: {err}", fix="pick a default inside the space")
    return dataclasses.replace(param, default=value)


def check_names(space: Space, reserved: Sequence[str]) -> None:
    """SpecError when a parameter's name is one hpc-agent reserves (``seed``)."""
    clash = [n for n in space.names if n in reserved]
    if clash:
        raise SpecError(f"[space]: parameter name(s) {clash} are reserved", fix="rename them")


def config_key(
    params: Mapping[str, Any], patch: Sequence[Mapping[str, Any]] | None, parent: str | None
) -> str:
    """Identity of an experiment: its configuration, the code it runs on (the parent whose
    code it inherits) and its own edits. Equal keys are duplicates; the same parameters on
    another parent's code are a new experiment."""
    key = Space.key(params)
    if parent:
        key += "@" + parent
    if patch:
        text = json.dumps([dict(e) for e in patch], sort_keys=True)
        key += "#" + hashlib.sha256(text.encode()).hexdigest()[:12]
    return key
