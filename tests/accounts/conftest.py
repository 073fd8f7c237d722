"""Connecting accounts over real HTTP: the app with the sandbox platforms behind it and an OAuth
app configured for every platform (`connect_stack`), so the whole flow runs: the API's connect,
the sandbox's authorize step, the API's callback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sandbox import SandboxHandle, sandbox_platforms
from tests.support.stacks import PublishStack
from tests.support.stacks import publish_stack as running_publish_stack
from tests.support.tenants import Tenant, make_company

#: Our app at each platform, as the settings name it (`<PLATFORM>_CLIENT_ID`/`_APP_ID`...).
CLIENTS: dict[str, tuple[str, str]] = {
    "linkedin": ("li-client", "li-secret"),
    "x": ("x-client", "x-secret"),
    "instagram": ("ig-app", "ig-secret"),
    "facebook": ("fb-app", "fb-secret"),
    "threads": ("th-app", "th-secret"),
}
REDIRECT_URI = "https://app.tendsocial.example/connect/callback"


@pytest.fixture(scope="session")
def connect_stack(database_url: object, sandbox: SandboxHandle) -> Iterator[PublishStack]:
    platforms = sandbox_platforms(sandbox, timeout=5).model_copy(
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
    with running_publish_stack(sandbox, platforms=platforms) as stack:
        yield stack


@pytest.fixture
def company(database_url: object) -> Tenant:
    return make_company(platforms=())
