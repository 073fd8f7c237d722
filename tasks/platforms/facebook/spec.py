"""Facebook Pages' facts (see `tasks/platforms/specs.py`).

Connect: the manual Facebook Login flow (developers.facebook.com/docs/facebook-login/guides/
advanced/manual-flow): `www.facebook.com/{version}/dialog/oauth`, then
`graph.facebook.com/{version}/oauth/access_token?code=…` for a short-lived user token, extended
with `grant_type=fb_exchange_token` (developers.facebook.com/docs/facebook-login/guides/
access-tokens/get-long-lived). A Page token read with a long-lived user token "will not have an
expiration date" (same page, "Get a Long-lived Page Access Token"): that is what is stored, so
a Page account has nothing to refresh. Granted permissions: `GET /me/permissions`
(developers.facebook.com/docs/graph-api/reference/user/permissions). The Pages and their
tokens: `GET /me/accounts`, cursor-paginated, "next … If not included, this is the last page of
data" (developers.facebook.com/docs/graph-api/results). Permissions: Pages API
getting started (developers.facebook.com/docs/pages-api/getting-started: `pages_show_list`,
`pages_manage_posts`, `pages_read_engagement`) and `read_insights` for Page insights
(developers.facebook.com/docs/permissions).
"""

from datetime import date, timedelta

from tasks.platforms.specs import (
    MB,
    ApiVersions,
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
    "https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow",
    "https://developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived",
    "https://developers.facebook.com/docs/graph-api/reference/user/permissions",
    "https://developers.facebook.com/docs/pages-api/getting-started",
    "https://developers.facebook.com/docs/permissions",
    "https://developers.facebook.com/docs/graph-api/results",
)

#: The Facebook Login dialog and code exchange, shared with Instagram's Facebook Login.
DIALOG = Endpoint("https://www.facebook.com", "/{version}/dialog/oauth", served_by="facebook")
CODE_EXCHANGE = Endpoint(
    "https://graph.facebook.com", "/{version}/oauth/access_token", served_by="facebook"
)

#: The Graph API version Facebook and Instagram are called with, and each version's "available
#: until" date (v26.0: "TBD" as of this writing, so no date). Instagram shares it.
GRAPH_VERSIONS = ApiVersions(
    setting="META_GRAPH_VERSION",
    default="v25.0",
    sunsets={
        "v20.0": date(2026, 9, 24),
        "v21.0": date(2027, 1, 21),
        "v22.0": date(2027, 5, 20),
        "v23.0": date(2027, 10, 8),
        "v24.0": date(2028, 2, 18),
        "v25.0": date(2028, 7, 29),
    },
    docs=("https://developers.facebook.com/docs/graph-api/changelog/versions",),
)
#: Graph's throttling: usage headers say how long to wait; the daily publishing limit without
#: one waits an hour.
GRAPH_RATE_LIMITS = RateLimits(
    reset_from=(
        "`estimated_time_to_regain_access` (minutes) of the usage headers "
        "(`x-business-use-case-usage`, `x-page-usage`, `x-app-usage`, `x-ad-account-usage`)"
    ),
    fallback_wait=timedelta(hours=1),
    docs=("https://developers.facebook.com/docs/graph-api/overview/rate-limiting",),
)
_PHOTOS = "https://developers.facebook.com/docs/graph-api/reference/page/photos/ (4 MB)"
_VIDEOS = (
    "https://developers.facebook.com/docs/graph-api/video-uploads (file_url is the non-resumable "
    "upload: up to 1GB and 20 minutes; formats include mp4 and mov)"
)

