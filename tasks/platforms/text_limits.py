"""Pre-flight content limits per platform: cheap checks that turn permanent failures into
messages before any call is made. Pure functions; counts follow each platform's own rules.
Media kinds, types, sizes and mixes are checked by `media_support.media_problems`."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

import regex

#: URLs with a scheme (what Mastodon and Bluesky recognise).
URL_RE = regex.compile(r"https?://[^\s<>\"']+", regex.IGNORECASE)
_GRAPHEME = regex.compile(r"\X")
_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
HASHTAG_RE = regex.compile(r"(?<![\w#&])#(?!\d+\b)\w+")
MENTION_RE = regex.compile(r"(?<![\w@])@[\w.]+")
_HASHTAG = HASHTAG_RE
_MENTION = MENTION_RE

# twitter-text extracts URLs without a scheme too (`extractUrlsWithIndices.js`,
# DEFAULT_PROTOCOL_OPTIONS = { extractUrlsWithoutProtocol: true }): a bare domain counts as a
# URL when its TLD is a generic one, and a ccTLD domain only when a path follows it (the same
# file: "ccTLD without protocol ... only if followed by a slash"). twitter-text's full TLD list
# (`conformance/tld_lib.yml`, ~1,500 names) is not packaged for Python (the twitter-text Python
# ports are unmaintained); the common generic TLDs below cover real posts, and a miss only
# over-counts (the post is refused up front, never by X).
_GENERIC_TLDS = (
    "com|net|org|edu|gov|mil|int|info|biz|name|pro|aero|coop|museum|mobi|jobs|travel|app|dev|"
    "xyz|online|site|tech|store|shop|blog|news|social|link|live|club|media|page|cloud|art|"
    "design|world|today|life|email|agency|studio|digital|network|company|solutions|tv|me|co|io|ai"
)
_BARE_URL_RE = regex.compile(
    r"(?<![\w@./:-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:(?:" + _GENERIC_TLDS + r")(?![\w-])(?:/[^\s<>\"']*)?|[a-z]{2}/[^\s<>\"']*)",
    regex.IGNORECASE,
)
_TRAILING_PUNCTUATION = ".,:;!?)]}'\""

X_MAX_WEIGHT = 280
X_MAX_IMAGES = 4
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
#: Meta, Instagram content publishing, "Limitations": "Captions are limited to 2,200 characters,
#: 30 hashtags, and 20 @ tags" (newer third-party pages say 5/3: could not verify with Meta).
INSTAGRAM_MAX_HASHTAGS = 30
INSTAGRAM_MAX_MENTIONS = 20
#: developers.facebook.com/documentation/threads/create-posts/text-attachments: "Starting
#: December 22, 2025, Threads posts containing more than 5 links will fail to post during the
#: media creation step ... THREADS_API__LINK_LIMIT_EXCEEDED" (unique URLs in `text`).
THREADS_MAX_LINKS = 5
#: One topic tag per post: ayrshare.com/apis/post/social-networks/threads ("Threads only allows
#: 1 hashtag per post"); Meta's own pages do not state it (could not verify with Meta).
THREADS_MAX_HASHTAGS = 1
BLUESKY_MAX_IMAGES = 4
FACEBOOK_MAX_CHARACTERS = 63206

#: Little-text reserved characters that LinkedIn truncates at unless backslash-escaped.
LINKEDIN_RESERVED = frozenset("\\|{}@[]()<>#*_~")


def graphemes(text: str) -> int:
    return len(_GRAPHEME.findall(text))


#: A character outside the light ranges weighs 2. One regex pass finds them: a Python loop over
#: every character cost 120-150 ms for a 70 KB text, on the event loop that serves every company.
_X_HEAVY_CHAR = regex.compile(
    "[^" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in _X_LIGHT_RANGES) + "]"
)


#: A grapheme cluster holding an emoji: one that starts with one, after any Prepend characters
#: (UAX #29: only GB11's ZWJ sequences join a pictograph to what comes before, and those start
#: with one too).
_EMOJI_CLUSTER = regex.compile(
    r"(?=\p{Grapheme_Cluster_Break=Prepend}*\p{Extended_Pictographic})\X"
)


def _x_chars_weight(text: str) -> int:
    """Each character 1, or 2 outside the light ranges (twitter-text v3 `ranges`)."""
    return 2 * len(text) - len(_X_HEAVY_CHAR.sub("", text))


def _strip_trailing(url: str) -> str:
    while url and url[-1] in _TRAILING_PUNCTUATION:
        url = url[:-1]
    return url


#: twitter-text `extractUrlsWithIndices.js`: "MAX_URL_LENGTH = 4096"; `isValidUrl` refuses a URL
#: when the protocol's length (`https://` when it has none) plus the URL's, its domain
#: punycoded, is over it, and the text is then counted character by character.
X_MAX_URL_LENGTH = 4096


def _linkable(url: str) -> bool:
    """Whether twitter-text's `isValidUrl` takes `url` (its length rule, and a domain that
    punycode can encode)."""
    scheme, sep, rest = url.partition("://")
    protocol = f"{scheme}://" if sep else "https://"
    domain = regex.split(r"[/?#:]", rest if sep else url, maxsplit=1)[0]
    try:
        ascii_domain = domain.encode("idna").decode() if not domain.isascii() else domain
    except UnicodeError:
        return False
    return len(protocol) + len(url) + len(ascii_domain) - len(domain) <= X_MAX_URL_LENGTH


def extract_urls(text: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of every URL twitter-text would link: with a scheme, or a bare domain
    (see `_BARE_URL_RE`), no longer than `X_MAX_URL_LENGTH`; trailing punctuation is not part
    of the URL."""
    found: list[tuple[int, int, str]] = []
    for match in URL_RE.finditer(text):
        url = _strip_trailing(match.group())
        if _linkable(url):
            found.append((match.start(), match.start() + len(url), url))
    for match in _BARE_URL_RE.finditer(text):
        if any(start <= match.start() < end for start, end, _ in found):
            continue
        url = _strip_trailing(match.group())
        if "." in url and _linkable(url):
            found.append((match.start(), match.start() + len(url), url))
    return sorted(found)


