"""The platforms' counting rules written the slow, literal way, one grapheme cluster and one
character at a time, as their documents state them: the reference the fast versions in
`tasks/platforms/text_limits.py` must equal (`tests/platforms/test_text_limits.py`), and the
previous approach `bench/bench_validation.py` times them against. `literal_rules()` swaps them
into the module, so everything else (NFC, URL extraction, the validators) stays the one code."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any
from unittest import mock

from tasks.platforms import text_limits
from tasks.platforms.text_limits import _GRAPHEME, _PICTOGRAPHIC, _X_LIGHT_RANGES


def x_char_weight(char: str) -> int:
    """twitter-text v3 `ranges`: weight 100 (1) inside them, `defaultWeight` 200 (2) outside."""
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _X_LIGHT_RANGES) else 2


def x_segment_weight(segment: str) -> int:
    """Every cluster: an emoji sequence weighs 2 (`emojiParsingEnabled`), else its characters."""
    weight = 0
    for cluster in _GRAPHEME.findall(segment):
        if _PICTOGRAPHIC.search(cluster):
            weight += 2
        else:
            weight += sum(x_char_weight(char) for char in cluster)
    return weight


def threads_length(text: str) -> int:
    """Threads: one per character, an emoji by its UTF-8 byte length."""
    return sum(len(char.encode()) if _PICTOGRAPHIC.match(char) else 1 for char in text)


def literal_rules() -> AbstractContextManager[Any]:
    """A context in which `text_limits` counts with the rules above."""
    return mock.patch.multiple(
        text_limits, _x_segment_weight=x_segment_weight, threads_length=threads_length
    )
