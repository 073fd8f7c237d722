"""X's facts (see `tasks/platforms/specs.py`).

Scopes: docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code (the scope
table: `tweet.read`, `tweet.write`, `users.read`, `offline.access` "to get a refresh token");
`media.write` for the v2 media upload endpoints (docs.x.com/x-api/media/upload-media, "OAuth 2.0
… media.write"; tokens minted without it get 403 on upload). `GET /2/users/me` needs
`tweet.read users.read`. Access tokens live 2 hours; the refresh token is single-use and rotates
(docs.x.com/resources/fundamentals/authentication/oauth-2-0/user-access-token). PKCE S256 is
required on the authorization request.
"""

from datetime import timedelta

from tasks.platforms.specs import (
    MB,
    MIB,
    Endpoint,
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
    "https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code",
    "https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/user-access-token",
    "https://docs.x.com/x-api/media/upload-media",
)
_MEDIA = "https://docs.x.com/x-api/media (Image 5 MB, GIF 15 MB, Video 512 MB)"
_MEDIA_TYPES = "https://docs.x.com/x-api/media/quickstart/best-practices"

SPEC = PlatformSpec(
    name="x",
    title="X",
    api_base_url="https://api.x.com",
    logins=(
        LoginSpec(
            name="oauth2",
            authorize=Endpoint("https://x.com", "/i/oauth2/authorize"),
            token=Endpoint("https://api.x.com", "/2/oauth2/token"),
            scopes={
                "identity": ("tweet.read", "users.read"),
                "text": ("tweet.read", "tweet.write", "users.read"),
                "images": ("media.write",),
                "video": ("media.write",),
                "metrics": ("tweet.read", "users.read"),
                "refresh": ("offline.access",),
            },
            granted_scopes_from="token_answer",
            pkce=True,
            access_token_lifetime=timedelta(hours=2),
            # Two hours: renewed when it has ten minutes left.
            refresh=RefreshPolicy(timedelta(minutes=10), needs_refresh_token=True),
            docs=DOCS,
        ),
    ),
    docs=DOCS,
    # twitter-text v3 (github.com/twitter/twitter-text, config/v3.json: maxWeightedTweetLength
    # 280, transformedURLLength 23, emoji 2); X Premium accounts may carry a larger limit.
    text=TextRule(
        max_characters=280,
        counting="x_weighted",
        unit="weighted characters",
        per_account=True,
        docs=(
            "https://github.com/twitter/twitter-text/blob/master/config/v3.json",
            "https://docs.x.com/resources/fundamentals/counting-characters",
        ),
    ),
    # "a post takes 4 photos, 1 GIF or 1 video"; images by the simple upload (in memory), GIF
    # and video by the chunked upload, streamed segment by segment.
    media=MediaSpec(
        caps={
            "image": media_cap(
                5 * MB, ("image/jpeg", "image/png", "image/webp"), f"{_MEDIA}; {_MEDIA_TYPES}"
            ),
            "gif": media_cap(15 * MB, ("image/gif",), _MEDIA),
            "video": media_cap(
                512 * MB, ("video/mp4", "video/quicktime"), f"{_MEDIA}; {_MEDIA_TYPES}"
            ),
        },
        implemented=frozenset({"image", "gif", "video"}),
        max_items=4,
        alone=frozenset({"gif", "video"}),
        buffered=frozenset({"image"}),
        docs=(_MEDIA_TYPES,),
    ),
    rate_limits=RateLimits(
        reset_from=(
            "`x-user-limit-24hour-reset` / `x-app-limit-24hour-reset` when that bucket is "
            "empty, else `x-rate-limit-reset` (epoch seconds), else `Retry-After`"
        ),
        docs=("https://docs.x.com/x-api/fundamentals/rate-limits",),
    ),
    metrics=MetricsSpec(
        reported=("impressions", "likes", "comments", "shares", "saves"),
        batch_size=100,
        names={
            "impressions": "impression_count",
            "likes": "like_count",
            "comments": "reply_count",
            "shares": "retweet_count + quote_count",
            "saves": "bookmark_count",
        },
        docs=("https://docs.x.com/x-api/fundamentals/metrics",),
    ),
    # APPEND: "It must be <= 5 MB" a segment, `segment_index` 0-999, and "A successful
    # response returns HTTP 2xx" (POST media/upload APPEND); a media id is usable for
    # `expires_after_secs` (24 h when the answer omits it). Segments are 1 MiB: X's own
    # examples split a file in 1 MB chunks (the same APPEND page) and its Python and JavaScript
    # quickstarts send 1024 * 1024, while 5 MB multipart segments were refused by X's edge with
    # an empty 413 at segment 0 (trypostit/trypost#31); 1000 x 1 MiB still covers the 512 MB
    # video cap, and a 413 halves the segment (`XAdapter._append_all`). Processing: polling
    # stops 18 s into the attempt, inside the queue's 30 s dispatch deadline with room for the
    # tweet (PLATFORM_HTTP_TIMEOUT_SECONDS, 10 s); the next attempt resumes from the stored id
    # 30 s on (or after X's `check_after_secs`, if longer).
    upload=UploadSpec(
        part_bytes=1 * MIB,
        max_parts=1000,
        parts_set_by="adapter",
        processing_budget=timedelta(seconds=18),
        # STATUS is looked at after 1 s, then twice as long each time up to 10 s, never sooner
        # than X's `check_after_secs`; the next attempt looks after the next wait.
        poll_interval=timedelta(seconds=1),
        processing_retry=timedelta(seconds=10),
        # An uploaded, unposted media id is usable for the `expires_after_secs` of X's answer:
        # 86400 (24 h) in the INIT and simple-upload answers (initialize-media-upload,
        # upload-media, response examples). X documents no processing limit, so staging waits
        # as long as its task may (`STAGING_WAIT_SECONDS`), and no delete for an uploaded id.
        unposted_lifetime=timedelta(hours=24),
        accepted_statuses=(200, 201, 202, 204),
        docs=(
            "https://docs.x.com/x-api/media/initialize-media-upload",
            "https://docs.x.com/x-api/media/upload-media",
            "https://docs.x.com/x-api/media/append-media-upload",
            "https://docs.x.com/x-api/media/quickstart/media-upload-chunked",
            "https://developer.x.com/en/docs/x-api/v1/media/upload-media/api-reference/post-media-upload-append",
            "https://github.com/trypostit/trypost/pull/31",
        ),
    ),
    adapter_class="XAdapter",
    connector_class="XConnector",
    adapter_settings={"client_id": "x_client_id", "client_secret": "x_client_secret"},
    oauth_apps={"oauth2": ("x_client_id", "x_client_secret")},
)
