"""Connecting an Instagram professional account, through either of its two logins.

Instagram Login (developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-
login/business-login): the code is POSTed as a form to `api.instagram.com/oauth/access_token`;
the answer holds the short-lived token, the user id and the granted `permissions` — the guide
shows them wrapped, `{"data": [{"access_token", "user_id", "permissions": "a,b"}]}`, the older
reference (…/instagram-platform/reference/oauth-access-token) flat, so both are read. The token
is exchanged for a 60-day one, `GET graph.instagram.com/access_token?grant_type=
ig_exchange_token&client_secret&access_token` (…/instagram-platform/reference/access_token);
`GET graph.instagram.com/{version}/me?fields=user_id,username` gives "your app user's Instagram
professional account user ID and username" (…/instagram-api-with-instagram-login/get-started),
the id the adapter publishes as.

Facebook Login (developers.facebook.com/docs/instagram-platform/instagram-api-with-facebook-
login/get-started): Facebook's code exchange and long-lived user token
(`tasks/platforms/facebook/connect.py`), then the Pages with their linked
`instagram_business_account`; one account per linked Instagram account, holding the Page's
token, which does not expire (facebook-login/guides/access-tokens/get-long-lived, "Get a
Long-lived Page Access Token"). Its `base_url` is the Facebook Graph host: that is how the
adapter tells the account uses Facebook Login (`InstagramAdapter.login_of`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tasks.platforms.connecting import (
    AuthorizationFailedError,
    CodeExchange,
    NewAccount,
    OAuthConnector,
    granted_from_answer,
    long_lived_account,
)
from tasks.platforms.facebook.connect import facebook_login

#: `me/accounts` fields for Instagram through Facebook Login: the Page and its linked account.
PAGE_FIELDS = "id,name,access_token,instagram_business_account{id,username}"


def token_entry(answer: dict[str, Any]) -> dict[str, Any]:
    """The token answer's one entry, wrapped in `data` (business-login guide) or flat."""
    data = answer.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return answer


class InstagramConnector(OAuthConnector):
    platform: ClassVar[str] = "instagram"

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        if grant.login.name == "facebook":
            return await self._facebook_login(grant)
        return await self._instagram_login(grant)

    async def _instagram_login(self, grant: CodeExchange) -> list[NewAccount]:
        entry = token_entry(await self.code_grant(grant))
        host = self.base_urls["instagram"].rstrip("/")
        account = await long_lived_account(
            self,
            grant,
            short_lived=str(entry.get("access_token") or ""),
            grant_type="ig_exchange_token",
            profile_url=f"{host}/{self.graph_version}/me",
            fields="user_id,username",
            id_fields=("user_id", "id"),
            granted_scopes=granted_from_answer(entry.get("permissions")),
        )
        return [account]

    async def _facebook_login(self, grant: CodeExchange) -> list[NewAccount]:
        login = await facebook_login(self, grant, page_fields=PAGE_FIELDS)
        accounts: dict[str, NewAccount] = {}
        for page in login.pages:
            linked = page.get("instagram_business_account")
            if not isinstance(linked, dict) or not linked.get("id") or not page.get("access_token"):
                continue
            ig_id = str(linked["id"])
            accounts.setdefault(
                ig_id,
                NewAccount(
                    external_id=ig_id,
                    handle=str(linked.get("username") or ig_id),
                    access_token=str(page["access_token"]),
                    token_expires_at=None,
                    base_url=self.base_urls["facebook"].rstrip("/"),
                    granted_scopes=login.permissions,
                ),
            )
        if not accounts:
            raise AuthorizationFailedError(
                "none of the Facebook user's Pages granted to the app has an Instagram "
                "professional account linked"
            )
        return list(accounts.values())
