"""Local control surfaces stay on loopback unless the operator says otherwise, loudly.

The sandbox (`/_sandbox/*`: reset, accounts with tokens, every tenant's posts) and the Cloud
Tasks emulator (CreateTask to any URL, OIDC tokens minted for any email and audience) have no
authentication by design: they are local stand-ins. Bound to another interface, anyone on the
network could mint tokens the local API trusts, so a non-loopback
bind needs `--unsafe-expose`.
"""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger(__name__)

#: Host names (as in `Host:` headers, without the port) that mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or a Host header's name) is this machine only."""
    name = host.strip().lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class UnsafeBindError(ValueError):
    """A non-loopback bind of an unauthenticated local service without `--unsafe-expose`."""


def check_bind(host: str, *, service: str, unsafe_expose: bool) -> None:
    """Refuse a non-loopback `host` unless `unsafe_expose`; warn when it is allowed."""
    if is_loopback(host):
        return
    if not unsafe_expose:
        raise UnsafeBindError(
            f"refusing to bind the {service} to {host}: it has no authentication and belongs on "
            "127.0.0.1; pass --unsafe-expose to expose it anyway (anyone who reaches it can "
            "control it)"
        )
    log.warning("the %s is exposed on %s without authentication (--unsafe-expose)", service, host)
