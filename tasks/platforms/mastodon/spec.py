"""Mastodon's facts (see `tasks/platforms/specs.py`).

Every instance is its own authorization server: an app is registered once per instance with
`POST /api/v1/apps` (docs.joinmastodon.org/methods/apps/#create), then the authorization code
flow runs against the instance's `/oauth/authorize` and `/oauth/token`, whose answer carries
`scope` (docs.joinmastodon.org/methods/oauth/); PKCE S256 is accepted since 4.3 (same page).
Scopes (docs.joinmastodon.org/api/oauth-scopes/): `write:statuses`, `write:media`,
`read:accounts` (verify_credentials), `read:statuses` (reading posts back for metrics). Tokens
do not expire; a revoked one needs the user.
"""

from tasks.platforms.specs import Endpoint, LoginSpec, PlatformSpec

DOCS = (
    "https://docs.joinmastodon.org/methods/apps/#create",
    "https://docs.joinmastodon.org/methods/oauth/",
    "https://docs.joinmastodon.org/api/oauth-scopes/",
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
)
