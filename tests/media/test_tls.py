"""https through the checked address: the TCP connection goes to the IP the fetcher checked, while
TLS still names the host (SNI) and verifies the certificate for it.

A throw-away CA and a certificate for `media.test` are made with `cryptography`; the media host
serves them over TLS on 127.0.0.2 and the resolver is played by replacing `resolve_host`.
"""

from __future__ import annotations

import datetime
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import tasks.egress
from tasks.egress import MediaFetchError
from tasks.media import MediaLimits, fetch_media
from tests.media.helpers import PNG, PUBLIC_HOST, public_only_policy
from tests.support.ports import free_port

IMAGE = MediaLimits(max_bytes=5_000_000, mime_types=frozenset({"image/png"}))


@dataclass
class TlsHost:
    port: int
    ca_pem: bytes
    hosts_seen: list[str]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificates(tmp: Path) -> tuple[bytes, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("media test CA"))
        .issuer_name(_name("media test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("media.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "leaf.pem", tmp / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHost]:
    ca_pem, cert_file, key_file = _certificates(tmp_path_factory.mktemp("tls"))
    hosts_seen: list[str] = []

    async def png(request: Request) -> Response:
        hosts_seen.append(request.headers["host"])
        return Response(PNG, media_type="image/png")

    port = free_port(PUBLIC_HOST)
    config = uvicorn.Config(
        Starlette(routes=[Route("/a.png", png)]),
        host=PUBLIC_HOST,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="media-tls", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("TLS media host did not start")
        time.sleep(0.01)
    try:
        yield TlsHost(port=port, ca_pem=ca_pem, hosts_seen=hosts_seen)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def media_test_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return {"media.test": [PUBLIC_HOST], "other.test": [PUBLIC_HOST]}[host]

    monkeypatch.setattr(tasks.egress, "resolve_host", resolver)
    return lookups


async def test_https_to_the_checked_ip_keeps_sni_and_verification(
    tls_host: TlsHost, media_test_dns: list[str]
) -> None:
    context = ssl.create_default_context(cadata=tls_host.ca_pem.decode())
    policy = public_only_policy(allow_http=False, ssl_context=context)
    fetched = await fetch_media(
        f"https://media.test:{tls_host.port}/a.png", policy=policy, limits=IMAGE
    )
    assert fetched.content == PNG
    assert media_test_dns == ["media.test"]
    assert tls_host.hosts_seen[-1] == f"media.test:{tls_host.port}"


async def test_a_certificate_for_another_name_is_refused(
    tls_host: TlsHost, media_test_dns: list[str]
) -> None:
    """Same IP, another host name: the certificate names media.test, so TLS fails. Connecting
    to the IP did not turn hostname verification off."""
    context = ssl.create_default_context(cadata=tls_host.ca_pem.decode())
    policy = public_only_policy(allow_http=False, ssl_context=context)
    seen = len(tls_host.hosts_seen)
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media(f"https://other.test:{tls_host.port}/a.png", policy=policy, limits=IMAGE)
    assert caught.value.code == "media_unreachable"
    assert len(tls_host.hosts_seen) == seen


async def test_an_untrusted_certificate_is_refused(
    tls_host: TlsHost, media_test_dns: list[str]
) -> None:
    policy = public_only_policy(allow_http=False)  # the real CA bundle: our test CA is not in it
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media(f"https://media.test:{tls_host.port}/a.png", policy=policy, limits=IMAGE)
    assert caught.value.code == "media_unreachable"
