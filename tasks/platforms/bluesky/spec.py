"""Bluesky's facts (see `tasks/platforms/specs.py`).

No browser step: the user gives a handle and an app password. The handle resolves to a DID
(atproto.com/specs/handle), the DID document names the account's PDS (atproto.com/specs/did,
service `#atproto_pds`), and `com.atproto.server.createSession` on that PDS answers an
`accessJwt` and a `refreshJwt` (docs.bsky.app/docs/api/com-atproto-server-create-session). The
app password is never stored. The access JWT lives minutes to hours (its `exp`) and is renewed
with `com.atproto.server.refreshSession`, whose refresh JWT is single-use.
"""

from datetime import timedelta

from tasks.platforms.specs import (
    LoginSpec,
    MediaSpec,
    MetricsSpec,
    PlatformSpec,
    RateLimits,
    RefreshPolicy,
    TextRule,
    UploadSpec,
    media_cap,
)

DOCS = (
    "https://atproto.com/specs/handle",
    "https://atproto.com/specs/did",
    "https://docs.bsky.app/docs/api/com-atproto-server-create-session",
    "https://docs.bsky.app/docs/api/com-atproto-server-refresh-session",
)
_POST = "https://github.com/bluesky-social/atproto/blob/main/lexicons/app/bsky/feed/post.json"
_IMAGES = (
    "bluesky-social/atproto lexicons/app/bsky/embed/images.json "
    '(image blob accept image/*, maxSize 2000000: "May be up to 2 MB, formerly limited to 1 MB")'
)
_VIDEO = (
    "bluesky-social/atproto lexicons/app/bsky/embed/video.json "
    '(video blob accept video/mp4, maxSize 300000000: "May be up to 300mb, formerly limited to '
    '100mb")'
)
_VIDEO_TUTORIAL = "https://docs.bsky.app/docs/tutorials/video"
#: uploadVideo.json, getJobStatus.json, getUploadLimits.json, defs.json (#jobStatus).
_VIDEO_LEXICONS = "https://github.com/bluesky-social/atproto/tree/main/lexicons/app/bsky/video"

SPEC = PlatformSpec(
    name="bluesky",
    title="Bluesky",
    api_base_url="https://bsky.social",
    logins=(
        LoginSpec(
            name="app_password",
            authorize=None,
            token=None,
            scopes={},
            granted_scopes_from="not_reported",
            # The PDS signs access JWTs for 120 minutes (bluesky-social/atproto,
            # packages/pds/src/account-manager/helpers/auth.ts, createAccessToken); the stored
            # expiry is read from the JWT's own `exp` all the same.
            access_token_lifetime=timedelta(hours=2),
            refresh=RefreshPolicy(timedelta(minutes=10), needs_refresh_token=True),
            docs=DOCS,
        ),
    ),
    self_hosted=True,
    docs=DOCS,
    # app.bsky.feed.post `text`: maxGraphemes 300, maxLength 3000 (bytes of UTF-8).
    text=TextRule(
        max_characters=300, counting="graphemes", unit="graphemes", max_bytes=3000, docs=(_POST,)
    ),
    # `embed` is one union member: `app.bsky.embed.images` up to 4, or one
    # `app.bsky.embed.video`. GIFs are refused: embed.images documents no animation (the blob is
    # "image/*"), so a GIF may well show as a still picture; not verified on a live PDS.
    media=MediaSpec(
        caps={
            "image": media_cap(2_000_000, ("image/jpeg", "image/png", "image/webp"), _IMAGES),
            # Any image/* blob: a GIF is accepted as an image blob of at most 2 MB.
            "gif": media_cap(2_000_000, ("image/gif",), _IMAGES),
            "video": media_cap(300_000_000, ("video/mp4",), _VIDEO),
        },
        implemented=frozenset({"image", "video"}),
        max_items=4,
        alone=frozenset({"video"}),
        # Images go up with uploadBlob from memory; a video is streamed to the video service.
        buffered=frozenset({"image"}),
        docs=(_POST, _VIDEO_TUTORIAL),
    ),
    # Video goes through the video service ("Recommended method" of the tutorial): one
    # uploadVideo request with the whole file (200 with the job, or 409 `already_exists` with
    # the earlier job of the same file), then getJobStatus until the job's `blob`: looked at
    # after 1 s (the tutorial's loop waits a second between looks), then twice as long each time
    # up to 30 s. An attempt polls at most `processing_budget` (inside the queue's 30 s dispatch
    # deadline, with room for createRecord), then ends transient; the next resumes from the
    # stored job id after the next wait.
    # An uploaded blob (an image's uploadBlob, or the processed video the service puts on the
    # PDS) stays "temporary" until a record references it, and the PDS garbage-collects it after
    # a while: uploadBlob's lexicon says only "within a time window (eg, minutes)", the blob
    # spec recommends "several hours of grace time before 'garbage collecting', with at least
    # one hour a firm lower bound" (Usage and Implementation Guidelines). A PDS is the user's
    # choice, so a staged blob is counted good for that firm hour only, from its upload.
    upload=UploadSpec(
        processing_budget=timedelta(seconds=18),
        poll_interval=timedelta(seconds=1),
        processing_retry=timedelta(seconds=30),
        unposted_lifetime=timedelta(hours=1),
        accepted_statuses=(200,),
        docs=(
            _VIDEO_TUTORIAL,
            _VIDEO_LEXICONS,
            "https://atproto.com/specs/blob",
            "https://docs.bsky.app/docs/api/com-atproto-repo-upload-blob",
        ),
    ),
    rate_limits=RateLimits(
        reset_from="`ratelimit-reset` (epoch seconds)",
        docs=("https://docs.bsky.app/docs/advanced-guides/rate-limits",),
    ),
    # app.bsky.feed.getPosts: likeCount, replyCount, repostCount, quoteCount; the AppView
    # reports no views, reach or clicks at all.
    metrics=MetricsSpec(
        reported=("likes", "comments", "shares"),
        batch_size=25,
        names={"comments": "replyCount", "likes": "likeCount", "shares": "repost + quote"},
        docs=("https://docs.bsky.app/docs/api/app-bsky-feed-get-posts",),
    ),
    adapter_class="BlueskyAdapter",
    connector_class="BlueskyConnector",
    adapter_settings={"video_service_url": "bluesky_video_service_url"},
    connector_settings={"plc_directory_url": "bluesky_plc_directory_url"},
    tenant_server=True,
)
