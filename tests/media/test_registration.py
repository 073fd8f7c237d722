"""Registration: `POST /api/media-assets` refuses what can never be fetched (422 naming `url`),
and the per-platform caps the scheduler will check `sizeBytes` against."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import URL

from dispatch.app import create_app
from models.database import sync_session
from tasks.administration import create_company
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.egress import (
    MEDIA_ERROR_MESSAGES,
    MediaFetchError,
    MediaPolicy,
    MediaUrlError,
    parse_media_url,
)
from tasks.media import MediaLimits, check_media_against_platform, platform_media_caps
from tasks.platforms.registry import PLATFORMS
from tests.support import clients
from tests.support.servers import serve_in_thread
from tests.support.settings import make_settings

BROKEN = [
    "http://xn--/a.png",  # an empty Punycode label (once crashed the parser)
    "https://xn--a.com/a.png",  # Punycode that decodes to a forbidden code point
    "https://xn--ls8h.xn--/a.png",
    "http://[::1/x.png",  # unclosed IPv6 literal
    "https://user:pass@cdn.example/a.png",
    "https://@cdn.example/a.png",
    "ftp://cdn.example/a.png",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "https:///a.png",
    "https://cdn.example:0/a.png",
    "https://cdn.example:70000/a.png",
    "https://cdn_example.com/a.png",
    "https://cdn%2eexample/a.png",
    "https://-cdn.example/a.png",
    "https://cdn.example/a b.png",
    "https://cdn.123/a.png",
]
REFUSED = [
    "https://127.0.0.1/a.png",
    "https://2130706433/a.png",
    "https://0x7f.1/a.png",
    "https://[::1]/a.png",
    "https://[::ffff:10.0.0.1]/a.png",
    "https://169.254.169.254/a.png",
    "https://metadata.google.internal/a.png",
    "https://localhost/a.png",
    "https://192.168.1.10/a.png",
]


@pytest.mark.parametrize("url", BROKEN)
def test_broken_urls_are_refused_with_a_stable_code(url: str) -> None:
    with pytest.raises(MediaUrlError) as caught:
        parse_media_url(url, policy=MediaPolicy())
    assert caught.value.code == "media_bad_url"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", REFUSED)
def test_refused_literals_and_names_are_refused_at_registration(url: str) -> None:
    with pytest.raises(MediaUrlError) as caught:
        parse_media_url(url, policy=MediaPolicy())
    assert caught.value.code == "media_refused_address"


def test_plain_http_needs_the_local_development_opt_in() -> None:
    with pytest.raises(MediaUrlError) as caught:
        parse_media_url("http://cdn.example/a.png", policy=MediaPolicy())
    assert caught.value.code == "media_insecure_url"
    local = MediaPolicy(allow_http=True)
    assert parse_media_url("http://cdn.example/a.png", policy=local) == "http://cdn.example/a.png"


def test_good_urls_are_normalised() -> None:
    policy = MediaPolicy()
    assert parse_media_url("https://CDN.example/A.png#x", policy=policy) == (
        "https://cdn.example/A.png"
    )
    assert parse_media_url("https://bücher.de/a.png?sig=1", policy=policy) == (
        "https://xn--bcher-kva.de/a.png?sig=1"
    )
    assert parse_media_url("https://8.8.8.8/a.png", policy=policy) == "https://8.8.8.8/a.png"


# --------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def api_url(database_url: URL) -> Iterator[str]:
    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9",
        WEBHOOK_SECRET="media-registration-test-secret-0123456789",
        MEDIA_ALLOW_PRIVATE_ADDRESSES=False,  # production's default
    )
    with serve_in_thread(create_app(settings=settings, queue=InMemoryTaskQueue())) as base_url:
        yield base_url


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    with sync_session() as session:
        company = create_company(session, name="Media Co")
    headers = {"Authorization": f"Bearer {company.api_key}"}
    with clients.client(base_url=api_url, headers=headers, timeout=30) as http:
        yield http


@pytest.mark.parametrize("url", ["http://xn--/a.png", "http://[::1/x.png", *REFUSED[:4]])
def test_the_api_answers_422_naming_url(client: httpx.Client, url: str) -> None:
    response = client.post("/api/media-assets", json={"url": url, "mimeType": "image/png"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "url"
    assert error["code"] in MEDIA_ERROR_MESSAGES
    assert error["message"] == MEDIA_ERROR_MESSAGES[error["code"]]


def test_the_api_records_the_normalised_url_type_and_size(client: httpx.Client) -> None:
    response = client.post(
        "/api/media-assets",
        json={"url": "https://bücher.de/a.png", "mimeType": "image/png", "sizeBytes": 1234},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["url"] == "https://xn--bcher-kva.de/a.png"
    assert (body["mimeType"], body["sizeBytes"]) == ("image/png", 1234)


# --------------------------------------------------------------------------- caps
def test_every_platform_has_cited_caps() -> None:
    for platform in PLATFORMS:
        kinds = platform_media_caps(platform)
        assert "image" in kinds and "video" in kinds, platform
        for kind, cap in kinds.items():
            assert cap.source.startswith(("https://", "bluesky-social/")), (platform, kind)
            assert cap.mime_types, (platform, kind)


@pytest.mark.parametrize(
    ("platform", "mime_type", "size", "problem"),
    [
        ("x", "image/jpeg", 5_000_000, None),
        ("x", "image/jpeg", 5_000_001, "x accepts image media up to 5 MB"),
        ("x", "image/gif", 15_000_000, None),
        ("x", "video/mp4", 512_000_001, "x accepts video media up to 512 MB"),
        ("bluesky", "image/png", 2_000_001, "bluesky accepts image media up to 2 MB"),
        ("bluesky", "video/quicktime", 10, "bluesky accepts video media as video/mp4, not "),
        ("mastodon", "image/png", 16 * 2**20, None),
        ("mastodon", "image/png", 16 * 2**20 + 1, "mastodon accepts image media up to 16 MiB"),
        ("linkedin", "image/png", 10**9, None),  # LinkedIn documents pixels, not bytes
        ("instagram", "image/gif", 10, "instagram does not accept image/gif"),
        ("instagram", "image/png", 10, "instagram accepts image media as image/jpeg, not "),
        ("threads", "video/mp4", None, None),  # size unknown: the fetcher's cap decides later
        ("x", "image/jpg", 10, None),  # alias of image/jpeg
        ("x", "application/pdf", 10, "x does not accept application/pdf"),
    ],
)
def test_check_media_against_platform(
    platform: str, mime_type: str, size: int | None, problem: str | None
) -> None:
    found = check_media_against_platform(platform=platform, mime_type=mime_type, size_bytes=size)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


def test_buffered_limits_never_exceed_the_memory_ceiling() -> None:
    assert MediaLimits.for_platform("x", "video/mp4").max_bytes == 50_000_000
    assert MediaLimits.for_platform("x", "image/png").max_bytes == 5_000_000
    assert MediaLimits.for_platform("x", "video/mp4", buffered=False).max_bytes == 512_000_000
    with pytest.raises(MediaFetchError) as caught:
        MediaLimits.for_platform("instagram", "image/gif")
    assert caught.value.code == "media_bad_type"
