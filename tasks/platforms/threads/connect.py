"""Connecting a Threads profile (developers.facebook.com/docs/threads/get-started/
get-access-tokens-and-permissions): the code is POSTed as a form (`client_id`, `client_secret`,
`code`, `grant_type=authorization_code`, `redirect_uri`) to `graph.threads.net/oauth/
access_token`, answering `{"access_token", "user_id"}`, a token good for an hour; it is
exchanged for a 60-day one, `GET graph.threads.net/access_token?grant_type=th_exchange_token
&client_secret&access_token` (…/threads/get-started/long-lived-tokens, answering `expires_in`);
`GET /v1.0/me?fields=id,username` says who the user is (…/threads/threads-profiles).

Granted scopes: None. Neither answer lists them, and the one documented reader, `GET /debug_token`
(…/threads/troubleshooting/debug-access-token), needs "a user access token from a Threads
tester" of the app besides the token inspected, which a connecting user's token is not.
"""

from __future__ import annotations

from typing import ClassVar

from tasks.platforms.connecting import (
    CodeExchange,
    NewAccount,
    OAuthConnector,
    long_lived_account,
)
from tasks.platforms.threads.adapter import THREADS_VERSION


class ThreadsConnector(OAuthConnector):
    platform: ClassVar[str] = "threads"

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        answer = await self.code_grant(grant)
        host = self.base_urls["threads"].rstrip("/")
        account = await long_lived_account(
            self,
            grant,
            short_lived=str(answer.get("access_token") or ""),
            grant_type="th_exchange_token",
            profile_url=f"{host}/{THREADS_VERSION}/me",
            fields="id,username",
            id_fields=("id",),
            granted_scopes=None,
        )
        return [account]
