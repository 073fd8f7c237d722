"""Instagram's facts (see `tasks/platforms/specs.py`): two logins.

Instagram Login (developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-
login/business-login): `www.instagram.com/oauth/authorize`, then `POST api.instagram.com/oauth/
access_token`, whose answer lists the granted `permissions` (the guide shows the answer wrapped,
`{"data": [{"access_token", "user_id", "permissions": "a,b"}]}`; the older reference
developers.facebook.com/docs/instagram-platform/reference/oauth-access-token shows it flat); the
short-lived token is exchanged for a 60-day one (`graph.instagram.com/access_token?grant_type=
ig_exchange_token`, developers.facebook.com/docs/instagram-platform/reference/access_token) and
refreshed when "at least 24 hours old but not expired" (`refresh_access_token`). The account's
id is `user_id` of `GET /me?fields=user_id,username`, "your app user's Instagram professional
account user ID" (developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-
login/get-started). Scopes
`instagram_business_basic`, `instagram_business_content_publish`,
`instagram_business_manage_insights`.

Facebook Login (developers.facebook.com/docs/instagram-platform/instagram-api-with-facebook-
login/get-started): the Facebook dialog and code exchange, then the Page linked to the
Instagram professional account (`me/accounts?fields=instagram_business_account`). The Page
token read with a long-lived user token does not expire (developers.facebook.com/docs/facebook-
login/guides/access-tokens/get-long-lived, "Get a Long-lived Page Access Token"), and it is the
token stored: a long-lived *user* token can only be had from a short-lived one (the same page
documents no re-exchange), so the user token would die at 60 days. Scopes `instagram_basic`,
`instagram_content_publish`, `instagram_manage_insights`, `pages_show_list`,
`pages_read_engagement` (developers.facebook.com/docs/permissions).
"""

import dataclasses
from datetime import timedelta

from tasks.platforms.facebook.spec import CODE_EXCHANGE, DIALOG, GRAPH_RATE_LIMITS, GRAPH_VERSIONS
from tasks.platforms.specs import (
    MB,
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

INSTAGRAM_LOGIN_DOCS = (
    "https://developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-login/business-login",
    "https://developers.facebook.com/docs/instagram-platform/reference/refresh_access_token",
    "https://developers.facebook.com/docs/instagram-platform/reference/access_token",
    "https://developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-login/get-started",
)
FACEBOOK_LOGIN_DOCS = (
    "https://developers.facebook.com/docs/instagram-platform/instagram-api-with-facebook-login/get-started",
    "https://developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived",
    "https://developers.facebook.com/docs/permissions",
)

_PUBLISHING = "https://developers.facebook.com/docs/instagram-platform/content-publishing"
_MEDIA = (
    "https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/"
    "ig-user/media (image JPEG 8 MB; Reels MOV/MP4 300 MB)"
)
_CONTAINER = (
    "https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/"
    "ig-container"
)

SPEC = PlatformSpec(
    name="instagram",
    title="Instagram",
    api_base_url="https://graph.instagram.com",
    logins=(
        LoginSpec(
            name="instagram",
            authorize=Endpoint("https://www.instagram.com", "/oauth/authorize"),
            token=Endpoint("https://api.instagram.com", "/oauth/access_token"),
            scopes={
                "identity": ("instagram_business_basic",),
                "text": ("instagram_business_content_publish",),
                "images": ("instagram_business_content_publish",),
                "video": ("instagram_business_content_publish",),
                "metrics": ("instagram_business_manage_insights",),
            },
            granted_scopes_from="token_answer",
            scope_separator=",",
            access_token_lifetime=timedelta(days=60),
            # Refreshable when at least 24 h old and not expired; a week ahead leaves six
            # daily job runs to retry.
            refresh=RefreshPolicy(timedelta(days=7), timedelta(days=60), timedelta(hours=24)),
            docs=INSTAGRAM_LOGIN_DOCS,
        ),
        LoginSpec(
            name="facebook",
            authorize=DIALOG,
            token=CODE_EXCHANGE,
            scopes={
                "identity": ("instagram_basic", "pages_show_list", "pages_read_engagement"),
                "text": ("instagram_content_publish",),
                "images": ("instagram_content_publish",),
                "video": ("instagram_content_publish",),
                "metrics": ("instagram_manage_insights",),
            },
            granted_scopes_from="permissions",
            scope_separator=",",
            access_token_lifetime=None,
            refresh=None,
            docs=FACEBOOK_LOGIN_DOCS,
        ),
    ),
    self_hosted=True,
    docs=INSTAGRAM_LOGIN_DOCS + FACEBOOK_LOGIN_DOCS,
    # Content publishing, "Limitations": "Captions are limited to 2,200 characters, 30
    # hashtags, and 20 @ tags" (newer third-party pages say 5/3: could not verify with Meta).
    text=TextRule(
        max_characters=2200,
        counting="characters",
        max_hashtags=30,
        max_mentions=20,
        docs=(_PUBLISHING,),
    ),
    # Image and video containers from the URL (Meta fetches it), carousels of up to 10 mixing
    # both; a post needs media.
    media=MediaSpec(
        caps={
            "image": media_cap(8 * MB, ("image/jpeg",), _MEDIA),
            "video": media_cap(300 * MB, ("video/mp4", "video/quicktime"), _MEDIA),
        },
        implemented=frozenset({"image", "video"}),
        max_items=10,
        required=True,
        docs=(_PUBLISHING, _MEDIA.split(" ", 1)[0]),
    ),
    versions=GRAPH_VERSIONS,
    # A media container made ahead of the post (staging) lives 24 hours: IG Container
    # `status_code` "EXPIRED — The container was not published within 24 hours and has
    # expired"; the same reference has no Deleting ("This operation is not supported"), so an
    # unpublished container is left to expire. Meta states no processing limit (only "once per
    # minute, for no more than 5 minutes" as the pace of status queries): a staging waits its
    # own `STAGING_WAIT_SECONDS`.
    upload=UploadSpec(unposted_lifetime=timedelta(hours=24), docs=(_CONTAINER, _PUBLISHING)),
    rate_limits=dataclasses.replace(
        GRAPH_RATE_LIMITS,
        publish_quota="100 API-published posts per rolling 24 h (`content_publishing_limit`)",
        docs=(*GRAPH_RATE_LIMITS.docs, _PUBLISHING),
    ),
    metrics=MetricsSpec(
        reported=("impressions", "reach", "likes", "comments", "shares", "saves"),
        batch_size=1,
        names={"impressions": "views", "saves": "saved"},
        docs=(
            "https://developers.facebook.com/docs/instagram-platform/reference/instagram-media/insights",
        ),
    ),
    adapter_class="InstagramAdapter",
    connector_class="InstagramConnector",
    # Facebook Login accounts live on the Facebook host and extend their tokens with the Meta
    # app's credentials (tasks/platforms/instagram/adapter.py).
    adapter_settings={
        "login": "instagram_login",
        "facebook_base_url": "facebook_api_base_url",
        "facebook_app_id": "facebook_app_id",
        "facebook_app_secret": "facebook_app_secret",
        "graph_version": "meta_graph_version",
        "poll_interval": "graph_container_poll_seconds",
        "app_id": "instagram_app_id",
        "app_secret": "instagram_app_secret",
    },
    oauth_apps={
        "instagram": ("instagram_app_id", "instagram_app_secret"),
        "facebook": ("facebook_app_id", "facebook_app_secret"),
    },
)
