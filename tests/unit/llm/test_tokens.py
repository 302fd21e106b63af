"""hpc_agent.llm.tokens: the tokenizer-free prompt-size estimate (it must never undercount)."""

from __future__ import annotations

from hpc_agent.llm.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    estimate_tokens,
    messages_tokens,
)


def test_words_digits_punctuation_and_whitespace_are_counted_as_tokenizers_do() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello") == 1  # a word of up to 6 letters
    assert estimate_tokens("extraordinary") == 3  # 13 letters: ceil(13 / 6)
    assert estimate_tokens("0.125") == 5  # every digit and the point
    assert estimate_tokens("a b") == 2  # a single space is free
    assert estimate_tokens("a" + " " * 9 + "b") == 2 + 2  # 9 spaces: (9 - 1) // 4
    assert estimate_tokens('{"x": 1}') == 7  # { " x " : 1 }, one letter word


def test_messages_add_each_message_overhead_and_the_request_overhead() -> None:
    assert messages_tokens([]) == 0
    msgs = [{"role": "system", "content": "hello"}, {"role": "user", "content": "12"}]
    assert messages_tokens(msgs) == 1 + 2 + 2 * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS
