"""Connecting a Bluesky account: a handle and an app password, no browser step.

The handle resolves to a DID (`com.atproto.identity.resolveHandle`, docs.bsky.app/docs/api/
com-atproto-identity-resolve-handle, asked of the configured Bluesky service), the DID document
names the account's PDS (atproto.com/specs/did: the `#atproto_pds` service; `did:plc` documents
come from the PLC directory, `did:web` ones from `https://<host>/.well-known/did.json`), and
`com.atproto.server.createSession` on that PDS (docs.bsky.app/docs/api/
com-atproto-server-create-session) answers the session's `accessJwt` and `refreshJwt`, which are
what is stored: the app password is used for this one call and never kept.

The PDS and a `did:web` host are the tenant's choice: both go through the egress guard
(`tasks/platforms/servers.py`), names resolved included, before anything is sent to them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tasks.egress import MediaPolicy
from tasks.platforms.bluesky.adapter import jwt_expiry, pds_of_document
from tasks.platforms.connecting import AuthorizationFailedError, NewAccount, OAuthConnector
from tasks.platforms.servers import check_server_addresses, parse_server_url


class BlueskyConnector(OAuthConnector):
    platform: ClassVar[str] = "bluesky"

    def __init__(self, *, policy: MediaPolicy, plc_directory_url: str, **options: Any) -> None:
        super().__init__(**options)
        self.policy = policy
        self.plc_directory_url = plc_directory_url.rstrip("/")

    async def checked_server(self, server: str) -> str:
        normalized = parse_server_url(server, policy=self.policy)
        await check_server_addresses(normalized, policy=self.policy)
        return normalized

    async def connect_with_password(self, *, handle: str, app_password: str) -> list[NewAccount]:
        """The account behind `handle`, signed in with its app password."""
        handle = handle.strip().removeprefix("@").lower()
        resolved = await self.call(
            "GET",
            f"{self.base_urls['bluesky']}/xrpc/com.atproto.identity.resolveHandle",
            params={"handle": handle},
            what="the handle",
        )
        did = str(resolved.get("did") or "")
        if not did.startswith("did:"):
            raise AuthorizationFailedError(f"Bluesky could not resolve the handle {handle}")
        pds = await self.checked_server(await self.pds_of(did))
        session = await self.call(
            "POST",
            f"{pds}/xrpc/com.atproto.server.createSession",
            json_body={"identifier": handle, "password": app_password},
            what="the handle or app password",
        )
        access, refresh = session.get("accessJwt"), session.get("refreshJwt")
        if session.get("did") != did or not access or not refresh:
            raise AuthorizationFailedError("the PDS answered a session for another account")
        return [
            NewAccount(
                external_id=did,
                handle=str(session.get("handle") or handle),
                access_token=str(access),
                refresh_token=str(refresh),
                token_expires_at=jwt_expiry(str(access)),
                base_url=pds,
            )
        ]

    async def pds_of(self, did: str) -> str:
        """The PDS endpoint named by the DID's document."""
        if did.startswith("did:plc:"):
            url = f"{self.plc_directory_url}/{did}"
        elif did.startswith("did:web:"):
            host = await self.checked_server(f"https://{did.removeprefix('did:web:')}")
            url = f"{host}/.well-known/did.json"
        else:
            raise AuthorizationFailedError(f"unsupported DID method: {did.split(':')[1]}")
        document = await self.call("GET", url, what="the DID document")
        endpoint = pds_of_document(document)
        if endpoint is None:
            raise AuthorizationFailedError("the account's DID document names no PDS")
        return endpoint
