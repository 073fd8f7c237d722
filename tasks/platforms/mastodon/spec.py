"""Mastodon's facts (see `tasks/platforms/specs.py`).

Every instance is its own authorization server: an app is registered once per instance with
`POST /api/v1/apps` (docs.joinmastodon.org/methods/apps/#create), then the authorization code
flow runs against the instance's `/oauth/authorize` and `/oauth/token`, whose answer carries
`scope` (docs.joinmastodon.org/methods/oauth/); PKCE S256 is accepted since 4.3 (same page).
Scopes (docs.joinmastodon.org/api/oauth-scopes/): `write:statuses`, `write:media`,
`read:accounts` (verify_credentials), `read:statuses` (reading posts back for metrics). Tokens
do not expire; a revoked one needs the user.
"""

from datetime import timedelta

from tasks.platforms.specs import (
    MIB,
    Endpoint,
    LoginSpec,
    MediaSpec,
    MetricsSpec,
    PlatformSpec,
    RateLimits,
    TextRule,
    UploadSpec,
    media_cap,
)

DOCS = (
    "https://docs.joinmastodon.org/methods/apps/#create",
    "https://docs.joinmastodon.org/methods/oauth/",
    "https://docs.joinmastodon.org/api/oauth-scopes/",
)
_MEDIA = (
    "https://docs.joinmastodon.org/user/posting/#media; mastodon/mastodon "
    "app/models/media_attachment.rb IMAGE_LIMIT 16.megabytes, VIDEO_LIMIT 99.megabytes "
    "(an instance may differ: /api/v2/instance configuration.media_attachments)"
)

SPEC = PlatformSpec(
    name="mastodon",
    title="Mastodon",
    api_base_url="https://mastodon.social",
    logins=(
        LoginSpec(
            name="oauth2",
            # The host is the account's instance, chosen at connect.
            authorize=Endpoint("", "/oauth/authorize"),
            token=Endpoint("", "/oauth/token"),
            scopes={
                "identity": ("read:accounts",),
                "text": ("write:statuses",),
                "images": ("write:media",),
                "video": ("write:media",),
                "metrics": ("read:statuses",),
            },
            granted_scopes_from="token_answer",
            pkce=True,
            access_token_lifetime=None,
            refresh=None,
            docs=DOCS,
        ),
    ),
    self_hosted=True,
    docs=DOCS,
    # 500 by default; each instance says its own (`/api/v2/instance`
    # configuration.statuses.max_characters). A URL counts 23 (characters_reserved_per_url).
    text=TextRule(
        max_characters=500,
        counting="mastodon",
        per_account=True,
        docs=(
            "https://docs.joinmastodon.org/user/posting/#text",
            "https://docs.joinmastodon.org/entities/Instance/#statuses",
        ),
    ),
    # 4 attachments, a video alone ("images_and_video" refused: mastodon/mastodon
    # app/services/post_status_service.rb validate_media!); POST /api/v2/media is one
    # multipart request, so every kind is uploaded from memory.
    media=MediaSpec(
        caps={
            "image": media_cap(16 * MIB, ("image/jpeg", "image/png", "image/webp"), _MEDIA),
            # A GIF upload is typed `image` before conversion, so IMAGE_LIMIT applies.
            "gif": media_cap(16 * MIB, ("image/gif",), _MEDIA),
            "video": media_cap(99 * MIB, ("video/mp4", "video/quicktime"), _MEDIA),
        },
        implemented=frozenset({"image", "gif", "video"}),
        max_items=4,
        alone=frozenset({"video"}),
        buffered=frozenset({"image", "gif", "video"}),
        docs=("https://docs.joinmastodon.org/methods/statuses/#create",),
    ),
    rate_limits=RateLimits(
        reset_from="`X-RateLimit-Reset` (an ISO 8601 instant)",
        docs=("https://docs.joinmastodon.org/api/rate-limits/",),
    ),
    metrics=MetricsSpec(
        reported=("likes", "comments", "shares"),
        batch_size=20,
        names={"likes": "favourites", "comments": "replies", "shares": "reblogs"},
        docs=("https://docs.joinmastodon.org/entities/Status/",),
    ),
    # POST /api/v2/media: 200 when processed at once, 202 while processing (`url: null`);
    # GET /api/v1/media/:id: 206 while still processing. Mastodon states no pace: an attempt
    # looks after 0.5 s, then doubles the wait up to 4 s, for up to 18 s from its start (inside
    # the queue's 30 s dispatch deadline, after a media fetch of at most 15 s); the next attempt
    # looks again after the next wait, so a video processed in 20 s goes out about then.
    # Staged ahead of the post, an upload is kept a day: the instance destroys unattached media
    # created over a day ago (mastodon/mastodon app/workers/scheduler/
    # media_cleanup_scheduler.rb, `MediaAttachment.unattached.where('created_at < ?',
    # 1.day.ago)`), counted from the upload; `DELETE /api/v1/media/:id` (4.4.0+) removes one
    # sooner when the post is cancelled.
    upload=UploadSpec(
        processing_budget=timedelta(seconds=18),
        poll_interval=timedelta(seconds=0.5),
        processing_retry=timedelta(seconds=4),
        unposted_lifetime=timedelta(days=1),
        accepted_statuses=(200, 202),
        docs=(
            "https://docs.joinmastodon.org/methods/media/#v2",
            "https://docs.joinmastodon.org/methods/media/#get",
            "https://docs.joinmastodon.org/methods/media/#delete",
            "https://github.com/mastodon/mastodon/blob/main/app/workers/scheduler/media_cleanup_scheduler.rb",
        ),
    ),
    adapter_class="MastodonAdapter",
    connector_class="MastodonConnector",
    tenant_server=True,
)
