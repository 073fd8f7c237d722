"""LinkedIn's facts (see `tasks/platforms/specs.py`).

Connect: the 3-legged authorization code flow (learn.microsoft.com/en-us/linkedin/shared/
authentication/authorization-code-flow): `www.linkedin.com/oauth/v2/authorization`, then
`www.linkedin.com/oauth/v2/accessToken`, whose answer carries `access_token`, `expires_in`
(60 days) and `scope`. Identity: Sign In with LinkedIn using OpenID Connect, scopes `openid
profile`, `GET /v2/userinfo` answers `sub` (learn.microsoft.com/en-us/linkedin/consumer/
integrations/self-serve/sign-in-with-linkedin-v2). Posting as a member: `w_member_social`
(learn.microsoft.com/en-us/linkedin/consumer/integrations/self-serve/share-on-linkedin).
Metrics of a member's posts need `r_member_social`, "(Restricted)" and not granted to ordinary
apps (learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/posts-api), so it
is not asked for.

Refresh: "LinkedIn supports programmatic refresh tokens for all approved Marketing Developer
Platform (MDP) partners" (learn.microsoft.com/en-us/linkedin/shared/authentication/
programmatic-refresh-tokens); other apps get no refresh token, and their 60-day token works to
its last day, so an account without one is never "due" and publishes until it expires.
"""

from datetime import date, timedelta

from tasks.platforms.specs import (
    MB,
    MIB,
    ApiVersions,
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
    "https://learn.microsoft.com/en-us/linkedin/shared/authentication/authorization-code-flow",
    "https://learn.microsoft.com/en-us/linkedin/consumer/integrations/self-serve/sign-in-with-linkedin-v2",
    "https://learn.microsoft.com/en-us/linkedin/consumer/integrations/self-serve/share-on-linkedin",
    "https://learn.microsoft.com/en-us/linkedin/shared/authentication/programmatic-refresh-tokens",
)
_SHARES = "https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares"
_IMAGES = (
    f"{_SHARES}/images-api"
    " (JPG, GIF, PNG; < 36,152,320 pixels; GIF <= 250 frames; no byte limit documented)"
)
_VIDEOS = f"{_SHARES}/videos-api (MP4, 75 KB - 500 MB, 3 s - 30 min)"

#: `LinkedIn-Version: YYYYMM`. The sunsets are from "API Migration Status"; versions not listed
#: are "supported and stable for a minimum of one year" (counted from the first of the release
#: month, the conservative reading). 202607 (July 2026) is the latest version listed by the
#: versioning page as harvested on 2026-08-13 (github.com/api-evangelist/linkedin-ads
#: lifecycle/linkedin-ads-lifecycle.yml), so it works until July 2027.
VERSIONS = ApiVersions(
    setting="LINKEDIN_VERSION",
    default="202607",
    sunsets={
        "202510": date(2026, 10, 15),
        "202511": date(2026, 11, 16),
        "202601": date(2027, 1, 15),
        "202602": date(2027, 2, 15),
        "202603": date(2027, 3, 16),
    },
    support_months=12,
    docs=(
        "https://learn.microsoft.com/en-us/linkedin/marketing/integrations/migrations",
        "https://learn.microsoft.com/en-us/linkedin/marketing/versioning",
    ),
)


def account_kind(external_id: str) -> str:
    """ "member" or "organization": an external id that is not a URN is a member id, and a
    `urn:li:person:` URN is a member (Posts API authors: `urn:li:person:{id}` or
    `urn:li:organization:{id}`)."""
    if not external_id.startswith("urn:li:") or external_id.startswith("urn:li:person:"):
        return "member"
    return "organization"


