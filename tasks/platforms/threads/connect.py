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
    AuthorizationFailedError,
    CodeExchange,
    NewAccount,
    OAuthConnector,
    expires_at,
)
from tasks.platforms.threads.adapter import THREADS_VERSION


class ThreadsConnector(OAuthConnector):
    platform: ClassVar[str] = "threads"

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        answer = await self.code_grant(grant)
        short_lived = str(answer.get("access_token") or "")
        if not short_lived:
            raise AuthorizationFailedError("Threads answered the code without an access token")
        host = self.base_urls["threads"].rstrip("/")
        extended = await self.call(
            "GET",
            f"{host}/access_token",
            what="the long-lived token exchange",
            params={
                "grant_type": "th_exchange_token",
                "client_secret": grant.client.client_secret,
                "access_token": short_lived,
            },
        )
        token = str(extended.get("access_token") or "")
        if not token:
            # The short-lived token lives an hour and cannot be refreshed: never store it.
            raise AuthorizationFailedError(
                "Threads did not extend the access token (th_exchange_token)"
            )
        me = await self.call(
            "GET",
            f"{host}/{THREADS_VERSION}/me",
            what="the profile look-up",
            params={"fields": "id,username"},
            token=token,
        )
        user_id = str(me.get("id") or answer.get("user_id") or "")
        if not user_id:
            raise AuthorizationFailedError("Threads did not say who the user is (GET /me)")
        return [
            NewAccount(
                external_id=user_id,
                handle=str(me.get("username") or user_id),
                access_token=token,
                token_expires_at=expires_at(extended.get("expires_in")),
                base_url=None,
                granted_scopes=None,
            )
        ]
