"""Constants and the policy the media tests share with their servers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tasks.egress import MediaPolicy

PUBLIC_HOST = "127.0.0.2"
INTERNAL_HOST = "127.0.0.1"

#: Real file signatures (WHATWG MIME Sniffing), padded to a plausible body.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
CHUNK = 64 * 1024
#: A 300 kB "video" whose every byte says where it is, so a misplaced resume shows.
CLIP = (MP4_HEAD + bytes(range(256)) * 1200)[:300_000]
GIB = 1024**3


def public_only_policy(**overrides: object) -> MediaPolicy:
    """Production's rules, except that the test media host (127.0.0.2) counts as public and
    plain http is allowed (no certificates here). 127.0.0.1 stays refused."""
    values: dict[object, object] = {
        "allow_http": True,
        "allowed_private_networks": (ipaddress.ip_network(f"{PUBLIC_HOST}/32"),),
    }
    values.update(overrides)
    return MediaPolicy(**values)  # type: ignore[arg-type]


@dataclass
class Served:
    """A server a test started, and the requests that reached it."""

    base_url: str
    requests: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"
