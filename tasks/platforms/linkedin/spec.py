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

from datetime import timedelta

from tasks.platforms.specs import Endpoint, LoginSpec, PlatformSpec, RefreshPolicy

DOCS = (
    "https://learn.microsoft.com/en-us/linkedin/shared/authentication/authorization-code-flow",
    "https://learn.microsoft.com/en-us/linkedin/consumer/integrations/self-serve/sign-in-with-linkedin-v2",
    "https://learn.microsoft.com/en-us/linkedin/consumer/integrations/self-serve/share-on-linkedin",
    "https://learn.microsoft.com/en-us/linkedin/shared/authentication/programmatic-refresh-tokens",
)

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
)
