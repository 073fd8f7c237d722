"""Pre-flight content limits per platform: cheap checks that turn permanent failures into
messages before any call is made. Pure functions; counts follow each platform's own rules."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import regex

URL_RE = regex.compile(r"https?://[^\s<>\"']+", regex.IGNORECASE)
_GRAPHEME = regex.compile(r"\X")
_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
_HASHTAG = regex.compile(r"(?<![\w#])#\w+")
_MENTION = regex.compile(r"(?<![\w@])@[\w.]+")

X_MAX_WEIGHT = 280
X_URL_WEIGHT = 23
#: twitter-text v3: code points in these ranges weigh 1, all others 2.
_X_LIGHT_RANGES: tuple[tuple[int, int], ...] = (
    (0, 4351),
    (8192, 8205),
    (8208, 8223),
    (8242, 8247),
)
BLUESKY_MAX_GRAPHEMES = 300
BLUESKY_MAX_BYTES = 3000
THREADS_MAX_CHARACTERS = 500
MASTODON_DEFAULT_MAX_CHARACTERS = 500
MASTODON_URL_WEIGHT = 23
LINKEDIN_MAX_CHARACTERS = 3000
INSTAGRAM_MAX_CAPTION = 2200
INSTAGRAM_MAX_HASHTAGS = 30
INSTAGRAM_MAX_MENTIONS = 20
FACEBOOK_MAX_CHARACTERS = 63206

#: Little-text reserved characters that LinkedIn truncates at unless backslash-escaped.
LINKEDIN_RESERVED = frozenset("\\|{}@[]()<>#*_~")


def graphemes(text: str) -> int:
    return len(_GRAPHEME.findall(text))


def _x_char_weight(char: str) -> int:
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _X_LIGHT_RANGES) else 2


def x_weighted_length(text: str) -> int:
    """twitter-text v3 weighted length: NFC, URLs count 23, an emoji sequence counts 2."""
    text = unicodedata.normalize("NFC", text)
    total = 0
    position = 0
    for match in URL_RE.finditer(text):
        total += _x_segment_weight(text[position : match.start()]) + X_URL_WEIGHT
        position = match.end()
    return total + _x_segment_weight(text[position:])


def _x_segment_weight(segment: str) -> int:
    weight = 0
    for cluster in _GRAPHEME.findall(segment):
        if _PICTOGRAPHIC.search(cluster):
            weight += 2
        else:
            weight += sum(_x_char_weight(char) for char in cluster)
    return weight


def mastodon_length(text: str) -> int:
    """Mastodon counts grapheme clusters, every URL as 23 and `@user@domain` as `@user`."""
    countable = URL_RE.sub("x" * MASTODON_URL_WEIGHT, text)
    countable = regex.sub(r"(@[\w.]+)@[\w.-]+\w", r"\1", countable)
    return graphemes(countable)


def threads_length(text: str) -> int:
    """Threads counts characters, emoji by their UTF-8 byte length."""
    return sum(len(char.encode()) if _PICTOGRAPHIC.match(char) else 1 for char in text)


def escape_little_text(text: str) -> str:
    """Backslash-escape LinkedIn little-text reserved characters (commentary only)."""
    return "".join(f"\\{char}" if char in LINKEDIN_RESERVED else char for char in text)


def _empty(text: str, media_count: int) -> list[str]:
    return ["the post has neither text nor media"] if not text.strip() and media_count == 0 else []


def _media_cap(platform: str, media_count: int, cap: int) -> list[str]:
    return (
        [f"{platform} allows at most {cap} media items, got {media_count}"]
        if media_count > cap
        else []
    )


def validate_x(text: str, *, media_count: int, max_characters: int | None = None) -> list[str]:
    limit = max_characters or X_MAX_WEIGHT
    problems = _empty(text, media_count) + _media_cap("X", media_count, 4)
    weight = x_weighted_length(text)
    if weight > limit:
        problems.append(f"X allows {limit} weighted characters, the text weighs {weight}")
    return problems


def validate_bluesky(
    text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    limit = max_characters or BLUESKY_MAX_GRAPHEMES
    problems = _empty(text, media_count) + _media_cap("Bluesky", media_count, 4)
    count = graphemes(text)
    if count > limit:
        problems.append(f"Bluesky allows {limit} graphemes, the text has {count}")
    size = len(text.encode())
    if size > BLUESKY_MAX_BYTES:
        problems.append(f"Bluesky allows {BLUESKY_MAX_BYTES} UTF-8 bytes, the text has {size}")
    return problems


def validate_mastodon(
    text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    limit = max_characters or MASTODON_DEFAULT_MAX_CHARACTERS
    problems = _empty(text, media_count) + _media_cap("Mastodon", media_count, 4)
    count = mastodon_length(text)
    if count > limit:
        problems.append(f"this Mastodon instance allows {limit} characters, the text has {count}")
    return problems


def validate_threads(
    text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    limit = max_characters or THREADS_MAX_CHARACTERS
    problems = _empty(text, media_count) + _media_cap("Threads", media_count, 20)
    count = threads_length(text)
    if count > limit:
        problems.append(f"Threads allows {limit} characters, the text has {count}")
    return problems


def validate_linkedin(
    text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    limit = max_characters or LINKEDIN_MAX_CHARACTERS
    problems = _empty(text, media_count) + _media_cap("LinkedIn", media_count, 20)
    count = len(escape_little_text(text))
    if count > limit:
        problems.append(f"LinkedIn allows {limit} characters (escaped), the text has {count}")
    return problems


def validate_instagram(
    text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    limit = max_characters or INSTAGRAM_MAX_CAPTION
    problems: list[str] = []
    if media_count == 0:
        problems.append("Instagram needs at least one image")
    problems += _media_cap("Instagram", media_count, 10)
    if len(text) > limit:
        problems.append(f"Instagram allows a {limit}-character caption, the text has {len(text)}")
    hashtags = len(_HASHTAG.findall(text))
    if hashtags > INSTAGRAM_MAX_HASHTAGS:
        problems.append(
            f"Instagram allows {INSTAGRAM_MAX_HASHTAGS} hashtags, the text has {hashtags}"
        )
    mentions = len(_MENTION.findall(text))
    if mentions > INSTAGRAM_MAX_MENTIONS:
        problems.append(
            f"Instagram allows {INSTAGRAM_MAX_MENTIONS} @mentions, the text has {mentions}"
        )
    return problems


def validate_facebook(
    text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    limit = max_characters or FACEBOOK_MAX_CHARACTERS
    problems = _empty(text, media_count)
    if len(text) > limit:
        problems.append(f"Facebook allows {limit} characters, the text has {len(text)}")
    return problems


_VALIDATORS: dict[str, Callable[..., list[str]]] = {
    "x": validate_x,
    "bluesky": validate_bluesky,
    "mastodon": validate_mastodon,
    "threads": validate_threads,
    "linkedin": validate_linkedin,
    "instagram": validate_instagram,
    "facebook": validate_facebook,
}


def validate_content(
    platform: str, text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    """Problems with `text` + `media_count` media on `platform`; an empty list means it fits.

    `max_characters` overrides the platform default (a Mastodon instance's own limit, an X
    Premium account).
    """
    validator = _VALIDATORS.get(platform)
    if validator is None:
        raise ValueError(f"unknown platform {platform!r}")
    return validator(text, media_count=media_count, max_characters=max_characters)
