"""The media matrix: which kinds of media each adapter posts, and which mixes each platform takes.

`tasks.media.check_media_against_platform` answers what a platform *documents* for one file
(kind, type, bytes). This module adds what the documents say about a post's media as a whole
and what our adapters actually implement, so the scheduling API can refuse up front (422
naming `mediaAssetIds[i]`) whatever would otherwise fail, or worse, go out without its media.
Adapters run the same check before their first call as a safety net for posts scheduled before
a rule changed.

Link previews are not media assets and are not checked here; see the platform matrix in
docs/platforms.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tasks.media import MAX_BUFFERED_BYTES, MediaKind, check_media_against_platform, media_kind
from tasks.platforms.base import MediaItem, PermanentError

#: Kinds each adapter implements through the platform's documented flow. A kind the platform
#: takes but that is missing here is refused at scheduling time as "not supported yet".
IMPLEMENTED_KINDS: dict[str, frozenset[MediaKind]] = {
    # X: images by the simple upload, GIF and video by the chunked upload (x.py).
    "x": frozenset({"image", "gif", "video"}),
    # Bluesky: images as app.bsky.embed.images, a video as app.bsky.embed.video (bluesky.py).
    # GIFs are refused: app.bsky.embed.images documents no animation (the blob is "image/*"),
    # so a GIF may well show as a still picture; not verified on a live PDS.
    "bluesky": frozenset({"image", "video"}),
    # Mastodon: every kind through POST /api/v2/media (mastodon.py).
    "mastodon": frozenset({"image", "gif", "video"}),
    # LinkedIn: images and GIFs by the Images API, a video by the Videos API (linkedin.py).
    "linkedin": frozenset({"image", "gif", "video"}),
    # Facebook: unpublished photos attached to a feed post, a video by `/videos` `file_url`
    # (facebook.py). GIFs are refused: no Page flow documents animated photos.
    "facebook": frozenset({"image", "video"}),
    # Instagram and Threads: image and video containers from the URL (instagram.py, threads.py).
    "instagram": frozenset({"image", "video"}),
    "threads": frozenset({"image", "video"}),
}

#: Most media items per post, and whether a video (or GIF, where it is exclusive) must stand
#: alone. Sources: X "a post takes 4 photos, 1 GIF or 1 video" (docs.x.com/x-api/media/
#: quickstart/best-practices); Bluesky `embed` is one union member, `app.bsky.embed.images` up
#: to 4 or one `app.bsky.embed.video` (bluesky-social/atproto lexicons/app/bsky/feed/post.json,
#: embed/images.json); Mastodon 4 attachments, "images_and_video" refused
#: (mastodon/mastodon app/services/post_status_service.rb validate_media!); LinkedIn multiImage
#: 2-20 images, a video post one video (learn.microsoft.com/.../shares/posts-api, multiimage-
#: post-api); Instagram carousels 10, Threads carousels 20, both mixing images and videos;
#: Facebook photos attached to one `/feed` post, a video alone: `POST /{page-id}/videos` takes
#: one `file_url` and makes its own post (developers.facebook.com/docs/graph-api/video-uploads,
#: page/videos reference); its 10 photos are this project's cap (no limit for
#: `attached_media` was found in Meta's pages).
_MAX_ITEMS: dict[str, int] = {
    "x": 4,
    "bluesky": 4,
    "mastodon": 4,
    "linkedin": 20,
    "facebook": 10,
    "instagram": 10,
    "threads": 20,
}
#: Kinds an adapter uploads in one request from memory (`fetch_platform_media`), so held to
#: `tasks.media.MAX_BUFFERED_BYTES` (50 MB) whatever more the platform documents: Mastodon's
#: `POST /api/v2/media` is one multipart request (99 MiB video on a default instance).
_BUFFERED: dict[str, frozenset[MediaKind]] = {
    # X: GIF and video are streamed segment by segment (the chunked upload), not buffered.
    "x": frozenset({"image"}),
    "bluesky": frozenset({"image", "video"}),
    "mastodon": frozenset({"image", "gif", "video"}),
    "linkedin": frozenset({"image", "gif"}),
}
_ALONE: dict[str, frozenset[MediaKind]] = {
    "x": frozenset({"gif", "video"}),
    "bluesky": frozenset({"video"}),
    "mastodon": frozenset({"video"}),
    "linkedin": frozenset({"video"}),
    "facebook": frozenset({"video"}),
}


@dataclass(frozen=True, slots=True)
class MediaProblem:
    """What is wrong, and which item (its index in the post's media list) it is about."""

    index: int
    message: str


def media_problems(platform: str, media: Sequence[tuple[str, int | None]]) -> list[MediaProblem]:
    """Problems with a post's media `[(mime_type, size_bytes), ...]` on `platform`."""
    problems: list[MediaProblem] = []
    kinds: list[MediaKind | None] = []
    for index, (mime_type, size_bytes) in enumerate(media):
        kind = media_kind(mime_type)
        kinds.append(kind)
        problem = check_media_against_platform(
            platform=platform, mime_type=mime_type, size_bytes=size_bytes
        )
        if problem is None and kind not in IMPLEMENTED_KINDS.get(platform, frozenset()):
            problem = f"{platform} does not support {kind} media here yet"
        buffered = kind in _BUFFERED.get(platform, frozenset())
        if problem is None and buffered and (size_bytes or 0) > MAX_BUFFERED_BYTES:
            problem = (
                f"{platform} takes {kind} media up to {MAX_BUFFERED_BYTES // 1_000_000} MB here"
            )
        if problem is not None:
            problems.append(MediaProblem(index, problem))
    if problems:
        return problems
    limit = _MAX_ITEMS.get(platform)
    if limit is not None and len(media) > limit:
        problems.append(
            MediaProblem(limit, f"{platform} takes at most {limit} media items per post")
        )
    for index, kind in enumerate(kinds):
        if kind in _ALONE.get(platform, frozenset()) and len(media) > 1:
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
