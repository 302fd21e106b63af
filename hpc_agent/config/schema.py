"""One declaration per input: the base of the pydantic models that read campaign.toml's
sections, the space's parameters and the SLURM profiles, and the one place that turns
pydantic's errors into the project's messages.

Why pydantic: a section is declared once, as a class of typed fields with their defaults and
ranges, and that one declaration gives the type checks (strict: ``"3"`` is no integer, ``true``
no number), the ranges (``Field(ge=1)``), unknown keys refused (``extra="forbid"``) and a JSON
schema, instead of a hand-written check per key. What a type cannot say (a folder exists, two
keys agree) is a validator raising :func:`problem`.

:func:`validated` reads one table into one model and raises the project's own error
(:class:`~hpc_agent.errors.SpecError` by default) in today's words: ``error:`` naming the key
as its TOML path (``[campaign] batch_size = 0``) and the bad value, what was expected, and a
``fix:``. An unknown key lists the valid ones.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from hpc_agent.errors import SpecError, UserError

M = TypeVar("M", bound=BaseModel)

_TYPE_NAMES = {  # pydantic's error type -> the value expected, in the words of a TOML file
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "dict_type": "a table",
}
_BOUNDS = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")


class Section(BaseModel):
    """A table of campaign.toml (or of a profile): strict types, unknown keys refused, frozen.
    A TOML array is read as a tuple, so that a section is hashable and immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=False)

    @model_validator(mode="before")
    @classmethod
    def _arrays_as_tuples(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return data

    @classmethod
    def valid_keys(cls) -> list[str]:
        """The keys an input table may hold (listed when one is unknown)."""
        return [name for name, f in cls.model_fields.items() if not f.exclude]


def problem(text: str, fix: str = "") -> PydanticCustomError:
    """A check a type cannot express; ``text`` follows the table's name (``" name = 'x':
    expected ..."`` or ``": set goal or goal_file, not both"``)."""
    return PydanticCustomError("spec", "{text}", {"text": text, "fix": fix})


def validated(
    model: type[M],
    table: Any,
    where: str,
    *,
    context: Mapping[str, Any] | None = None,
    error: type[UserError] = SpecError,
    fix: str = "",
    sep: str = " ",
    keys_in_fix: bool = False,
) -> M:
    """``table`` read into ``model``, or ``error`` naming the key (``where`` is the table's
    TOML name, ``[campaign]``) and the bad value. ``fix`` replaces the generic fix of a wrong
    type or range; ``sep`` goes between ``where`` and the key (``": "`` for a profile file);
    ``keys_in_fix`` lists the valid keys in the fix of an unknown one too."""
    if not isinstance(table, Mapping):
        raise error(f"{where} must be a table, got {table!r}")
    try:
        return model.model_validate(table, context=dict(context or {}))
    except ValidationError as e:
        message, default_fix = _words(model, e, where, sep, fix, keys_in_fix)
        raise error(message, fix=default_fix) from None


def _words(
    model: type[BaseModel], err: ValidationError, where: str, sep: str, fix: str, keys_in_fix: bool
) -> tuple[str, str]:
    """The first of pydantic's errors in the project's words: (message, fix). ``fix``, when
    given, replaces the generic fix of a wrong type or range (``{key}`` names the key)."""
    errors = err.errors(include_url=False)
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        what = "key" if len(unknown) == 1 else "keys"
        return (
            f"{where}: unknown {what} {unknown}; valid keys are: {model.valid_keys()}",  # type: ignore[attr-defined]
            f"remove or rename {unknown[0]!r}"
            + (f"; valid keys are: {', '.join(model.valid_keys())}" if keys_in_fix else ""),  # type: ignore[attr-defined]
        )
    first = errors[0]
    kind, loc, value = first["type"], first["loc"], first.get("input")
    key = ".".join(str(p) for p in loc[:1])
    fix = fix.format(key=key)
    field = model.model_fields.get(key)
    extra = _extra(field)
    if kind == "spec":
        ctx = first.get("ctx") or {}
        return f"{where}{ctx['text']}", str(ctx.get("fix") or "")
    if kind == "missing":
        return f"{where}: missing {key}", f"add {extra.get('example') or key + ' = ...'}"
    expects = extra.get("expects")
    if len(loc) > 1:  # an item of a list or a table
        name = _TYPE_NAMES.get(kind, "a valid value")
        if expects:
            return f"{where}{sep}{key}: {value!r} is not allowed: expected {expects}", fix or f"correct {key}"
        return f"{where}{sep}{key}: {value!r} is not {name}", fix or f"make every item of {key} {name}"
    is_float = field is not None and _is_float(field.annotation)
    head = f"{where}{sep}{key} = {float(value) if is_float and type(value) is int else value!r}"
    if kind == "literal_error":
        options = _options(field.annotation if field else None)
        return f"{head}: expected one of {options}", f'set {key} = "{options[0]}"'
    if kind in _BOUNDS:
        bounds = _range(field, first.get("ctx") or {})
        what = extra.get("what") or ("a number" if is_float else "an integer")
        fix = fix or (
            f"set {key} to a number {bounds}"
            if is_float
            else f"set {key} to a whole number such as {_example(field)}"
        )
        return f"{head}: expected {expects or what + ' ' + bounds}", str(extra.get("fix") or fix)
    if kind == "finite_number":
        return f"{head}: expected a finite number", str(extra.get("fix") or f"set {key} to a number")
    if kind in _TYPE_NAMES:
        return f"{head}: expected {expects or _TYPE_NAMES[kind]}", fix or f"set {key} to {_TYPE_NAMES[kind]}"
    return f"{head}: {first['msg']}", fix or f"correct {key}"  # pragma: no cover - a kind not declared here


def _extra(field: FieldInfo | None) -> dict[str, Any]:
    """What a field declares for its messages: ``example`` (when missing), ``what`` (the
    kind of number, "a number of hours", its range follows), ``expects`` (the whole expected
    value, instead of the type's name) and ``fix``."""
    extra = field.json_schema_extra if field is not None else None
    return dict(extra) if isinstance(extra, dict) else {}


def _range(field: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    """``>= 1``, ``> 0`` or ``in (0, 1)``: the bounds a field declares (or, inside a union,
    the one pydantic reports in ``ctx``)."""
    low = high = None
    for m in (field.metadata if field else ()) or [_Bound(**ctx)]:
        for attr, closed in (("ge", "["), ("gt", "(")):
            if getattr(m, attr, None) is not None:
                low = (getattr(m, attr), closed)
        for attr, closed in (("le", "]"), ("lt", ")")):
            if getattr(m, attr, None) is not None:
                high = (getattr(m, attr), closed)
    if low and high:
        return f"in {low[1]}{_num(low[0])}, {_num(high[0])}{high[1]}"
    if low:
        return f"{'>=' if low[1] == '[' else '>'} {_num(low[0])}"
    return f"{'<=' if high and high[1] == ']' else '<'} {_num(high[0]) if high else ''}"


def _num(bound: Any) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


class _Bound:
    """A bound as pydantic's error reports it (``{"gt": 0}``)."""

    def __init__(self, **ctx: Any) -> None:
        for attr in ("ge", "gt", "le", "lt"):
            setattr(self, attr, ctx.get(attr))


def _example(field: FieldInfo | None) -> int:
    """A whole number inside an integer field's range (the fix's example)."""
    bounds = [getattr(m, "ge", None) for m in (field.metadata if field else ())]
    low = next((b for b in bounds if b is not None), 0)
    return max(low, 4) if low else 2


def _args(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of ``X | None`` and of ``Annotated``, flattened."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _args(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) is not typing.Literal:
        return tuple(a for arg in args for a in (_args(arg) or (arg,)))
    return (annotation,)


def _is_float(annotation: Any) -> bool:
    return float in _args(annotation)


def _options(annotation: Any) -> list[Any]:
    for a in _args(annotation):
        if typing.get_origin(a) is typing.Literal:
            return list(typing.get_args(a))
    return []  # pragma: no cover - a literal error on a field without a Literal
