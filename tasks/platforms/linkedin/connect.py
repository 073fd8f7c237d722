"""Connecting a LinkedIn member: the 3-legged authorization code flow (learn.microsoft.com/
en-us/linkedin/shared/authentication/authorization-code-flow), whose token answer carries
`expires_in` (60 days), `scope`, and a `refresh_token` only for partner apps
(…/programmatic-refresh-tokens). Who the member is: OpenID Connect's `GET /v2/userinfo`, `sub`
(learn.microsoft.com/en-us/linkedin/consumer/integrations/self-serve/sign-in-with-linkedin-v2);
the adapter posts as `urn:li:person:{sub}`."""

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


class LinkedInConnector(OAuthConnector):
    platform: ClassVar[str] = "linkedin"

    async def accounts(self, grant: CodeExchange, answer: dict[str, Any]) -> list[NewAccount]:
        token = answered_token(answer, refusal="LinkedIn answered the code without an access token")
        me = await self.call(
            "GET",
            f"{self.base_urls['linkedin']}/v2/userinfo",
            what="the member look-up",
            token=token,
        )
        if not me.get("sub"):
            raise AuthorizationFailedError("LinkedIn did not say who the member is (userinfo)")
        name = str(me.get("name") or "").strip()
        return [
            answered_account(
                answer,
                token=token,
                external_id=f"urn:li:person:{me['sub']}",
                handle=name or str(me["sub"]),
            )
        ]
