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

from tasks.platforms.specs import Endpoint, LoginSpec, PlatformSpec, RefreshPolicy

DOCS = (
    "https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code",
    "https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/user-access-token",
    "https://docs.x.com/x-api/media/upload-media",
)

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
)
