"""Content limits per platform, table-driven."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tasks.platforms.registry import PLATFORMS
from tasks.platforms.text_limits import (
    escape_little_text,
    graphemes,
    mastodon_length,
    threads_length,
    validate_content,
    x_weighted_length,
)
from tests.support import text_reference as reference

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme, five code points


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("hello", 5),
        ("日本語", 6),
        ("é", 1),
        ("e\u0301", 1),  # NFC turns it into é
        (FAMILY, 2),
        ("\u2014", 1),  # em dash sits in 8208-8223
        ("see https://example.com/a/very/long/path/indeed", 4 + 23),
        ("see example.com/a/very/long/path/indeed", 4 + 23),  # twitter-text: no scheme needed
        ("see example.com.", 4 + 23 + 1),
        ("mail me@example.com", 8 + 11),  # an address is not a URL
    ],
)
def test_x_weighted_length(text: str, weight: int) -> None:
    assert x_weighted_length(text) == weight


@pytest.mark.parametrize(
    ("platform", "text", "media_count", "max_characters", "ok"),
    [
        ("x", "a" * 280, 0, None, True),
        ("x", "a" * 281, 0, None, False),
        ("x", "日" * 140, 0, None, True),
        ("x", "日" * 141, 0, None, False),
        ("x", "a" * 281, 0, 4000, True),
        ("x", "pics", 5, None, False),
        ("bluesky", FAMILY * 300, 0, None, False),  # 300 graphemes but 5,400 bytes
        ("bluesky", "é" * 300, 0, None, True),
        ("bluesky", "é" * 301, 0, None, False),
        ("bluesky", "a" * 290 + "é" * 10, 0, None, True),
        ("threads", "a" * 500, 0, None, True),
        ("threads", "a" * 501, 0, None, False),
        ("threads", "a" * 497 + "\U0001f600", 0, None, False),  # emoji counts 4 bytes
        ("mastodon", "a" * 500, 0, None, True),
        ("mastodon", "a" * 501, 0, None, False),
        ("mastodon", "a" * 501, 0, 1000, True),
        ("mastodon", "x " + "https://example.com/" + "p" * 600, 0, None, True),
        ("linkedin", "a" * 3000, 0, None, True),
        ("linkedin", "a" * 2999 + "#", 0, None, True),  # the text counts, not its escapes
        ("linkedin", "a" * 3001, 0, None, False),
        ("threads", "one #tag", 0, None, True),
        ("threads", "two #tags #here", 0, None, True),  # Meta documents no hashtag limit
        ("threads", " ".join(f"https://e{i}.com" for i in range(6)), 0, None, False),
        ("instagram", " ".join(f"@u{i}" for i in range(21)), 1, None, False),
        ("x", "see example.com/" + "p" * 300, 0, None, True),  # a bare URL counts 23
        ("instagram", "caption", 0, None, False),  # an image is required
        ("instagram", "caption", 1, None, True),
        ("instagram", "a" * 2201, 1, None, False),
        ("instagram", " ".join(f"#t{i}" for i in range(31)), 1, None, False),
        ("facebook", "a" * 63206, 0, None, True),
        ("facebook", "a" * 63207, 0, None, False),
        ("facebook", "", 0, None, False),
        ("x", "", 1, None, True),
    ],
)
def test_validate_content(
    platform: str, text: str, media_count: int, max_characters: int | None, ok: bool
) -> None:
    problems = validate_content(
        platform, text, media_count=media_count, max_characters=max_characters
    )
    assert (problems == []) is ok, problems


def test_every_platform_has_a_validator() -> None:
    for platform in PLATFORMS:
        assert validate_content(platform, "hi", media_count=1) == []
    with pytest.raises(ValueError):
        validate_content("myspace", "hi", media_count=0)


def test_helpers() -> None:
    assert graphemes(FAMILY + "a") == 2
    assert mastodon_length("@alice@example.social hi") == len("@alice hi")
    assert escape_little_text("a(b)\\") == "a\\(b\\)\\\\"


# Hostile texts reach these on the event loop every company shares, so they count in regex
# passes, not per character in Python; they must still count exactly as the rules say.
_PIECES = [FAMILY, "\U0001f44d\U0001f3fd", "\U0001f1eb\U0001f1f7", "\u200d", "\ufe0f", "\u2014"]
# Prepend characters (Arabic number sign, Devanagari) and combining marks around emoji.
_PIECES += ["\u0600", "\u0d4e", "\u0301", "\U0001f600", "\u2764"]
_TEXT = st.lists(
    st.characters(codec="utf-8") | st.sampled_from([*_PIECES, *"aé漢#@.:/ "]), max_size=60
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_x_weight_equals_the_per_cluster_rule(text: str) -> None:
    with reference.literal_rules():
        literal = x_weighted_length(text)
    assert x_weighted_length(text) == literal


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_threads_length_equals_the_per_character_rule(text: str) -> None:
    assert threads_length(text) == reference.threads_length(text)


def test_a_url_past_twitter_texts_length_limit_counts_character_by_character() -> None:
    """twitter-text `isValidUrl`: protocol + URL (domain punycoded) ≤ 4096, or it is no URL."""
    base = "https://example.com/"
    fits = base + "a" * (4096 - len("https://") - len(base))
    too_long = fits + "a"
    assert x_weighted_length(f"see {fits}") == 4 + 23
    assert x_weighted_length(f"see {too_long}") == 4 + len(too_long)
    bare = "example.com/" + "a" * (4096 - len("https://") - len("example.com/") + 1)
    assert x_weighted_length(bare) == len(bare)
    assert validate_content("x", f"see {too_long}", media_count=0)
