"""One declaration per input: how campaign.toml's sections, the space's parameters, the SLURM
profiles, a patch's edits (:mod:`hpc_agent.edits.patches`) and the LLM's reply
(:mod:`hpc_agent.planners.llm.schema`) are declared and checked, and the one place that turns
pydantic's errors into the project's messages.

An input is declared once, as a frozen dataclass whose fields carry their type, default and,
in ``Annotated``, their range (:class:`Range`), their own checks (:class:`Check`) and the
words of their messages (:class:`Words`). :func:`validated` reads a table into it through
pydantic: strict types (``"3"`` is no integer, ``true`` no number), the ranges, unknown keys
refused (``extra="forbid"``). Why pydantic: one declaration gives the types, the ranges,
``extra="forbid"`` and a JSON schema, instead of a hand-written check per key; and why
dataclasses under it: a results folder's reader (``hpc-agent status``) imports the
declarations without paying for pydantic, which is imported on the first validation only.

The JSON schema sent to an LLM comes from the same declaration (:func:`json_schema`), in
the plain form every server that takes a schema takes.

Errors read as they always have: ``error:`` naming the key as its TOML path (``[campaign]
batch_size = 0``) and the bad value, what was expected, and a ``fix:``; an unknown key lists
the valid ones. A check a type cannot express (a folder exists, two keys agree) raises
:func:`problem`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from hpc_agent.errors import SpecError, UserError

S = TypeVar("S", bound="Section")

_TYPE_NAMES = {  # pydantic's error type -> the value expected, in the words of a TOML file
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "dict_type": "a table",
}
_BOUNDS = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


class Problem(ValueError):
    """A check a type cannot express failed. ``text`` follows the table's name (``" name =
    'x': expected ..."`` or ``": set goal or goal_file, not both"``); ``{key}`` in it names
    the key the check belongs to."""

    def __init__(self, text: str, fix: str = "") -> None:
        super().__init__(text)
        self.text, self.fix = text, fix


def problem(text: str, fix: str = "") -> Problem:
    """The error of a check (raise it from a :class:`Check` or a section's hooks)."""
    return Problem(text, fix)


@dataclasses.dataclass(frozen=True)
class Words:
    """What a field says in its messages: ``example`` (the fix when it is missing), ``what``
    (the kind of number, "a number of hours": its range follows), ``expects`` (the whole
    expected value, instead of the type's name) and ``fix``."""

    example: str = ""
    what: str = ""
    expects: str = ""
    fix: str = ""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number (``Range(ge=1)``); ``finite`` refuses inf and nan."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = dict(handler(source))
        target = schema if schema.get("type") in ("int", "float") else schema.get("schema", schema)
        target.update({k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "finite"})
        if self.finite:
            target["allow_inf_nan"] = False
        return schema

    def describe(self) -> str:
        """``>= 1``, ``> 0`` or ``in (0, 1)``."""
        low = (self.ge, "[") if self.ge is not None else (self.gt, "(") if self.gt is not None else None
        high = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
        if low and high:
            return f"in {low[1]}{_num(low[0])}, {_num(high[0])}{high[1]}"
        if low:
            return f"{'>=' if low[1] == '[' else '>'} {_num(low[0])}"
        return f"{'<=' if high and high[1] == ']' else '<'} {_num(high[0]) if high else ''}"


@dataclasses.dataclass(frozen=True)
class Check:
    """A field's own check (or, ``before=True``, its conversion of the raw value; or,
    ``plain=True``, the whole of its check: the type then only gives the JSON schema):
    ``fn(value, info)`` returns the value or raises :func:`problem`; ``info.context`` holds
    what the caller of :func:`validated` gave (``base``, the spec's folder), ``info.data`` the
    fields checked before it."""

    fn: Callable[[Any, Any], Any]
    before: bool = False
    plain: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        if self.plain:
            return core_schema.with_info_plain_validator_function(
                self.fn, json_schema_input_schema=handler(source)
            )
        if self.before:
            return core_schema.with_info_before_validator_function(self.fn, handler(source))
        return core_schema.with_info_after_validator_function(self.fn, handler(source))


class Section:
    """The base of a declared table (subclasses are frozen dataclasses). ``_before`` may
    reshape the raw table (keys that are not fields), ``_after`` checks keys together;
    ``unknown_keys`` says what becomes of a key it does not declare (``"forbid"``: an error
    naming it; ``"ignore"``: read past, for what a model writes)."""

    unknown_keys: ClassVar[str] = "forbid"

    @classmethod
    def valid_keys(cls) -> list[str]:
        """The keys an input table may hold (listed when one is unknown)."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def _before(cls, data: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        return data

    def _after(self) -> None:
        return None

    @classmethod
    def unchecked(cls: type[S], table: Mapping[str, Any]) -> S:
        """A table this version wrote itself (a journaled, resolved spec) rebuilt without
        checks, and without importing pydantic; an unknown key raises TypeError."""
        data = _arrays_as_tuples(cls._before(dict(table), {}))
        for name, hint in _hints(cls).items():
            for check in _metadata(hint, Check):
                if check.before and name in data:
                    data[name] = check.fn(data[name], None)
        return cls(**data)


def validated(
    section: type[S],
    table: Any,
    where: str,
    *,
    context: Mapping[str, Any] | None = None,
    error: type[UserError] = SpecError,
    fix: str = "",
    sep: str = " ",
    keys_in_fix: bool = False,
) -> S:
    """``table`` read into ``section``, or ``error`` naming the key (``where`` is the table's
    TOML name, ``[campaign]``) and the bad value. ``fix`` replaces the generic fix of a wrong
    type or range (``{key}`` names the key); ``sep`` goes between ``where`` and the key
    (``": "`` for a profile file); ``keys_in_fix`` lists the valid keys in the fix of an
    unknown one too."""
    from pydantic import ValidationError

    if not isinstance(table, Mapping):
        raise error(f"{where} must be a table, got {table!r}")
    ctx = dict(context or {})
    try:
        data = _arrays_as_tuples(section._before(dict(table), ctx))
        model = _model(section).model_validate(data, context=ctx)
        out = section(**{f.name: getattr(model, f.name) for f in dataclasses.fields(section)})  # type: ignore[arg-type]
        out._after()
        return out
    except Problem as p:
        raise error(f"{where}{p.text}", fix=p.fix or None) from None
    except ValidationError as e:
        errors = e.errors(include_url=False)
        for err in errors:  # a value as the table wrote it (a list, before it became a tuple)
            if len(err["loc"]) == 1 and err["loc"][0] in table:
                err["input"] = table[err["loc"][0]]
        message, default_fix = _words(section, errors, where, sep, fix, keys_in_fix)
        raise error(message, fix=default_fix or None) from None


def json_schema(
    section: type[Section],
    *,
    fill: Mapping[str, Mapping[str, Any]] | None = None,
    enums: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The JSON schema of a declaration, from the same one declaration, in the plain form
    every server that takes a schema takes: nested declarations written in place (no
    ``$ref``), no titles or defaults, every property required and no other allowed (what is
    asked for: the check may accept less, as a field's default says).

    ``fill`` gives the schema of a property the declaration leaves open because the campaign
    decides it, by its dotted path through objects and arrays (``proposals.params``);
    ``enums`` restricts a property, wherever it occurs, to the values given (``file``: the
    editable files)."""
    raw = _model(section).model_json_schema()
    return _plain(raw, raw.get("$defs", {}), "", fill or {}, enums or {})


_KEPT = (  # what a plain schema keeps, in this order (the LLM client strips the bounds strict servers refuse)
    "type",
    "enum",
    "description",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
)


def _plain(
    node: Mapping[str, Any],
    defs: Mapping[str, Any],
    path: str,
    fill: Mapping[str, Mapping[str, Any]],
    enums: Mapping[str, Sequence[Any]],
) -> dict[str, Any]:
    """One node of pydantic's schema in the plain form (see :func:`json_schema`)."""
    if "$ref" in node:
        return _plain(defs[node["$ref"].rsplit("/", 1)[-1]], defs, path, fill, enums)
    if "anyOf" in node:
        return {"anyOf": [_plain(option, defs, path, fill, enums) for option in node["anyOf"]]}
    out = {key: node[key] for key in _KEPT if key in node}
    if "items" in node:
        out["items"] = _plain(node["items"], defs, path, fill, enums)
    if "properties" in node:
        out.pop("description", None)  # a nested declaration's docstring: written for its readers
        props: dict[str, Any] = {}
        for name, sub in node["properties"].items():
            where = f"{path}.{name}" if path else name
            props[name] = dict(fill[where]) if where in fill else _plain(sub, defs, where, fill, enums)
            if name in enums:
                props[name]["enum"] = list(enums[name])
        out.update(properties=props, required=list(props), additionalProperties=False)
    return out


def _model(section: type[Section]) -> Any:
    """The pydantic model of a declaration (built once, on its first validation)."""
    if section in _MODELS:
        return _MODELS[section]
    from pydantic import ConfigDict, create_model

    config = ConfigDict(strict=True, extra=section.unknown_keys, frozen=True, hide_input_in_errors=False)  # type: ignore[typeddict-item]
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        default = ... if f.default is dataclasses.MISSING else f.default
        fields[f.name] = (_hints(section)[f.name], default)
    model = _MODELS[section] = create_model(section.__name__, __config__=config, **fields)
    return model


def _hints(section: type) -> dict[str, Any]:
    if section not in _HINTS:
        _HINTS[section] = typing.get_type_hints(section, include_extras=True)
    return _HINTS[section]


_MODELS: dict[type, Any] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def _arrays_as_tuples(data: dict[str, Any]) -> dict[str, Any]:
    """A TOML array is read as a tuple, so that a section is hashable and immutable."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _metadata(hint: Any, kind: type[Any]) -> list[Any]:
    """The ``Annotated`` metadata of ``kind`` in a hint (through ``X | None``)."""
    out = []
    if typing.get_origin(hint) is typing.Annotated:
        out += [m for m in hint.__metadata__ if isinstance(m, kind)]
        hint = typing.get_args(hint)[0]
    for arg in typing.get_args(hint) if typing.get_origin(hint) is not typing.Literal else ():
        out += _metadata(arg, kind)
    return out


def _words(
    section: type[Section], errors: list[Any], where: str, sep: str, fix: str, keys_in_fix: bool
) -> tuple[str, str]:
    """The first of pydantic's errors in the project's words: (message, fix). Unknown keys
    come first, all of them, as the hand-written checks said them."""
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        what = "key" if len(unknown) == 1 else "keys"
        listed = f"; valid keys are: {', '.join(section.valid_keys())}" if keys_in_fix else ""
        return (
            f"{where}: unknown {what} {unknown}; valid keys are: {section.valid_keys()}",
            f"remove or rename {unknown[0]!r}{listed}",
        )
    return _Error(section, errors[0], where, sep, fix).words()


class _Error:
    """One of pydantic's errors, and what the declaration says of its key."""

    def __init__(
        self, section: type[Section], error: Mapping[str, Any], where: str, sep: str, fix: str
    ) -> None:
        self.kind, self.loc, self.value = error["type"], error["loc"], error.get("input")
        self.ctx, self.msg = error.get("ctx") or {}, error["msg"]
        self.key = str(self.loc[0]) if self.loc else ""
        self.where, self.sep, self.fix = where, sep, fix.replace("{key}", self.key)
        self.hint = _hints(section).get(self.key)
        self.said = (_metadata(self.hint, Words) or [Words()])[0]
        self.is_float = float in _bases(self.hint)

    def words(self) -> tuple[str, str]:
        """(message, fix)."""
        problem = self.ctx.get("error")
        if self.kind == "value_error" and isinstance(problem, Problem):
            return f"{self.where}{problem.text.replace('{key}', self.key)}", problem.fix.replace(
                "{key}", self.key
            )
        if self.kind == "missing":
            return f"{self.where}: missing {self.key}", f"add {self.said.example or self.key + ' = ...'}"
        if len(self.loc) > 1:
            return self._item()
        if self.kind == "literal_error":
            options = _options(self.hint)
            return f"{self._head()}: expected one of {options}", f'set {self.key} = "{options[0]}"'
        if self.kind in _BOUNDS:
            return self._bound()
        if self.kind == "finite_number":
            return (
                f"{self._head()}: expected a finite number",
                self.said.fix or self.fix or f"set {self.key} to a number",
            )
        name = _TYPE_NAMES.get(self.kind)
        if name:
            return (
                f"{self._head()}: expected {self.said.expects or name}",
                self.fix or f"set {self.key} to {name}",
            )
        return (
            f"{self._head()}: {self.msg}",
            self.fix or f"correct {self.key}",
        )  # pragma: no cover - undeclared

    def _head(self) -> str:
        """``[campaign] batch_size = 0`` (an integer given for a number shown as one)."""
        shown = float(self.value) if self.is_float and type(self.value) is int else self.value
        return f"{self.where}{self.sep}{self.key} = {shown!r}"

    def _item(self) -> tuple[str, str]:
        """An item of a list or a table is wrong."""
        name = self.said.expects or _TYPE_NAMES.get(self.kind, "a valid value")
        text = f"is not allowed: expected {name}" if self.said.expects else f"is not {name}"
        return f"{self.where}{self.sep}{self.key}: {self.value!r} {text}", (
            self.fix or f"make every item of {self.key} {name}"
        )

    def _bound(self) -> tuple[str, str]:
        """A number outside its declared range."""
        reported = Range(
            ge=self.ctx.get("ge"), gt=self.ctx.get("gt"), le=self.ctx.get("le"), lt=self.ctx.get("lt")
        )
        bounds = (_metadata(self.hint, Range) or [reported])[0]
        what = self.said.what or ("a number" if self.is_float else "an integer")
        example = (
            f"a number {bounds.describe()}" if self.is_float else f"a whole number such as {_example(bounds)}"
        )
        return f"{self._head()}: expected {self.said.expects or what + ' ' + bounds.describe()}", (
            self.said.fix or self.fix or f"set {self.key} to {example}"
        )


def _bases(hint: Any) -> tuple[Any, ...]:
    """The types of a hint, through ``Annotated`` and ``X | None``."""
    if typing.get_origin(hint) is typing.Annotated:
        return _bases(typing.get_args(hint)[0])
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) is not typing.Literal and typing.get_origin(hint) is not tuple:
        return tuple(b for arg in args for b in _bases(arg))
    return (hint,)


def _options(hint: Any) -> list[Any]:
    for b in _bases(hint):
        if typing.get_origin(b) is typing.Literal:
            return list(typing.get_args(b))
    return []  # pragma: no cover - a literal error on a field without a Literal


def _example(bounds: Range) -> int:
    """A whole number inside an integer field's range (the fix's example)."""
    low = int(bounds.ge or 0)
    return max(low, 4) if low else 2


def _num(bound: Any) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
