"""Pre-flight content limits per platform: cheap checks that turn permanent failures into
messages before any call is made. Pure functions; counts follow each platform's own rules.

The limits themselves are the platforms' `TextRule`s (`tasks/platforms/<platform>/spec.py`,
each with its source); this module holds the counting functions a rule names and applies the
rule. Media kinds, types, sizes and mixes are checked by `media_support.media_problems`."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

import regex

from tasks.platforms.specs import Counting, PlatformSpec, TextRule, platform_spec

#: URLs with a scheme (what Mastodon and Bluesky recognise).
URL_RE = regex.compile(r"https?://[^\s<>\"']+", regex.IGNORECASE)
_GRAPHEME = regex.compile(r"\X")
_PICTOGRAPHIC = regex.compile(r"\p{Extended_Pictographic}")
HASHTAG_RE = regex.compile(r"(?<![\w#&])#(?!\d+\b)\w+")
MENTION_RE = regex.compile(r"(?<![\w@])@[\w.]+")

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


def _rule(platform: str) -> TextRule:
    rule = platform_spec(platform).text
    assert rule is not None, f"{platform} has no text rule"
    return rule


#: The figures other modules and the sandbox read, from the specs.
X_MAX_WEIGHT = _rule("x").max_characters
#: twitter-text v3 (config/v3.json `transformedURLLength`): a URL weighs 23.
X_URL_WEIGHT = 23
#: twitter-text v3: code points in these ranges weigh 1, all others 2.
_X_LIGHT_RANGES: tuple[tuple[int, int], ...] = (
    (0, 4351),
    (8192, 8205),
    (8208, 8223),
    (8242, 8247),
)
BLUESKY_MAX_GRAPHEMES = _rule("bluesky").max_characters
BLUESKY_MAX_BYTES = _rule("bluesky").max_bytes or 0
MASTODON_DEFAULT_MAX_CHARACTERS = _rule("mastodon").max_characters
#: Mastodon's `characters_reserved_per_url` (docs.joinmastodon.org/entities/Instance/#statuses).
MASTODON_URL_WEIGHT = 23

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
    templates shown as Name, `{hashtag|\\#|tag}` HashtagTemplates shown as `#tag`); used to
    compare what LinkedIn returns with what we sent. Which form the finder returns a hashtag in
    (the `#tag` we sent, or the HashtagTemplate of learn.microsoft.com/.../shares/
    little-text-format) is not documented, so both read as `#tag`."""
    commentary = regex.sub(r"\{hashtag\|\\?[#＃]\|([^}]*)\}", r"#\1", commentary)
    commentary = regex.sub(r"@\[([^\]]*)\]\([^)]*\)", r"\1", commentary)
    return regex.sub(r"\\(.)", r"\1", commentary)


def hashtags(text: str) -> list[str]:
    return HASHTAG_RE.findall(text)


def mentions(text: str) -> list[str]:
    return MENTION_RE.findall(text)


def _empty(text: str, media_count: int) -> list[str]:
    return ["the post has neither text nor media"] if not text.strip() and media_count == 0 else []


def _count(counting: Counting, text: str) -> int:
    """`text` counted the way the rule says (looked up at call time, so tests may swap one)."""
    match counting:
        case "x_weighted":
            return x_weighted_length(text)
        case "graphemes":
            return graphemes(text)
        case "mastodon":
            return mastodon_length(text)
        case "threads":
            return threads_length(text)
        case "characters":
            return len(text)


def check_text(
    spec: PlatformSpec, text: str, *, media_count: int, max_characters: int | None = None
) -> list[str]:
    """Problems with `text` + `media_count` media under the platform's `TextRule` and item cap;
    `max_characters` overrides the rule's limit (an account's own)."""
    rule, media, title = spec.text, spec.media, spec.title
    problems = _empty(text, media_count)
    if media is not None and media.required and media_count == 0:
        problems.append(f"{title} needs at least one image or video")
    if media is not None and media.max_items is not None and media_count > media.max_items:
        problems.append(f"{title} allows at most {media.max_items} media items, got {media_count}")
    if rule is None:
        return problems
    limit = max_characters or rule.max_characters
    count = _count(rule.counting, text)
    if count > limit:
        who = f"this {title} instance" if rule.per_account and spec.self_hosted else title
        problems.append(f"{who} allows {limit} {rule.unit}, the text has {count}")
    size = len(text.encode())
    if rule.max_bytes is not None and size > rule.max_bytes:
        problems.append(f"{title} allows {rule.max_bytes} UTF-8 bytes, the text has {size}")
    counters: tuple[tuple[str, int | None, Callable[[], int]], ...] = (
        ("links", rule.max_links, lambda: len({url for _, _, url in extract_urls(text)})),
        ("hashtags", rule.max_hashtags, lambda: len(hashtags(text))),
        ("@mentions", rule.max_mentions, lambda: len(mentions(text))),
    )
    for label, cap, found in counters:
        if cap is not None and (n := found()) > cap:
            problems.append(f"{title} allows {cap} {label}, the text has {n}")
    return problems


def _validator(platform: str) -> Callable[..., list[str]]:
    def validate(
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        return check_text(
            platform_spec(platform), text, media_count=media_count, max_characters=max_characters
        )

    validate.__name__ = validate.__qualname__ = f"validate_{platform}"
    return validate


#: The adapters' pre-flight checks, by the names they import.
validate_x = _validator("x")
validate_bluesky = _validator("bluesky")
validate_mastodon = _validator("mastodon")
validate_threads = _validator("threads")
validate_linkedin = _validator("linkedin")
validate_instagram = _validator("instagram")
validate_facebook = _validator("facebook")


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
    try:
        spec = platform_spec(platform)
    except KeyError:
        raise ValueError(f"unknown platform {platform!r}") from None
    return check_text(spec, text, media_count=media_count, max_characters=max_characters)
