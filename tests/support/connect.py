"""Connecting accounts in tests: our apps' credentials at each sandbox platform, the platform
settings that carry them, and the user's trip through the sandbox's authorize step."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from models.settings import PlatformSettings
from tests.support import clients
from tests.support.sandbox import SandboxHandle, sandbox_platforms

#: Our app at each platform (`<PLATFORM>_CLIENT_ID`/`_SECRET`, `<PLATFORM>_APP_ID`/`_SECRET`).
#: Threads is left unconfigured: connecting it answers 409 platform_not_configured.
CLIENTS: dict[str, tuple[str, str]] = {
    "linkedin": ("li-client", "li-secret"),
    "x": ("x-client", "x-secret"),
    "instagram": ("ig-app", "ig-secret"),
    "facebook": ("fb-app", "fb-secret"),
}
#: The front end's callback.
REDIRECT_URI = "https://app.tendsocial.example/connect/callback"


def connect_platforms(sandbox: SandboxHandle, *, timeout: float = 5) -> PlatformSettings:
    """Every platform at the sandbox, with our apps configured."""
    return sandbox_platforms(sandbox, timeout=timeout).model_copy(
        update={
            "linkedin_client_id": CLIENTS["linkedin"][0],
            "linkedin_client_secret": CLIENTS["linkedin"][1],
            "x_client_id": CLIENTS["x"][0],
            "x_client_secret": CLIENTS["x"][1],
            "instagram_app_id": CLIENTS["instagram"][0],
            "instagram_app_secret": CLIENTS["instagram"][1],
            "facebook_app_id": CLIENTS["facebook"][0],
            "facebook_app_secret": CLIENTS["facebook"][1],
            "bluesky_plc_directory_url": f"{sandbox.url('bluesky')}/plc",
        }
    )


def register_client(
    sandbox: SandboxHandle, platform: str, *, programmatic_refresh: bool = False
) -> None:
    """Our app registered at the sandbox platform with the front end's redirect URI."""
    client_id, secret = CLIENTS[platform]
    sandbox.add_oauth_client(
        platform,
        client_id=client_id,
        client_secret=secret,
        redirect_uris=[REDIRECT_URI],
        programmatic_refresh=programmatic_refresh,
    )


def approve(authorization_url: str, *, state: str, redirect_uri: str = REDIRECT_URI) -> str:
    """The user at the platform's authorization page, approving: the code the platform sends
    back to the redirect URI (checked to carry our state)."""
    with clients.client(timeout=10, follow_redirects=False) as http:
        answer = http.get(authorization_url)
    assert answer.status_code in (302, 303), answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query.get("state") == state, query
    assert "code" in query, query
    return query["code"]
