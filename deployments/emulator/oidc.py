"""OIDC ID tokens for HTTP targets, signed with a key the emulator owns, and the certs endpoint.

The key is generated once (RSA 2048, `cryptography`) and kept beside the state file, so tokens
stay verifiable across restarts and no key is ever published in a repository. Tokens are minted
with `google.auth.jwt.encode` (RS256, `kid` header). A tiny HTTP endpoint serves:

- `GET /certs` — `{kid: PEM x509 certificate}`, the format
  `google.oauth2.id_token.verify_token(token, request, audience=..., certs_url=...)` accepts;
- `GET /jwks` — the same key as a JWKS;
- `GET /.well-known/openid-configuration` — issuer and jwks_uri.

The HTTP endpoint is hand-written on asyncio streams (three static GET routes) rather than a web
framework, to keep a second server stack out of the emulator's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

TOKEN_LIFETIME_SECONDS = 3600
_REUSE_MARGIN_SECONDS = 3000  # re-mint once a cached token is older than 10 minutes


@dataclass(frozen=True, slots=True)
class OidcEndpoints:
    """Where a receiver finds the emulator's issuer and signing certificates."""

    issuer: str
    certs_url: str
    jwks_url: str
    discovery_url: str


def oidc_endpoints(
    emulator_host: str = "127.0.0.1:8123",
    *,
    http_port: int | None = None,
    issuer: str | None = None,
) -> OidcEndpoints:
    """Issuer and certificate URLs of an emulator at `emulator_host` (certs on gRPC port + 1).

    A receiver verifies with `google.oauth2.id_token.verify_token(token, Request(),
    audience=..., certs_url=endpoints.certs_url)` and then checks `iss == endpoints.issuer`.
    """
    host, _, port = emulator_host.rpartition(":")
    base = f"http://{host}:{http_port if http_port is not None else int(port) + 1}"
    return OidcEndpoints(
        issuer=issuer or f"http://{emulator_host}",
        certs_url=f"{base}/certs",
        jwks_url=f"{base}/jwks",
        discovery_url=f"{base}/.well-known/openid-configuration",
    )


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _write_private(path: Path, data: bytes) -> None:
    """Write `path` readable by its owner only from its creation (0600, also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


class OidcSigner:
    """Owns the signing key (created on first use in `key_dir`) and mints ID tokens."""

    def __init__(self, *, key_dir: Path, issuer: str) -> None:
        self.issuer = issuer
        key_path, cert_path = key_dir / "oidc-key.pem", key_dir / "oidc-cert.pem"
        if not key_path.exists() or not cert_path.exists():
            key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._generate(key_path, cert_path)
        self._key_pem = key_path.read_bytes()
        self.cert_pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        public = cert.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        self._public = public
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha256(der).hexdigest()[:40]
        self._signer = crypt.RSASigner.from_string(self._key_pem, key_id=self.kid)
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}

    @staticmethod
    def _generate(key_path: Path, cert_path: Path) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloud-tasks-emulator")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_path, pem)
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def mint(self, *, audience: str, email: str) -> str:
        """An RS256 ID token like Google's for a service account (cached ~10 min per audience)."""
        now = time.time()
        cached = self._cache.get((audience, email))
        if cached is not None and now - cached[0] < TOKEN_LIFETIME_SECONDS - _REUSE_MARGIN_SECONDS:
            return cached[1]
        iat = int(now)
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "azp": email,
            "sub": email,
            "email": email,
            "email_verified": True,
            "iat": iat,
            "exp": iat + TOKEN_LIFETIME_SECONDS,
        }
        token = jwt.encode(self._signer, payload).decode()
        self._cache[(audience, email)] = (now, token)
        return token

    def certs_document(self) -> dict[str, str]:
        return {self.kid: self.cert_pem.decode()}

    def jwks_document(self) -> dict[str, list[dict[str, str]]]:
        numbers = self._public.public_numbers()
        key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid}
        key |= {"n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}
        return {"keys": [key]}


async def start_certs_server(signer: OidcSigner, *, host: str, port: int) -> asyncio.Server:
    """Serve the certificate documents over plain HTTP/1.1 (one request per connection)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            sockname = writer.get_extra_info("sockname")
            base = f"http://{sockname[0]}:{sockname[1]}"
            documents: dict[str, object] = {
                "/certs": signer.certs_document(),
                "/jwks": signer.jwks_document(),
                "/.well-known/openid-configuration": {
                    "issuer": signer.issuer,
                    "jwks_uri": f"{base}/jwks",
                    "x509_certs_uri": f"{base}/certs",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                },
            }
            if len(parts) >= 2 and parts[0] == "GET" and path in documents:
                status, body = "200 OK", json.dumps(documents[path]).encode()
            else:
                status, body = "404 Not Found", b'{"error": "not found"}'
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)
