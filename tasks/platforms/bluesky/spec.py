"""Bluesky's facts (see `tasks/platforms/specs.py`).

No browser step: the user gives a handle and an app password. The handle resolves to a DID
(atproto.com/specs/handle), the DID document names the account's PDS (atproto.com/specs/did,
service `#atproto_pds`), and `com.atproto.server.createSession` on that PDS answers an
`accessJwt` and a `refreshJwt` (docs.bsky.app/docs/api/com-atproto-server-create-session). The
app password is never stored. The access JWT lives minutes to hours (its `exp`) and is renewed
with `com.atproto.server.refreshSession`, whose refresh JWT is single-use.
"""

from datetime import timedelta

from tasks.platforms.specs import LoginSpec, PlatformSpec, RefreshPolicy

DOCS = (
    "https://atproto.com/specs/handle",
    "https://atproto.com/specs/did",
    "https://docs.bsky.app/docs/api/com-atproto-server-create-session",
    "https://docs.bsky.app/docs/api/com-atproto-server-refresh-session",
)

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
)
