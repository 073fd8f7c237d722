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

from datetime import timedelta

from tasks.platforms.specs import Endpoint, LoginSpec, PlatformSpec, RefreshPolicy

DOCS = (
    "https://developers.facebook.com/docs/threads/get-started/get-access-tokens-and-permissions",
    "https://developers.facebook.com/docs/threads/get-started/long-lived-tokens",
    "https://developers.facebook.com/docs/threads/get-started",
    "https://developers.facebook.com/docs/threads/troubleshooting/debug-access-token",
    "https://developers.facebook.com/docs/threads/threads-profiles",
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
)
