"""The media matrix: which kinds of media each adapter posts, and which mixes each platform takes.

`tasks.media.check_media_against_platform` answers what a platform *documents* for one file
(kind, type, bytes). This module adds what the documents say about a post's media as a whole
and what our adapters actually implement, so the scheduling API can refuse up front (422
naming `mediaAssetIds[i]`) whatever would otherwise fail, or worse, go out without its media.
Adapters run the same check before their first call as a safety net for posts scheduled before
a rule changed. Every figure is the platform's `MediaSpec` (`tasks/platforms/<platform>/spec.py`:
items per post, kinds that stand alone, kinds implemented, kinds uploaded from memory), each
with its source there.

Link previews are not media assets and are not checked here; see the platform matrix in
docs/platforms.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tasks.media import MAX_BUFFERED_BYTES, MediaKind, check_media_against_platform, media_kind
from tasks.platforms.base import MediaItem, PermanentError
from tasks.platforms.specs import MediaSpec, platform_spec


def _media_spec(platform: str) -> MediaSpec | None:
    try:
        return platform_spec(platform).media
    except KeyError:
        return None


@dataclass(frozen=True, slots=True)
class MediaProblem:
    """What is wrong, and which item (its index in the post's media list) it is about."""

    index: int
    message: str


def media_problems(platform: str, media: Sequence[tuple[str, int | None]]) -> list[MediaProblem]:
    """Problems with a post's media `[(mime_type, size_bytes), ...]` on `platform`."""
    spec = _media_spec(platform)
    implemented = spec.implemented if spec is not None else frozenset()
    buffered_kinds = spec.buffered if spec is not None else frozenset()
    problems: list[MediaProblem] = []
    kinds: list[MediaKind | None] = []
    for index, (mime_type, size_bytes) in enumerate(media):
        kind = media_kind(mime_type)
        kinds.append(kind)
        problem = check_media_against_platform(
            platform=platform, mime_type=mime_type, size_bytes=size_bytes
        )
        if problem is None and kind not in implemented:
            problem = f"{platform} does not support {kind} media here yet"
        buffered = kind in buffered_kinds
        if problem is None and buffered and (size_bytes or 0) > MAX_BUFFERED_BYTES:
            problem = (
                f"{platform} takes {kind} media up to {MAX_BUFFERED_BYTES // 1_000_000} MB here"
            )
        if problem is not None:
            problems.append(MediaProblem(index, problem))
    if problems or spec is None:
        return problems
    limit = spec.max_items
    if limit is not None and len(media) > limit:
        problems.append(
            MediaProblem(limit, f"{platform} takes at most {limit} media items per post")
        )
    for index, kind in enumerate(kinds):
        if kind in spec.alone and len(media) > 1:
            problems.append(
                MediaProblem(index, f"{platform} takes a {kind} only as the post's one media item")
            )
            break
    return problems


def check_media_support(platform: str, media: Sequence[MediaItem]) -> None:
    """The adapters' safety net: `PermanentError(media_unsupported)` for media the scheduling
    API would refuse today (a post scheduled before a rule changed). Retrying cannot help."""
    problems = media_problems(platform, [(m.mime_type, m.size_bytes) for m in media])
    if problems:
        raise PermanentError("; ".join(p.message for p in problems), code="media_unsupported")
