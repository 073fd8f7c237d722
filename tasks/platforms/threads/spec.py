"""Threads' facts (see `tasks/platforms/specs.py`).

Connect (developers.facebook.com/docs/threads/get-started/get-access-tokens-and-permissions):
the Authorization Window `threads.com/oauth/authorize`, then `POST graph.threads.net/oauth/
access_token` (a short-lived token, one hour, and `user_id`), exchanged for a 60-day token with
`grant_type=th_exchange_token` (developers.facebook.com/docs/threads/get-started/
long-lived-tokens), refreshable when "at least 24 hours old but have not expired". Scopes
(developers.facebook.com/docs/threads/get-started): `threads_basic` "required for all Threads
endpoints", `threads_content_publish`, `threads_manage_insights`. The token answer does not
list what was granted, and the one documented reader of a token's scopes, `GET /debug_token`
(developers.facebook.com/docs/threads/troubleshooting/debug-access-token), needs "a user access
token from a Threads tester" of the app besides the token inspected: not reported. Who the user
is: `GET /v1.0/me?fields=id,username` (developers.facebook.com/docs/threads/threads-profiles).
"""

import dataclasses
from datetime import timedelta

from tasks.platforms.facebook.spec import GRAPH_RATE_LIMITS
from tasks.platforms.specs import (
    MB,
    ApiVersions,
    Endpoint,
    LoginSpec,
    MediaSpec,
    MetricsSpec,
    PlatformSpec,
    RefreshPolicy,
    TextRule,
    UploadSpec,
    media_cap,
)

DOCS = (
    "https://developers.facebook.com/docs/threads/get-started/get-access-tokens-and-permissions",
    "https://developers.facebook.com/docs/threads/get-started/long-lived-tokens",
    "https://developers.facebook.com/docs/threads/get-started",
    "https://developers.facebook.com/docs/threads/troubleshooting/debug-access-token",
    "https://developers.facebook.com/docs/threads/threads-profiles",
)

_TEXT = "https://developers.facebook.com/documentation/threads/create-posts/text-attachments"
_MEDIA = (
    "https://developers.facebook.com/docs/threads/overview#media-specifications "
    "(image JPEG/PNG 8 MB; video MOV/MP4 1 GB)"
)

SPEC = PlatformSpec(
    name="threads",
    title="Threads",
    api_base_url="https://graph.threads.net",
    logins=(
        LoginSpec(
            name="oauth2",
            authorize=Endpoint("https://threads.com", "/oauth/authorize"),
            token=Endpoint("https://graph.threads.net", "/oauth/access_token"),
            scopes={
                "identity": ("threads_basic",),
                "text": ("threads_content_publish",),
                "images": ("threads_content_publish",),
                "video": ("threads_content_publish",),
                "metrics": ("threads_manage_insights",),
            },
            granted_scopes_from="not_reported",
            scope_separator=",",
            access_token_lifetime=timedelta(days=60),
            refresh=RefreshPolicy(timedelta(days=7), timedelta(days=60), timedelta(hours=24)),
            docs=DOCS,
        ),
    ),
    self_hosted=True,
    docs=DOCS,
    # 500 characters, emoji counted by their UTF-8 bytes (developers.facebook.com/docs/threads/
    # posts, "Limitations"). "Starting December 22, 2025, Threads posts containing more than 5
    # links will fail to post" (unique URLs in `text`). No hashtag limit: Meta's Threads pages
    # document none and no refusal for more than one `#`; the one-per-post rule is the app's
    # *topic tag* (one per post, chosen in the composer or with the container's `topic_tag`
    # parameter), which extra `#words` in the text do not break.
    text=TextRule(
        max_characters=500,
        counting="threads",
        max_links=5,
        docs=(
            "https://developers.facebook.com/docs/threads/overview",
            "https://developers.facebook.com/docs/threads/posts",
            _TEXT,
        ),
    ),
    media=MediaSpec(
        caps={
            "image": media_cap(8 * MB, ("image/jpeg", "image/png"), _MEDIA),
            "video": media_cap(1_000 * MB, ("video/mp4", "video/quicktime"), _MEDIA),
        },
        implemented=frozenset({"image", "video"}),
        max_items=20,
        docs=(
            _MEDIA.split(" ", 1)[0],
            "https://developers.facebook.com/docs/threads/posts#carousel-posts",
        ),
    ),
    # A media container made ahead of the post (staging) lives 24 hours: "EXPIRED — The
    # container was not published within 24 hours and has expired" (Threads API
    # Troubleshooting, "Publishing Does Not Return a Media ID", the `GET /{threads-container-id}`
    # statuses). Meta's Threads pages document no delete for an unpublished container, so it is
    # left to expire, and no processing limit ("once per minute, for no more than 5 minutes" is
    # the pace of status queries): a staging waits its own `STAGING_WAIT_SECONDS`.
    upload=UploadSpec(
        unposted_lifetime=timedelta(hours=24),
        docs=("https://developers.facebook.com/docs/threads/troubleshooting",),
    ),
    # Threads has its own API versions, only `v1.0` so far; no retirement is published.
    versions=ApiVersions(
        setting=None,
        default="v1.0",
        docs=("https://developers.facebook.com/docs/threads/overview",),
    ),
    rate_limits=dataclasses.replace(
        GRAPH_RATE_LIMITS,
        publish_quota="250 API-published posts per rolling 24 h (`threads_publishing_limit`)",
        docs=(
            *GRAPH_RATE_LIMITS.docs,
            "https://developers.facebook.com/docs/threads/overview#rate-limiting",
        ),
    ),
    metrics=MetricsSpec(
        reported=("impressions", "likes", "comments", "shares"),
        batch_size=1,
        names={
            "impressions": "views",
            "comments": "replies",
            "shares": "reposts + quotes + shares",
        },
        docs=("https://developers.facebook.com/docs/threads/insights",),
    ),
    adapter_class="ThreadsAdapter",
    connector_class="ThreadsConnector",
    adapter_settings={
        "app_id": "threads_app_id",
        "app_secret": "threads_app_secret",
        "poll_interval": "graph_container_poll_seconds",
    },
    oauth_apps={"oauth2": ("threads_app_id", "threads_app_secret")},
)
