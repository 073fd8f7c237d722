"""The platforms' counting rules written the slow, literal way, one grapheme cluster and one
character at a time, as their documents state them: the reference the fast versions in
`tasks/platforms/text_limits.py` must equal (`tests/platforms/test_text_limits.py`), and the
previous approach `bench/bench_validation.py` times them against. `literal_rules()` swaps them
into the module, so everything else (NFC, URL extraction, the validators) stays the one code.

X's rules are the sandbox's (deployments/sandbox/counting.py, written from twitter-text's
configuration v3), so production is checked against code that does not share its shortcuts."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any
from unittest import mock

import regex

from deployments.sandbox.counting import x_char_weight, x_segment_weight
from tasks.platforms import text_limits

__all__ = ["literal_rules", "threads_length", "x_char_weight", "x_segment_weight"]

_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")


def threads_length(text: str) -> int:
    """Threads: one per character, an emoji by its UTF-8 byte length."""
    return sum(len(char.encode()) if _PICTOGRAPHIC.match(char) else 1 for char in text)


def literal_rules() -> AbstractContextManager[Any]:
    """A context in which `text_limits` counts with the rules above."""
    return mock.patch.multiple(
        text_limits, _x_segment_weight=x_segment_weight, threads_length=threads_length
    )
