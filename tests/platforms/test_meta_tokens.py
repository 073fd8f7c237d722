"""Meta's token rules as the sandbox enforces them (deployments/sandbox/graph_tokens.py, each
rule cited there), over HTTP and through the adapters, on the sandbox clock instead of sleeping:

- Instagram Login and Threads tokens refresh only "at least 24 hours old but has not expired",
  on their own host (`ig_refresh_token` on graph.instagram.com, `th_refresh_token` on
  graph.threads.net), and the refreshed token lives 60 days;
- an expired token is refused (190/463) on every call, refresh included;
- a token works on its login's host only (Instagram Login: graph.instagram.com; Facebook Login:
  graph.facebook.com), elsewhere 190 "Cannot parse access token";
- `fb_exchange_token` needs the app id and secret and never takes an expired token; Page tokens
  derived from a long-lived user token do not expire, so the Instagram adapter renews a
  Facebook Login user token by swapping it for the account's Page token (`me/accounts`), never
  by re-exchanging it;
- documented Graph errors can be injected per account and call, in Meta's envelope.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from models.settings import DEFAULT_GRAPH_VERSION
from tasks.platforms.base import AccountContext, NeedsReconnectError, PermanentError
from tests.platforms.helpers import sandbox_adapter, sandbox_http

V = DEFAULT_GRAPH_VERSION
DAY = 24 * 3600
#: platform → (grant type of its refresh, the API version, the account's list edge).
REFRESHING = {
    "instagram": ("ig_refresh_token", V, "media"),
    "threads": ("th_refresh_token", "v1.0", "threads"),
}


async def _list(
    http: httpx.AsyncClient, sandbox: Any, host: str, user: str, token: str
) -> httpx.Response:
    edge = "threads" if host == "threads" else "media"
    version = "v1.0" if host == "threads" else V
    return await http.get(
        f"{sandbox.url(host)}/{version}/{user}/{edge}", params={"access_token": token}
    )


async def _refresh(
    http: httpx.AsyncClient, sandbox: Any, platform: str, token: str
) -> httpx.Response:
    grant = REFRESHING[platform][0]
    return await http.get(
        f"{sandbox.url(platform)}/refresh_access_token",
        params={"grant_type": grant, "access_token": token},
    )


def _error(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]


@pytest.mark.parametrize("platform", sorted(REFRESHING))
async def test_refresh_only_once_24_hours_old(sandbox, http, platform: str) -> None:
    sandbox.add_account(
        platform,
        external_id="u1",
        handle="h",
        access_token="young",
        extra={"token_age_seconds": 23 * 3600},
    )
    assert _error(await _refresh(http, sandbox, platform, "young"))["code"] == 100
    sandbox.advance_clock(3600)  # now exactly 24 h old
    answer = await _refresh(http, sandbox, platform, "young")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer" and body["access_token"] != "young"
    assert 60 * DAY - 60 <= body["expires_in"] <= 60 * DAY  # "valid for 60 days"
    assert (await _list(http, sandbox, platform, "u1", body["access_token"])).status_code == 200
    # The new token is itself younger than a day: not refreshable yet.
    assert _error(await _refresh(http, sandbox, platform, body["access_token"]))["code"] == 100


@pytest.mark.parametrize("platform", sorted(REFRESHING))
async def test_an_expired_token_is_refused_and_cannot_be_refreshed(
    sandbox, http, platform: str
) -> None:
    sandbox.add_account(platform, external_id="u1", handle="h", access_token="old")
    assert (await _list(http, sandbox, platform, "u1", "old")).status_code == 200
    sandbox.advance_clock(59 * DAY + 60)  # registered 1 day old: 60 days are over
    error = _error(await _list(http, sandbox, platform, "u1", "old"))
    assert (error["code"], error["error_subcode"]) == (190, 463)
    assert "Session has expired" in error["message"]
    error = _error(await _refresh(http, sandbox, platform, "old"))
    assert (error["code"], error["error_subcode"]) == (190, 463)
    # Through the adapter: a refused refresh is a reconnect.
    async with sandbox_http(sandbox, timeout=5) as client:
        adapter = sandbox_adapter(sandbox, platform, client)
        account = AccountContext(account_id="a", external_id="u1", handle="h", access_token="old")
        with pytest.raises(NeedsReconnectError):
            await adapter.refresh_token(account=account)


async def test_a_young_token_refusal_leaves_the_account_alone(sandbox, http) -> None:
    """Refused because too young, not because it is dead: no reconnect."""
    sandbox.add_account(
        "threads",
        external_id="u1",
        handle="h",
        access_token="young",
        extra={"token_age_seconds": 3600},
    )
    adapter = sandbox_adapter(sandbox, "threads", http)
    account = AccountContext(account_id="a", external_id="u1", handle="h", access_token="young")
    with pytest.raises(PermanentError) as caught:
        await adapter.refresh_token(account=account)
    assert not isinstance(caught.value, NeedsReconnectError)
    assert "24 hours" in caught.value.message


async def test_tokens_work_on_their_own_host_only(sandbox, http) -> None:
    sandbox.add_account("instagram", external_id="ig-i", handle="i", access_token="ig-login")
    sandbox.add_account(
        "instagram",
        external_id="ig-f",
        handle="f",
        access_token="fb-user",
        extra={"login": "facebook"},
    )
    assert (await _list(http, sandbox, "instagram", "ig-i", "ig-login")).status_code == 200
    assert (await _list(http, sandbox, "facebook", "ig-f", "fb-user")).status_code == 200
    for host, user, token in (("facebook", "ig-i", "ig-login"), ("instagram", "ig-f", "fb-user")):
        error = _error(await _list(http, sandbox, host, user, token))
        assert error["code"] == 190 and "Cannot parse access token" in error["message"]
    # ig_refresh_token (graph.instagram.com) does not take a Facebook Login token.
    assert _error(await _refresh(http, sandbox, "instagram", "fb-user"))["code"] == 190


async def _exchange(http: httpx.AsyncClient, sandbox: Any, token: str, **extra: str):
    params = {"grant_type": "fb_exchange_token", "fb_exchange_token": token, **extra}
    return await http.get(f"{sandbox.url('facebook')}/{V}/oauth/access_token", params=params)


async def test_fb_exchange_token_does_not_extend_a_long_lived_user_token(sandbox, http) -> None:
    """Meta documents only the short-to-long exchange; a long-lived token exchanged again keeps
    its expiry (FB-rex), which is why the adapter swaps to the Page token instead."""
    sandbox.add_account(
        "instagram",
        external_id="ig-f",
        handle="f",
        access_token="fb-user",
        extra={"login": "facebook", "token_age_seconds": 50 * DAY},
    )
    sandbox.add_account("instagram", external_id="ig-i", handle="i", access_token="ig-login")
    app = {"client_id": "app", "client_secret": "secret"}
    assert _error(await _exchange(http, sandbox, "fb-user"))["code"] == 101  # no app credentials
    answer = await _exchange(http, sandbox, "fb-user", **app)
    assert answer.status_code == 200, answer.text
    fresh = answer.json()
    # 50 of its 60 days gone: the new token has the old one's 10 days left, not 60.
    assert fresh["token_type"] == "bearer" and 9 * DAY < fresh["expires_in"] <= 10 * DAY
    assert _error(await _exchange(http, sandbox, "ig-login", **app))["code"] == 190
    sandbox.advance_clock(11 * DAY)  # both have expired
    error = _error(await _exchange(http, sandbox, "fb-user", **app))
    assert (error["code"], error["error_subcode"]) == (190, 463)
    listed = await _list(http, sandbox, "facebook", "ig-f", fresh["access_token"])
    assert listed.status_code != 200


async def test_page_token_of_a_long_lived_user_token_never_expires(sandbox, http) -> None:
    sandbox.add_account(
        "instagram",
        external_id="ig-f",
        handle="f",
        access_token="fb-user",
        extra={"login": "facebook", "page_id": "p1"},
    )
    answer = await http.get(
        f"{sandbox.url('facebook')}/{V}/me/accounts", params={"access_token": "fb-user"}
    )
    assert answer.status_code == 200, answer.text
    (page,) = answer.json()["data"]
    assert page["id"] == "p1" and page["instagram_business_account"] == {"id": "ig-f"}
    sandbox.advance_clock(70 * DAY)
    assert _error(await _list(http, sandbox, "facebook", "ig-f", "fb-user"))["error_subcode"] == 463
    assert (await _list(http, sandbox, "facebook", "ig-f", page["access_token"])).status_code == 200


async def test_a_facebook_login_refresh_swaps_the_user_token_for_the_page_token(
    sandbox, counted_http
) -> None:
    http, counter = counted_http
    sandbox.add_account(
        "instagram",
        external_id="ig-f",
        handle="f",
        access_token="fb-user",
        extra={"login": "facebook", "page_id": "p1", "token_age_seconds": 57 * DAY},
    )
    adapter = sandbox_adapter(sandbox, "instagram", http)
    account = AccountContext(
        account_id="a",
        external_id="ig-f",
        handle="f",
        access_token="fb-user",
        base_url=sandbox.url("facebook"),  # the account's login: Facebook's host
    )
    tokens = await adapter.refresh_token(account=account)
    assert tokens.expires_at is None and tokens.refresh_token is None
    assert tokens.access_token != "fb-user"
    assert counter.count("/me/accounts") == 1
    assert not counter.count("/oauth/access_token")  # no re-exchange of the long-lived token
    sandbox.advance_clock(70 * DAY)  # the user token is long dead, the Page token is not
    assert _error(await _list(http, sandbox, "facebook", "ig-f", "fb-user"))["error_subcode"] == 463
    assert (await _list(http, sandbox, "facebook", "ig-f", tokens.access_token)).status_code == 200

    # A login whose Pages are linked to another Instagram account has no token for this one.
    sandbox.add_account(
        "instagram",
        external_id="ig-g",
        handle="g",
        access_token="fb-user-g",
        extra={"login": "facebook"},
    )
    with pytest.raises(NeedsReconnectError, match="no Facebook Page"):
        await adapter.refresh_token(
            account=replace(account, external_id="ig-other", access_token="fb-user-g")
        )


async def test_injected_graph_error_has_the_documented_envelope(sandbox, http) -> None:
    sandbox.add_account("instagram", external_id="a1", handle="a", access_token="t1")
    sandbox.add_account("instagram", external_id="a2", handle="b", access_token="t2")
    sandbox.inject_graph_error("instagram", "36000/2207004", account="a1", operation="lookup")
    assert (await _list(http, sandbox, "instagram", "a2", "t2")).status_code == 200  # not a2's
    answer = await _list(http, sandbox, "instagram", "a1", "t1")
    error = _error(answer)
    # The sample response of the Instagram error codes page, field for field and in order.
    assert list(error) == [
        "message",
        "type",
        "code",
        "error_subcode",
        "is_transient",
        "error_user_title",
        "error_user_msg",
        "fbtrace_id",
    ]
    assert {k: v for k, v in error.items() if k != "fbtrace_id"} == {
        "message": "The image size is too large.",
        "type": "OAuthException",
        "code": 36000,
        "error_subcode": 2207004,
        "is_transient": False,
        "error_user_title": "Image size too large",
        "error_user_msg": "The image is too large to download. It should be less than 8 MiB.",
    }
    assert (await _list(http, sandbox, "instagram", "a1", "t1")).status_code == 200  # used up
    bad = await http.post(
        f"{sandbox.base_url}/_sandbox/graph/errors",
        json={"platform": "instagram", "error": "no-such-error"},
    )
    assert bad.status_code == 422