SPEC = PlatformSpec(
    name="facebook",
    title="Facebook Pages",
    api_base_url="https://graph.facebook.com",
    logins=(
        LoginSpec(
            name="oauth2",
            authorize=DIALOG,
            token=CODE_EXCHANGE,
            scopes={
                "identity": ("pages_show_list",),
                "text": ("pages_manage_posts", "pages_read_engagement"),
                "images": ("pages_manage_posts",),
                "video": ("pages_manage_posts",),
                "metrics": ("read_insights", "pages_read_engagement"),
            },
            granted_scopes_from="permissions",
            scope_separator=",",
            access_token_lifetime=None,
            refresh=None,
            docs=DOCS,
        ),
    ),
    self_hosted=True,
    docs=DOCS,
    text=TextRule(
        max_characters=63206,
        counting="characters",
        docs=("https://developers.facebook.com/docs/graph-api/reference/page/feed/",),
    ),
    # Unpublished photos attached to one `/feed` post; a video alone (`/videos` takes one
    # `file_url` and makes its own post). GIFs are refused: no Page flow documents animated
    # photos. The 10 photos are this project's cap (no limit for `attached_media` was found).
    # Meta fetches the URLs itself, so the caps serve scheduling checks only.
    media=MediaSpec(
        caps={
            "image": media_cap(4 * MB, ("image/jpeg", "image/png"), _PHOTOS),
            "gif": media_cap(4 * MB, ("image/gif",), _PHOTOS),
            "video": media_cap(1_000 * MB, ("video/mp4", "video/quicktime"), _VIDEOS),
        },
        implemented=frozenset({"image", "video"}),
        max_items=10,
        alone=frozenset({"video"}),
        docs=(_PHOTOS.split(" ", 1)[0], _VIDEOS.split(" ", 1)[0]),
    ),
    versions=GRAPH_VERSIONS,
    rate_limits=GRAPH_RATE_LIMITS,
    metrics=MetricsSpec(
        reported=("reach", "likes", "comments", "shares", "clicks"),
        batch_size=1,
        names={
            "reach": "post_total_media_view_unique",
            "likes": "reactions",
            "clicks": "post_clicks",
        },
        docs=(
            "https://developers.facebook.com/docs/graph-api/reference/insights",
            "https://developers.facebook.com/docs/graph-api/reference/post",
        ),
    ),
    # `status.video_status`: "ready" publishes, "error" never does; Meta downloads within 5
    # minutes and processes a <= 1 GB, <= 20 min file well inside the limit below. Meta states
    # no pace: the status is looked at after 1 s (GRAPH's poll interval), then twice as long
    # each time up to 20 s, and the next attempt looks again after the next wait.
    #
    # `unposted_lifetime` is the staged *photos'* (`published=false` uploads attached at the
    # post's instant; a video is not staged, tasks/platforms/facebook/adapter.py "Staging").
    # Meta documents no lifetime for an unpublished Page photo (neither the page/photos nor the
    # Photo reference says how long one stays attachable), so the value is chosen: 24 hours,
    # the lifetime Meta documents for the unpublished uploads of its other publishing APIs
    # (Instagram and Threads containers). Short on purpose: Meta fetches a photo in a
    # moment, so a staging need not run more than a day ahead, while a photo gone by the
    # instant would fail the post; a longer guess would only raise that risk. A cancelled
    # post's photos are deleted, `DELETE /{photo-id}` (Photo reference, "Deleting";
    # facebook-python-business-sdk `Photo.api_delete`).
    upload=UploadSpec(
        processing_retry=timedelta(seconds=20),
        processing_limit=timedelta(hours=2),
        unposted_lifetime=timedelta(hours=24),
        docs=(
            "https://developers.facebook.com/docs/graph-api/video-uploads",
            "https://developers.facebook.com/docs/graph-api/reference/video-status",
            "https://developers.facebook.com/docs/graph-api/reference/page/photos/",
            "https://developers.facebook.com/docs/graph-api/reference/photo/",
        ),
    ),
    adapter_class="FacebookAdapter",
    connector_class="FacebookConnector",
    adapter_settings={
        "graph_version": "meta_graph_version",
        "app_id": "facebook_app_id",
        "app_secret": "facebook_app_secret",
    },
    oauth_apps={"oauth2": ("facebook_app_id", "facebook_app_secret")},
)
