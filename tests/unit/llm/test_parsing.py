"""hpc_agent.llm.parsing: the JSON a reply carries, however the model wrapped it."""

from __future__ import annotations

import pytest

from hpc_agent.llm.parsing import parse_json_reply


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        'Sure! Here it is:\n```json\n{"a": 1}\n```\nanything else?',
        '<think>the user wants {"a": 2}</think>{"a": 1}',
        'prose {"a": 1} more prose',
        '{"a": 1,}',  # a trailing comma
        "\ufeff" + '{"a": 1}',
    ],
)
def test_wrapped_json_is_found(text: str) -> None:
    assert parse_json_reply(text) == ({"a": 1}, "")


def test_lenient_strings_keep_their_content() -> None:
    value, err = parse_json_reply('{"path": "C:\\d", "text": "two\nlines"}')
    assert err == "" and value == {"path": "C:\\d", "text": "two\nlines"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the reply is empty"),
        ("<think>hmm</think>", "the reply holds only reasoning (<think>...</think>), no JSON"),
        ("no json at all", "the reply is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ],
)
def test_unreadable_replies_say_why(text: str, why: str) -> None:
    assert parse_json_reply(text) == (None, why)
