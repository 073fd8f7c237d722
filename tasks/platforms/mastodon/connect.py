"""Connecting a Mastodon account. Every instance is its own authorization server, so the app is
registered on the instance first (`POST /api/v1/apps`, docs.joinmastodon.org/methods/apps/
#create: `client_name`, `redirect_uris`, `scopes` → `client_id`, `client_secret`), once per
instance and redirect URI (the use case caches it), then the authorization code flow runs on the
instance (docs.joinmastodon.org/methods/oauth/: `/oauth/authorize` with PKCE S256,
`/oauth/token` whose answer carries `scope`), and `GET /api/v1/accounts/verify_credentials`
(docs.joinmastodon.org/methods/accounts/#verify_credentials) says who the user is.

The instance is the tenant's choice, so its URL goes through the egress guard before anything
is sent to it (`tasks/platforms/servers.py`), names resolved included."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from tasks.egress import MediaPolicy
from tasks.platforms.connecting import (
    AuthorizationFailedError,
    CodeExchange,
    NewAccount,
    OAuthClient,
    OAuthConnector,
    granted_from_answer,
)
from tasks.platforms.servers import check_server_addresses, parse_server_url
from tasks.platforms.specs import LoginSpec

#: The app's name as the instance shows it to the user on its authorization page.
CLIENT_NAME = "TendSocial"


class MastodonConnector(OAuthConnector):
    platform: ClassVar[str] = "mastodon"
    #: The app is registered per instance (see the module doc), not read from settings.
    registers_clients: ClassVar[bool] = True

    def __init__(self, *, policy: MediaPolicy, **options: Any) -> None:
        super().__init__(**options)
        self.policy = policy

    async def checked_server(self, server: str) -> str:
        """The instance's normalised URL, after the egress guard (`ServerUrlError` if not)."""
        normalized = parse_server_url(server, policy=self.policy)
        await check_server_addresses(normalized, policy=self.policy)
        return normalized

    async def register_client(
        self, *, login: LoginSpec, server: str, redirect_uri: str
    ) -> OAuthClient:
        answer = await self.call(
            "POST",
            f"{server}/api/v1/apps",
            what="the app registration",
            form={
                "client_name": CLIENT_NAME,
                "redirect_uris": redirect_uri,
                "scopes": " ".join(login.requested_scopes),
            },
        )
        client_id, secret = answer.get("client_id"), answer.get("client_secret")
        if not client_id or not secret:
            raise AuthorizationFailedError("the Mastodon instance registered no app")
        return OAuthClient(str(client_id), str(secret))

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        scope = " ".join(grant.login.requested_scopes)
        answer = await self.code_grant(grant, extra={"scope": scope})
        return await self.accounts(grant, answer)

    async def accounts(self, grant: CodeExchange, answer: dict[str, Any]) -> list[NewAccount]:
        token = str(answer.get("access_token") or "")
        if not token or grant.server is None:
            raise AuthorizationFailedError("the Mastodon instance answered without a token")
        me = await self.call(
            "GET",
            f"{grant.server}/api/v1/accounts/verify_credentials",
            what="the account look-up",
            token=token,
        )
        if not me.get("id"):
            raise AuthorizationFailedError("the Mastodon instance did not say who the user is")
        host = httpx.URL(grant.server).host
        return [
            NewAccount(
                external_id=str(me["id"]),
                handle=f"{me.get('username') or me['id']}@{host}",
                access_token=token,
                base_url=grant.server,
                granted_scopes=granted_from_answer(answer.get("scope")),
            )
        ]
