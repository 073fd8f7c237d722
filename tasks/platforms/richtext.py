"""Bluesky rich text: the `facets` that make links, mentions and hashtags live.

A Bluesky post's `text` is plain; a link, an @mention or a #tag is only clickable (and a tag
only indexed) when the record carries a facet for it, whose `index` is a **UTF-8 byte** range
into the text (docs.bsky.app/docs/advanced-guides/post-richtext; lexicon
`app.bsky.richtext.facet`: `byteStart` inclusive, `byteEnd` exclusive; features `#link` with
`uri`, `#mention` with `did`, `#tag` with `tag` without the `#`, at most 64 graphemes).

The patterns follow the docs' own Python example (same page): a mention is a syntactically valid
handle after `@` at a word start, resolved to a DID (a handle that does not resolve gets no facet,
as in that example); a link needs its scheme; trailing punctuation is not part of a link.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import regex

from tasks.platforms.text_limits import graphemes

_MENTION = regex.compile(
    r"(?:^|(?<=[\s(]))@((?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)"
)
_LINK = regex.compile(
    r"(?:^|(?<=[\s(]))(https?://[-a-zA-Z0-9@:%._+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b"
    r"(?:[-a-zA-Z0-9()@:%_+.~#?&/=]*[-a-zA-Z0-9@%_+~#/=])?)"
)
_TAG = regex.compile(r"(?:^|(?<=\s))[#＃]((?!\d+\b)[^\s\p{P}]*[^\d\s\p{P}][^\s\p{P}]*)")
TAG_MAX_GRAPHEMES = 64


def _byte_range(text: str, start: int, end: int) -> dict[str, int]:
    byte_start = len(text[:start].encode())
    return {"byteStart": byte_start, "byteEnd": byte_start + len(text[start:end].encode())}


async def build_facets(
    text: str, *, resolve_handle: Callable[[str], Awaitable[str | None]]
) -> list[dict[str, Any]]:
    """The facets of `text`, in text order; mentions whose handle does not resolve are left out."""
    facets: list[tuple[int, dict[str, Any]]] = []
    for match in _LINK.finditer(text):
        start, end = match.span(1)
        facets.append(
            (
                start,
                {
                    "index": _byte_range(text, start, end),
                    "features": [{"$type": "app.bsky.richtext.facet#link", "uri": match.group(1)}],
                },
            )
        )
    linked = [(f["index"]["byteStart"], f["index"]["byteEnd"]) for _, f in facets]
    for match in _MENTION.finditer(text):
        start, end = match.start(1) - 1, match.end(1)
        did = await resolve_handle(match.group(1))
        if did is None:
            continue
        facets.append(
            (
                start,
                {
                    "index": _byte_range(text, start, end),
                    "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}],
                },
            )
        )
    for match in _TAG.finditer(text):
        tag = match.group(1)
        if graphemes(tag) > TAG_MAX_GRAPHEMES:
            continue
        start, end = match.start(1) - 1, match.end(1)
        index = _byte_range(text, start, end)
        if any(low <= index["byteStart"] < high for low, high in linked):
            continue  # a `#fragment` inside a link is part of the link
        facets.append(
            (
                start,
                {
                    "index": index,
                    "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}],
                },
            )
        )
    return [facet for _, facet in sorted(facets, key=lambda pair: pair[0])]
