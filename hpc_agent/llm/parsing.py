"""Reading the JSON a model's reply carries, however it was written.

Models wrap JSON in prose, fenced blocks and ``<think>`` preambles, put raw control characters
and invalid escapes inside strings and leave trailing commas: :func:`parse_json_reply` takes
all of these, and says why when it cannot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_THINK_RE = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n(.*?)```", re.S)


def parse_json_reply(text: str) -> tuple[Any, str]:
    """The JSON value a reply carries, and "" ; or (None, why it could not be read).

    Tried in order: the whole reply, each fenced block, each balanced ``{...}``; each with
    raw control characters allowed inside strings, then once more with invalid escapes
    doubled and trailing commas removed."""
    if not text or not text.strip():
        return None, "the reply is empty"
    body = _THINK_RE.sub("", text).strip().lstrip("\ufeff")
    if not body:
        return None, "the reply holds only reasoning (<think>...</think>), no JSON"
    candidates = [body, *(m.group(1).strip() for m in _FENCE_RE.finditer(body)), *_balanced_objects(body)]
    first_error = ""
    for c in candidates:
        value, err = _loads(c)
        if not err:
            return value, ""
        first_error = first_error or err
    return None, f"the reply is not valid JSON ({first_error})"


def _loads(s: str) -> tuple[Any, str]:
    try:
        return json.loads(s, strict=False), ""
    except ValueError as e:
        err = str(e)
    fixed = _lenient(s)
    if fixed != s:
        try:
            return json.loads(fixed, strict=False), ""
        except ValueError:
            pass
    return None, err


def _lenient(s: str) -> str:
    """Double the backslashes of invalid escapes inside strings; drop trailing commas."""
    out: list[str] = []
    in_str = False
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if in_str:
            if c == "\\":
                nxt = s[i + 1] if i + 1 < n else ""
                if nxt and nxt in '"\\/bfnrtu':
                    out.append(c + nxt)
                    i += 2
                    continue
                out.append("\\\\")
                i += 1
                continue
            if c == '"':
                in_str = False
            out.append(c)
        else:
            if c == '"':
                in_str = True
            elif c == ",":
                j = i + 1
                while j < n and s[j] in " \t\r\n":
                    j += 1
                if j < n and s[j] in "}]":
                    i += 1
                    continue
            out.append(c)
        i += 1
    return "".join(out)


def _balanced_objects(s: str, limit: int = 20) -> Iterator[str]:
    """Substrings that are balanced ``{...}`` (string-aware), in order of their start."""
    starts = [m.start() for m in re.finditer(r"\{", s)][:limit]
    for start in starts:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(s)):
            c = s[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    yield s[start : i + 1]
                    break
