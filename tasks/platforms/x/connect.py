"""Connecting an X account: OAuth 2.0 authorization code with PKCE (docs.x.com/resources/
fundamentals/authentication/oauth-2-0/authorization-code). The token answer carries `scope`,
the scopes granted; `GET /2/users/me` (docs.x.com/x-api/users/user-lookup-me) says who the user
is. A confidential client authenticates with HTTP Basic, a public one sends `client_id` in the
form ("Confidential clients … Basic authentication", same page)."""

from __future__ import annotations

from typing import Any, ClassVar

from tasks.platforms.connecting import (
    AuthorizationFailedError,
    CodeExchange,
    NewAccount,
    OAuthConnector,
    answered_account,
    answered_token,
)


class XConnector(OAuthConnector):
    platform: ClassVar[str] = "x"

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        answer = await self.code_grant(grant, basic_auth=True)
        return await self.accounts(grant, answer)

    async def accounts(self, grant: CodeExchange, answer: dict[str, Any]) -> list[NewAccount]:
        token = answered_token(answer, refusal="X answered the code without an access token")
        me = await self.call(
            "GET", f"{self.base_urls['x']}/2/users/me", what="the user look-up", token=token
        )
        user = me.get("data") if isinstance(me.get("data"), dict) else {}
        if not user.get("id"):
            raise AuthorizationFailedError("X did not say who the user is (GET /2/users/me)")
        return [
            answered_account(
                answer,
                token=token,
                external_id=str(user["id"]),
                handle=str(user.get("username") or user["id"]),
            )
        ]
