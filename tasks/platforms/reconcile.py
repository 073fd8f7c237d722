"""The one reconcile loop: did an earlier attempt already publish this post?

Platforms without an idempotency key (X, LinkedIn organisations, Facebook's posts and videos,
Instagram/Threads once their container can no longer vouch for itself, Mastodon past its
one-hour key) are reconciled by reading the account's own posts back, newest first, since the
first attempt began (less a clock-skew slack), page by page, until older posts begin or the
pages run out. The Meta platforms read their Graph edges through `graph.graph_page_reader`.
Each adapter supplies only

- a **page reader**: `read_page(cursor) -> Page` (cursor None for the first page), and
- a **matcher**: `matches(item) -> bool` (our text, compared the way the platform stores it),
  plus `created_at(item)` to know when older posts begin.

Two rules hold for every platform:

- past `max_pages` pages with pages still left, an earlier success cannot be ruled out: the
  outcome stays unknown (`UnknownOutcomeError`, retry later) rather than risking a second post;
- a look-up the platform refuses (403 missing scope, 404) says nothing about our post either:
  it too is an unknown outcome, never a failed post.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from tasks.platforms.base import PlatformError, UnknownOutcomeError, lookup_failed

Item = TypeVar("Item")

#: How far before our first attempt a matching post still counts as ours (clock skew).
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_MAX_PAGES = 10


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """One page of the account's posts, newest first; `next_cursor` None on the last page."""

    items: Sequence[Item]
    next_cursor: Any = None


async def find_own_post(
    *,
    read_page: Callable[[Any], Awaitable[Page[Item]]],
    matches: Callable[[Item], bool],
    created_at: Callable[[Item], datetime | None],
    since: datetime | None,
    what: str,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Item | None:
    """The earliest of the account's posts since `since` that `matches`, or None.

    `since` is the first attempt's start (the caller subtracts nothing: `CLOCK_SKEW` is applied
    here). Items older than that are someone else's (an earlier post with the same words), and
    once one shows up the scan stops: the pages are newest first.
    """
    floor = since - CLOCK_SKEW if since is not None else None
    found: list[tuple[datetime | None, Item]] = []
    cursor: Any = None
    for _ in range(max_pages):
        try:
            page = await read_page(cursor)
        except PlatformError as error:
            raise lookup_failed(error, what=what) from error
        reached_older = False
        for item in page.items:
            stamp = created_at(item)
            if floor is not None and stamp is not None and stamp < floor:
                reached_older = True
                continue
            if matches(item):
                found.append((stamp, item))
        if reached_older or page.next_cursor is None:
            return _earliest(found)
        cursor = page.next_cursor
    if found:
        return _earliest(found)
    raise UnknownOutcomeError(
        f"could not rule out an earlier post: more than {max_pages} pages of {what} since the "
        "first attempt",
        code="reconcile_exhausted",
    )


def _earliest(found: list[tuple[datetime | None, Item]]) -> Item | None:
    """The first post an earlier attempt made (a later identical one is someone's repost)."""
    if not found:
        return None
    dated = [pair for pair in found if pair[0] is not None]
    if dated:
        return min(dated, key=lambda pair: pair[0])[1]  # type: ignore[return-value,arg-type]
    return found[-1][1]  # newest first: the last listed is the earliest
