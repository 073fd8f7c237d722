"""The sandbox's own counting rules (deployments/sandbox/counting.py) against the platforms'
documented examples, and against production's `text_limits` where both follow the same rule:
the sandbox must not import production's counting, so the two are compared here only."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st

from deployments.sandbox import counting
from tasks.platforms import text_limits

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme cluster, five code points


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("hello", 5),
        ("日本語", 6),  # outside every v3 range: defaultWeight 200
        ("e\u0301", 1),  # NFC makes it é, U+00E9
        (FAMILY, 2),  # an emoji sequence weighs defaultWeight once
        ("\U0001f44d\U0001f3fd", 2),  # emoji + skin tone modifier
        ("\u2014", 1),  # U+2014 lies in 8208-8223
        ("\u2030", 2),  # U+2030 lies between the ranges
        ("see https://example.com/" + "a" * 100, 4 + 23),  # transformedURLLength
        ("see example.com/" + "a" * 100, 4 + 23),  # a generic TLD needs no protocol
        ("see example.de", 4 + len("example.de")),  # a ccTLD needs a path
        ("see example.de/a", 4 + 23),
        ("mail me@example.com", len("mail me@example.com")),  # an address is no URL
        ("see example.com.", 4 + 23 + 1),  # the full stop is not part of the URL
    ],
)
def test_x_weighted_length_follows_twitter_text_v3(text: str, weight: int) -> None:
    assert counting.x_weighted_length(text) == weight


def test_x_limit_is_280_weighted_characters() -> None:
    assert counting.X_MAX_WEIGHTED_LENGTH == 280
    assert counting.x_weighted_length("日" * 140) == 280
    assert counting.x_weighted_length("a" * 280) == 280


def test_x_urls_keep_balanced_parentheses() -> None:
    """twitter-text conformance (extract.yml, "Extract URLs with balanced parens")."""
    text = "see http://en.wikipedia.org/wiki/Madonna_(artist))"
    assert [url for _, _, url in counting.x_urls(text)] == [
        "http://en.wikipedia.org/wiki/Madonna_(artist)"
    ]


def test_x_url_longer_than_4096_counts_character_by_character() -> None:
    base = "https://example.com/"
    fits = base + "a" * (4096 - len("https://") - len(base))
    assert counting.x_weighted_length(f"see {fits}") == 4 + 23
    assert counting.x_weighted_length(f"see {fits}a") == 4 + len(fits) + 1


@pytest.mark.parametrize(
    ("text", "spoiler", "length"),
    [
        ("@alice@example.social hi", "", len("@alice hi")),  # the domain is not counted
        ("x https://example.com/" + "p" * 600, "", 2 + 23),  # every URL is 23
        ("example.com/" + "p" * 30, "", len("example.com/") + 30),  # no protocol: no URL
        (FAMILY * 3, "", 3),  # grapheme clusters
        ("body", "CW", 6),  # spoiler_text counts too
    ],
)
def test_mastodon_length_follows_status_length_validator(
    text: str, spoiler: str, length: int
) -> None:
    assert counting.mastodon_length(text, spoiler_text=spoiler) == length


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("é" * 300, None),
        ("é" * 301, "Record/text must not be longer than 300 graphemes"),
        (FAMILY * 300, "Record/text must not be longer than 3000 characters"),  # 5,400 bytes
        ("a" * 290 + "é" * 10, None),
    ],
)
def test_bluesky_text_limits_follow_the_post_lexicon(text: str, problem: str | None) -> None:
    assert counting.bluesky_text_problem(text) == problem


def test_bluesky_tids_are_13_sortable_characters_of_the_current_time() -> None:
    before = time.time_ns() // 1000
    tids = [counting.new_tid() for _ in range(50)]
    assert all(counting.TID_RE.match(tid) for tid in tids)
    assert tids == sorted(tids) and len(set(tids)) == len(tids)
    value = 0
    for char in tids[0]:
        value = value * 32 + counting.TID_ALPHABET.index(char)
    assert value >> 63 == 0
    assert abs((value >> 10) - before) < 60_000_000  # within a minute of now


# Pieces separated by spaces: URLs then start after a space, where both implementations agree
# on what twitter-text and Mastodon link (their edge cases differ on purpose: see counting.py).
_PIECES = [
    FAMILY,
    "\U0001f44d\U0001f3fd",
    "\U0001f1eb\U0001f1f7",
    "\u0600\U0001f600",
    "e\u0301",
    "\u2014",
    "日本",
    "hello",
    "https://example.com/path",
    "example.com/x",
    "example.org",
    "@alice@example.social",
    "@bob",
    "#tag",
    ".",
]
_TEXT = st.lists(st.sampled_from(_PIECES) | st.text(max_size=3), max_size=25).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_sandbox_and_production_count_alike(text: str) -> None:
    assert counting.graphemes(text) == text_limits.graphemes(text)
    if "/" not in text and "@" not in text and "." not in text:
        assert counting.x_weighted_length(text) == text_limits.x_weighted_length(text)
        assert counting.mastodon_length(text) == text_limits.mastodon_length(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=25).map(" ".join))
def test_sandbox_and_production_count_urls_and_mentions_alike(text: str) -> None:
    assert counting.x_weighted_length(text) == text_limits.x_weighted_length(text)
    assert counting.mastodon_length(text) == text_limits.mastodon_length(text)
