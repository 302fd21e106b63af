"""The one TOML writer: a resolved spec (``results/<name>/spec.toml``) and a profile's keys
(``hpc-agent profiles --show``) are written by it.

Why written here rather than with a library: what is written is small (tables of scalars,
lists and inline tables), the standard library reads TOML (``tomllib``) but does not write
it, and a dependency for some forty lines is not worth its install in every job's
environment. Strings are written as JSON strings, which TOML reads as the same text
(escapes included); a round trip through ``tomllib`` is tested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(data: Mapping[str, Any], inline: frozenset[str] = frozenset({"space"})) -> str:
    """Tables of values as TOML, one ``[section]`` each: a section's tables become inline
    tables after its other keys, except in the sections of ``inline``, where they stay in
    their order (the space's parameters)."""
    lines: list[str] = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        sub: list[tuple[str, Mapping[str, Any]]] = []
        for key, value in table.items():
            if isinstance(value, Mapping) and section not in inline:
                sub.append((key, value))
                continue
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in sub:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_key(key: str) -> str:
    """A key, quoted unless it is bare."""
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A value as TOML: booleans, numbers, strings, lists, inline tables (None as "")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        return '""'
    raise TypeError(f"cannot write {value!r} as TOML")