def x_weighted_length(text: str) -> int:
    """twitter-text v3 weighted length: NFC, URLs (with or without a scheme) count 23, an
    emoji sequence counts 2 (twitter/twitter-text config/v3.json)."""
    text = unicodedata.normalize("NFC", text)
    total = 0
    position = 0
    for start, end, _ in extract_urls(text):
        total += _x_segment_weight(text[position:start]) + X_URL_WEIGHT
        position = end
    return total + _x_segment_weight(text[position:])


def _x_segment_weight(segment: str) -> int:
    """Characters by their weight, except that an emoji cluster weighs 2 whatever it holds."""
    weight = _x_chars_weight(segment)
    if _PICTOGRAPHIC.search(segment) is None:
        return weight
    emoji = _EMOJI_CLUSTER.findall(segment)
    return weight - _x_chars_weight("".join(emoji)) + 2 * len(emoji)


def mastodon_length(text: str) -> int:
    """Mastodon counts grapheme clusters, every URL as 23 and `@user@domain` as `@user`."""
    countable = URL_RE.sub("x" * MASTODON_URL_WEIGHT, text)
    countable = regex.sub(r"(@[\w.]+)@[\w.-]+\w", r"\1", countable)
    return graphemes(countable)


def threads_length(text: str) -> int:
    """Threads counts characters, emoji by their UTF-8 byte length."""
    emoji = _PICTOGRAPHIC.findall(text)
    return len(text) - len(emoji) + sum(len(char.encode()) for char in emoji)


def escape_little_text(text: str) -> str:
    """LinkedIn `commentary` in little text format: reserved characters backslash-escaped, except
    where they carry meaning we want — a `#hashtag` stays a HashtagElement and a URL stays intact
    so LinkedIn links it (learn.microsoft.com/.../shares/little-text-format: HashtagElement
    `#hashtag`; reserved characters elsewhere must be escaped or LinkedIn truncates the post).
    Leaving URLs unescaped follows third-party crossposters; LinkedIn does not document it."""
    keep = sorted(
        [(m.start(), m.end()) for m in HASHTAG_RE.finditer(text)]
        + [(start, end) for start, end, _ in extract_urls(text)]
    )
    out: list[str] = []
    position = 0
    for start, end in keep:
        if start < position:
            continue
        out.append(_escape_reserved(text[position:start]))
        out.append(text[start:end])
        position = end
    out.append(_escape_reserved(text[position:]))
    return "".join(out)


