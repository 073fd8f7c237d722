"""SSRF attempts with the local-development opt-in OFF: each is refused and the internal service
(127.0.0.1, counting its requests) never receives a byte.

The policy here is production's, except that the test media host 127.0.0.2 counts as public so
redirects can start from an allowed server (`public_only_policy`). There is no network beyond
loopback, so "a DNS name that resolves to loopback" is played by replacing `resolve_host`, the one
resolver the fetcher's connection backend calls.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

import tasks.egress
from models.settings import MediaSettings
from tasks.egress import MediaFetchError, MediaPolicy
from tasks.media import MediaLimits, fetch_media
from tests.media.helpers import PNG, PUBLIC_HOST, Served, public_only_policy

IMAGE = MediaLimits(max_bytes=5_000_000, mime_types=frozenset({"image/png", "image/jpeg"}))
REFUSED = {"media_refused_address", "media_bad_url"}


async def _refused(url: str, *, policy: MediaPolicy) -> MediaFetchError:
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media(url, policy=policy, limits=IMAGE)
    assert caught.value.code in REFUSED, caught.value.code
    return caught.value


def _internal_spellings(port: int) -> list[str]:
    """127.0.0.1:port written every way a resolver or a URL parser might accept."""
    return [
        f"http://127.0.0.1:{port}/secret",
        f"http://127.0.0.1.:{port}/secret",
        f"http://2130706433:{port}/secret",  # decimal
        f"http://0177.0.0.1:{port}/secret",  # octal
        f"http://017700000001:{port}/secret",  # octal, one number
        f"http://0x7f.0.0.1:{port}/secret",  # hex
        f"http://0x7f000001:{port}/secret",  # hex, one number
        f"http://127.1:{port}/secret",  # short form
        f"http://[::ffff:127.0.0.1]:{port}/secret",  # IPv4-mapped IPv6
        f"http://[::ffff:7f00:1]:{port}/secret",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/secret",
        f"http://[::127.0.0.1]:{port}/secret",  # IPv4-compatible IPv6
        f"http://[64:ff9b::7f00:1]:{port}/secret",  # NAT64
        f"http://[2002:7f00:1::]:{port}/secret",  # 6to4
        f"http://[::1]:{port}/secret",
        f"http://0.0.0.0:{port}/secret",  # "this host" reaches loopback on Linux
        f"http://localhost:{port}/secret",  # resolves to 127.0.0.1 for real
    ]


async def test_every_spelling_of_loopback_is_refused(internal: Served) -> None:
    port = int(internal.base_url.rsplit(":", 1)[1])
    for url in _internal_spellings(port):
        await _refused(url, policy=public_only_policy())
    assert internal.requests == []


async def test_without_any_opt_in_even_localhost_names_are_refused(internal: Served) -> None:
    port = int(internal.base_url.rsplit(":", 1)[1])
    for url in _internal_spellings(port):
        await _refused(url, policy=MediaPolicy(allow_http=True))
    assert internal.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254 in decimal
        "http://10.0.0.1/a.png",
        "http://172.16.5.4/a.png",
        "http://192.168.0.1/a.png",
        "http://100.64.0.1/a.png",  # CGNAT
        "http://[fc00::1]/a.png",
        "http://[fd12:3456::1]/a.png",
        "http://[fe80::1]/a.png",
        "http://169.254.1.1/a.png",
        "http://224.0.0.1/a.png",
        "http://[ff02::1]/a.png",
        "http://240.0.0.1/a.png",
        "http://255.255.255.255/a.png",
        "http://198.18.0.1/a.png",
        "http://printer.local/a.png",
        "http://db.internal/a.png",
    ],
)
async def test_private_metadata_and_special_addresses_are_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError(f"{host} should be refused before any lookup")

    monkeypatch.setattr(tasks.egress, "resolve_host", no_dns)
    await _refused(url, policy=public_only_policy())
    # metadata and link-local stay refused even with the local-development opt-in
    if "169.254" in url or "metadata" in url or "fd00:ec2" in url or "fe80" in url:
        monkeypatch.setenv("MEDIA_ALLOW_PRIVATE_ADDRESSES", "true")
        await _refused(url, policy=MediaPolicy.from_settings(MediaSettings()))


async def test_a_name_that_resolves_to_loopback_is_refused(
    internal: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(internal.base_url.rsplit(":", 1)[1])

    async def resolver(host: str, port: int) -> list[str]:
        return {"127.0.0.1.nip.example": ["127.0.0.1"], "mixed.example": ["8.8.8.8", "127.0.0.1"]}[
            host
        ]

    monkeypatch.setattr(tasks.egress, "resolve_host", resolver)
    url = f"http://127.0.0.1.nip.example:{port}/secret"
    error = await _refused(url, policy=public_only_policy())
    assert error.code == "media_refused_address"
    # one public and one internal answer: the whole name is refused, nothing is tried
    await _refused(f"http://mixed.example:{port}/secret", policy=public_only_policy())
    assert internal.requests == []


async def test_dns_rebinding_cannot_switch_the_address_after_the_check(
    media_host: Served, internal: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver that answers the allowed address first and the internal one afterwards: the
    fetcher asks once per connection and connects to the address it checked."""
    answers = iter([[PUBLIC_HOST], ["127.0.0.1"], ["127.0.0.1"]])
    lookups: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    monkeypatch.setattr(tasks.egress, "resolve_host", rebinding)
    port = int(media_host.base_url.rsplit(":", 1)[1])
    fetched = await fetch_media(
        f"http://rebind.example:{port}/a.png", policy=public_only_policy(), limits=IMAGE
    )
    assert fetched.content == PNG
    assert lookups == ["rebind.example"]
    assert [r["host"] for r in media_host.requests] == [f"rebind.example:{port}"]
    assert internal.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://2130706433:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://internal.example:{port}/secret",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_to_an_internal_address_is_refused(
    target: str, media_host: Served, internal: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_resolver = tasks.egress.resolve_host

    async def resolver(host: str, port: int) -> list[str]:
        if host == "internal.example":
            return ["127.0.0.1"]
        return await real_resolver(host, port)

    monkeypatch.setattr(tasks.egress, "resolve_host", resolver)
    port = int(internal.base_url.rsplit(":", 1)[1])
    location = target.format(port=port)
    url = media_host.url(f"/redirect?to={quote(location, safe='')}")
    await _refused(url, policy=public_only_policy())
    assert [r["path"] for r in media_host.requests] == ["/redirect"]
    assert internal.requests == []


async def test_the_internal_service_is_reachable_when_allowed(internal: Served) -> None:
    """The control: the same fetch with the opt-in reaches the internal service, so the
    refusals above are the policy's doing and not a broken server."""
    policy = MediaPolicy(
        allow_http=True, allowed_private_networks=tasks.egress.LOCAL_DEVELOPMENT_NETWORKS
    )
    await fetch_media(internal.url("/secret"), policy=policy, limits=IMAGE)
    assert [r["path"] for r in internal.requests] == ["/secret"]


async def test_refusals_say_nothing_internal(internal: Served) -> None:
    port = int(internal.base_url.rsplit(":", 1)[1])
    error = await _refused(f"http://127.0.0.1:{port}/secret", policy=public_only_policy())
    for leak in ("127.0.0.1", str(port), "loopback", "secret"):
        assert leak not in error.message
