"""How many tokens a prompt takes, without the model's tokenizer.

The prompt is fitted to ``[planner] context_tokens`` before it is sent, so the estimate must
not undercount: an undercount is a request the server refuses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4.0  # the estimate used to fit prompts into [planner] context_tokens
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per chat message


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token for English, code and JSON)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def messages_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The estimated size of a chat request's messages, role overhead included."""
    return sum(estimate_tokens(str(m.get("content", ""))) + MESSAGE_OVERHEAD_TOKENS for m in messages)