SPEC = PlatformSpec(
    name="linkedin",
    title="LinkedIn",
    api_base_url="https://api.linkedin.com",
    logins=(
        LoginSpec(
            name="oauth2",
            authorize=Endpoint("https://www.linkedin.com", "/oauth/v2/authorization"),
            token=Endpoint("https://www.linkedin.com", "/oauth/v2/accessToken"),
            scopes={
                "identity": ("openid", "profile"),
                "text": ("w_member_social",),
                "images": ("w_member_social",),
                "video": ("w_member_social",),
            },
            granted_scopes_from="token_answer",
            access_token_lifetime=timedelta(days=60),
            # Partners' refresh tokens: a week ahead leaves six daily job runs to retry.
            refresh=RefreshPolicy(timedelta(days=7), needs_refresh_token=True),
            docs=DOCS,
        ),
    ),
    docs=DOCS,
    # `commentary` up to 3,000 characters; whether LinkedIn counts the little-text escapes is
    # not documented, so the text as the reader sees it is counted.
    text=TextRule(
        max_characters=3000,
        counting="characters",
        docs=(f"{_SHARES}/posts-api", f"{_SHARES}/little-text-format"),
    ),
    # multiImage 2-20 images, a video post one video; images and GIFs go up from memory (one
    # PUT), a video in the byte ranges LinkedIn hands out.
    media=MediaSpec(
        caps={
            "image": media_cap(None, ("image/jpeg", "image/png"), _IMAGES),
            "gif": media_cap(None, ("image/gif",), _IMAGES),
            "video": media_cap(500 * MB, ("video/mp4",), _VIDEOS),
        },
        implemented=frozenset({"image", "gif", "video"}),
        max_items=20,
        alone=frozenset({"video"}),
        buffered=frozenset({"image", "gif"}),
        docs=(f"{_SHARES}/posts-api", f"{_SHARES}/multiimage-post-api"),
    ),
    versions=VERSIONS,
    # No rate-limit headers; daily quotas reset at 00:00 UTC (the answer names the DAY limit);
    # the short "infrastructure protection" throttle "returns to normal automatically".
    rate_limits=RateLimits(
        reset_from="00:00 UTC for a DAY limit, else `Retry-After`; no rate-limit headers",
        fallback_wait=timedelta(minutes=5),
        docs=("https://learn.microsoft.com/en-us/linkedin/shared/api-guide/concepts/rate-limits",),
    ),
    # socialMetadata: reactions and comments. Impressions and clicks need
    # organizationalEntityShareStatistics; a member's social metadata needs `r_member_social`,
    # "(Restricted)", granted to select developers only.
    metrics=MetricsSpec(
        reported=("likes", "comments"),
        batch_size=20,
        unavailable={"member": "needs LinkedIn's restricted `r_member_social` permission"},
        kind_of=account_kind,
        names={"likes": "reactions"},
        docs=(
            f"{_SHARES}/network-update-social-actions",
            f"{_SHARES}/posts-api",
        ),
    ),
    # initializeUpload answers `uploadInstructions` (4 MB byte ranges set by LinkedIn); each
    # PUT answers 200 or 201 with the part's ETag; an upload never finalized stays
    # WAITING_UPLOAD, and its parts are PUT one by one, so a retry sends only the parts without
    # an ETag. A video still PROCESSING is looked at after 2 s, then twice as long each time up
    # to 10 s (LinkedIn states no pace); the next attempt looks again after the next wait.
    #
    # Staging: neither the Images nor the Videos API states how long an uploaded image or video
    # that no post names stays usable (their `uploadUrlExpiresAt` / `uploadUrlsExpireAt` is when
    # the upload URLs stop taking bytes, not the asset's end), and neither documents a delete
    # for one. 24 h is a conservative pick: it bounds how far ahead of the post media are
    # staged (a day covers any processing), and `publish` reads each staged urn's status once
    # before the post, so one LinkedIn dropped earlier is uploaded again instead of failing the
    # post. No processing limit is documented either.
    upload=UploadSpec(
        part_bytes=4 * MIB,
        parts_set_by="platform",
        poll_interval=timedelta(seconds=2),
        processing_retry=timedelta(seconds=10),
        unposted_lifetime=timedelta(hours=24),
        accepted_statuses=(200, 201),
        docs=(_VIDEOS.split(" ", 1)[0], _IMAGES.split(" ", 1)[0]),
    ),
    adapter_class="LinkedInAdapter",
    connector_class="LinkedInConnector",
    adapter_settings={
        "version": "linkedin_version",
        "client_id": "linkedin_client_id",
        "client_secret": "linkedin_client_secret",
    },
    oauth_apps={"oauth2": ("linkedin_client_id", "linkedin_client_secret")},
)