def _escape_reserved(segment: str) -> str:
    return "".join(f"\\{char}" if char in LINKEDIN_RESERVED else char for char in segment)


def unescape_little_text(commentary: str) -> str:
    """The plain text a little-text commentary shows (escapes resolved, `@[Name](urn)` mention
    templates shown as Name); used to compare what LinkedIn returns with what we sent,
    whichever form the finder returns it in (not documented)."""
    commentary = regex.sub(r"@\[([^\]]*)\]\([^)]*\)", r"\1", commentary)
    return regex.sub(r"\\(.)", r"\1", commentary)


def hashtags(text: str) -> list[str]:
    return HASHTAG_RE.findall(text)


def mentions(text: str) -> list[str]:
    return MENTION_RE.findall(text)


def _empty(text: str, media_count: int) -> list[str]:
    return ["the post has neither text nor media"] if not text.strip() and media_count == 0 else []


def _media_cap(platform: str, media_count: int, cap: int) -> list[str]:
    return (
        [f"{platform} allows at most {cap} media items, got {media_count}"]
        if media_count > cap
        else []
    )


def validate_x(
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> list[str]:
    limit = max_characters or X_MAX_WEIGHT
    problems = _empty(text, media_count) + _media_cap("X", media_count, X_MAX_IMAGES)
    weight = x_weighted_length(text)
    if weight > limit:
        problems.append(f"X allows {limit} weighted characters, the text weighs {weight}")
    return problems


def validate_bluesky(
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> list[str]:
    limit = max_characters or BLUESKY_MAX_GRAPHEMES
    problems = _empty(text, media_count) + _media_cap("Bluesky", media_count, BLUESKY_MAX_IMAGES)
    count = graphemes(text)
    if count > limit:
        problems.append(f"Bluesky allows {limit} graphemes, the text has {count}")
    size = len(text.encode())
    if size > BLUESKY_MAX_BYTES:
        problems.append(f"Bluesky allows {BLUESKY_MAX_BYTES} UTF-8 bytes, the text has {size}")
    return problems


def validate_mastodon(
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> list[str]:
    limit = max_characters or MASTODON_DEFAULT_MAX_CHARACTERS
    problems = _empty(text, media_count) + _media_cap("Mastodon", media_count, 4)
    count = mastodon_length(text)
    if count > limit:
        problems.append(f"this Mastodon instance allows {limit} characters, the text has {count}")
    return problems


def validate_threads(
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> list[str]:
    limit = max_characters or THREADS_MAX_CHARACTERS
    problems = _empty(text, media_count) + _media_cap("Threads", media_count, 20)
    count = threads_length(text)
    if count > limit:
        problems.append(f"Threads allows {limit} characters, the text has {count}")
    links = len({url for _, _, url in extract_urls(text)})
    if links > THREADS_MAX_LINKS:
        problems.append(f"Threads allows {THREADS_MAX_LINKS} links, the text has {links}")
    tags = len(hashtags(text))
    if tags > THREADS_MAX_HASHTAGS:
        problems.append(f"Threads allows {THREADS_MAX_HASHTAGS} hashtag, the text has {tags}")
    return problems


def validate_linkedin(
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> list[str]:
    limit = max_characters or LINKEDIN_MAX_CHARACTERS
    problems = _empty(text, media_count) + _media_cap("LinkedIn", media_count, 20)
    # 3,000 characters of commentary; whether LinkedIn counts the escaping backslashes is not
    # documented, so the text as the reader sees it is counted.
    count = len(text)
    if count > limit:
        problems.append(f"LinkedIn allows {limit} characters, the text has {count}")
    return problems


def validate_instagram(
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
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
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
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
    platform: str,
    text: str,
    *,
    media_count: int,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> list[str]:
    """Problems with `text` + `media_count` media on `platform`; an empty list means it fits.

    `max_characters` overrides the platform default (a Mastodon instance's own limit, an X
    Premium account).
    """
    validator = _VALIDATORS.get(platform)
    if validator is None:
        raise ValueError(f"unknown platform {platform!r}")
    return validator(
        text, media_count=media_count, max_characters=max_characters, media_types=media_types
    )
