"""The sandbox platforms (`deployments/sandbox/`) as a real server, and a handle on their control
API: the outside world for adapter tests, publishing tests, end-to-end tests and benches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deployments.sandbox.app import create_sandbox_app
from models.settings import PlatformSettings
from tasks.platforms.registry import PLATFORMS
from tests.support import clients
from tests.support.servers import serve_in_thread


class SandboxHandle:
    """Talks to the running sandbox's control API over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._control = clients.client(base_url=base_url, timeout=10)

    def url(self, platform: str) -> str:
        """The platform's base URL, e.g. `http://127.0.0.1:PORT/linkedin`."""
        return f"{self.base_url}/{platform}"

    def media_url(self, name: str = "pixel.jpg") -> str:
        return f"{self.base_url}/_sandbox/media/{name}"

    def set_processing(self, platform: str, seconds: float) -> None:
        """How long the platform's sandbox takes to process uploaded media (on its clock)."""
        answer = self._control.post(
            "/_sandbox/processing", json={"platform": platform, "seconds": seconds}
        )
        answer.raise_for_status()

    def media_fetches(self, name: str) -> int:
        """How often `media_url(name)` was fetched since the last reset."""
        answer = self._control.get("/_sandbox/media-fetches")
        answer.raise_for_status()
        return int(answer.json()["fetches"].get(name, 0))

    def reset(self) -> None:
        self._control.post("/_sandbox/reset", json={}).raise_for_status()

    def inject(
        self,
        platform: str,
        kind: str,
        *,
        count: int = 1,
        operation: str | None = None,
        retry_after_seconds: int | None = None,
        delay_seconds: float | None = None,
    ) -> None:
        body: dict[str, Any] = {"platform": platform, "kind": kind, "count": count}
        if operation is not None:
            body["operation"] = operation
        if retry_after_seconds is not None:
            body["retryAfterSeconds"] = retry_after_seconds
        if delay_seconds is not None:
            body["delaySeconds"] = delay_seconds
        self._control.post("/_sandbox/faults", json=body).raise_for_status()

    def inject_graph_error(
        self,
        platform: str,
        error: str,
        *,
        account: str | None = None,
        operation: str | None = None,
        count: int = 1,
        retry_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Answer the next Meta call(s) with a documented Graph error by name (`GRAPH_ERRORS`
        in deployments/sandbox/graph_errors.py, e.g. "-1/2207001", "190/463", "613"); returns the
        `error` object it will answer."""
        body: dict[str, Any] = {"platform": platform, "error": error, "count": count}
        if account is not None:
            body["account"] = account
        if operation is not None:
            body["operation"] = operation
        if retry_after_seconds is not None:
            body["retryAfterSeconds"] = retry_after_seconds
        answer = self._control.post("/_sandbox/graph/errors", json=body)
        answer.raise_for_status()
        return answer.json()["body"]["error"]

    def clear_faults(self) -> None:
        self._control.delete("/_sandbox/faults").raise_for_status()

    def posts(self, platform: str) -> list[dict[str, Any]]:
        answer = self._control.get("/_sandbox/posts", params={"platform": platform})
        answer.raise_for_status()
        return answer.json()["posts"]

    def add_account(
        self,
        platform: str,
        *,
        external_id: str,
        handle: str,
        access_token: str,
        refresh_token: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "platform": platform,
            "externalId": external_id,
            "handle": handle,
            "accessToken": access_token,
        }
        if refresh_token is not None:
            body["refreshToken"] = refresh_token
        if extra:
            body["extra"] = extra
        self._control.post("/_sandbox/accounts", json=body).raise_for_status()

    def add_oauth_client(
        self,
        platform: str,
        *,
        client_id: str,
        redirect_uris: list[str],
        client_secret: str | None = None,
        programmatic_refresh: bool = False,
        scopes: list[str] | None = None,
    ) -> None:
        """Register an OAuth client (app) at a sandbox platform (`POST /_sandbox/oauth/clients`);
        without `client_secret` it is a public client."""
        body: dict[str, Any] = {
            "platform": platform,
            "clientId": client_id,
            "redirectUris": redirect_uris,
            "programmaticRefresh": programmatic_refresh,
        }
        if client_secret is not None:
            body["clientSecret"] = client_secret
        if scopes is not None:
            body["scopes"] = scopes
        self._control.post("/_sandbox/oauth/clients", json=body).raise_for_status()

    def set_consent(
        self,
        platform: str,
        *,
        external_id: str,
        handle: str,
        grant_scopes: list[str] | None = None,
        deny: bool = False,
        pages: list[dict[str, Any]] | None = None,
        app_password: str | None = None,
    ) -> None:
        """Who approves the platform's next authorization requests (`POST /_sandbox/oauth/
        consent`): `grant_scopes` None grants everything asked; Facebook `pages` are
        `{"id", "name", "instagramBusinessAccount": {"id", "username"} | None}`."""
        body: dict[str, Any] = {
            "platform": platform,
            "externalId": external_id,
            "handle": handle,
            "grantScopes": grant_scopes,
            "deny": deny,
            "pages": pages or [],
        }
        if app_password is not None:
            body["appPassword"] = app_password
        self._control.post("/_sandbox/oauth/consent", json=body).raise_for_status()

    def advance_clock(self, seconds: float) -> None:
        self._control.post("/_sandbox/clock", json={"advanceSeconds": seconds}).raise_for_status()

    def close(self) -> None:
        self._control.close()


@contextmanager
def running_sandbox() -> Iterator[SandboxHandle]:
    """The sandbox under uvicorn in a thread of this process."""
    with serve_in_thread(create_sandbox_app()) as base_url:
        handle = SandboxHandle(base_url)
        try:
            yield handle
        finally:
            handle.close()


def sandbox_platforms(sandbox: SandboxHandle, *, timeout: float = 1.0) -> PlatformSettings:
    """Every platform's base URL pointed at the sandbox."""
    return PlatformSettings(
        **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
        bluesky_video_service_url=sandbox.url("bluesky-video"),
        platform_http_timeout_seconds=timeout,
    )
