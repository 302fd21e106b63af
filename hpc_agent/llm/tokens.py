"""How many tokens a prompt takes, without the model's tokenizer.

The prompt is fitted to ``[planner] context_tokens`` (or the server's context) before it is
sent, so the estimate must not undercount: an undercount is a request the server refuses.
Characters / 4, the usual rule, undercounts badly where tokenizers split numbers into digits
(SmolLM2, Llama 2, Mistral): measured on hpc-agent's own prompts against SmolLM2's tokenizer it
was 8 % over for the prose of the brief but 30-65 % under for the campaign's history, which is
mostly numbers and JSON (bench/bench_llm.py --tokens). This estimate counts what tokenizers
count: a word of ASCII letters is a token per 6 letters (most English words are one token),
every digit, punctuation mark and other character is one, and a run of whitespace is one per 4
characters after the first. Against SmolLM2 it is 2-40 % over on every kind of text measured,
never under; tokenizers that merge digits (Llama 3, GPT-4o, Qwen) count fewer still.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

LETTERS_PER_TOKEN = 6  # a run of ASCII letters: one token per this many (rounded up)
SPACES_PER_TOKEN = 4  # a run of whitespace: its first character is free, then one per this many
MESSAGE_OVERHEAD_TOKENS = 6  # a chat message's role markers and separators (ChatML: ~5)
REQUEST_OVERHEAD_TOKENS = 4  # the assistant's turn the server opens after the messages

_WORD_RE = re.compile(r"[A-Za-z]+")
_SPACES_RE = re.compile(r"\s{2,}")
_OTHER_RE = re.compile(r"[^\sA-Za-z]")  # digits, punctuation, non-ASCII: one token each


def estimate_tokens(text: str) -> int:
    """A conservative tokenizer-free estimate of the tokens of ``text`` (see the module docstring)."""
    words = sum(-(-len(w) // LETTERS_PER_TOKEN) for w in _WORD_RE.findall(text))
    spaces = sum((len(s) - 1) // SPACES_PER_TOKEN for s in _SPACES_RE.findall(text))
    return words + spaces + len(_OTHER_RE.findall(text))


def messages_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The estimated size of a chat request's messages, the chat template's markers included."""
    body = sum(estimate_tokens(str(m.get("content", ""))) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    return body + REQUEST_OVERHEAD_TOKENS if messages else 0
