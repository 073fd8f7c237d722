"""Company API keys at the edge: `Authorization: Bearer <key>`, looked up by its SHA-256
(`tasks/api_keys.py` says why a fast hash is enough)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from dispatch.errors import ApiError
from tasks.api_keys import API_KEY_PREFIX, hash_api_key
from tasks.tenants import company_for_api_key_hash


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message)


def client_address(request: Request) -> str | None:
    """The address a request's failed authentications count against: the client uvicorn
    reports (`request.client.host`).

    Why that is the client on Cloud Run: Cloud Run terminates TLS and proxies every request to
    the container (https://cloud.google.com/run/docs/container-contract, "Transport layer
    encryption"), so the TCP peer is Cloud Run's own proxy, the same link-local address
    (169.254.8.129 as observed; Google does not document the value) for every client. Google's
    front end records the address it accepted the connection from in X-Forwarded-For, after
    whatever the client itself wrote there: "X-Forwarded-For: clientIp, proxy1Ip, proxy2Ip"
    (https://cloud.google.com/functions/docs/reference/headers, Cloud Run functions), and
    behind a load balancer "<unverified IP(s)>, <immediate client IP>, <forwarding rule IP>",
    of which only the last two are the balancer's
    (https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header). `tendsocial
    serve` runs uvicorn with `proxy_headers=True`: when the peer is in FORWARDED_ALLOW_IPS,
    uvicorn replaces it with the right-most X-Forwarded-For entry that is not itself trusted,
    i.e. the address Google saw, never one the client wrote. The Cloud Run manifests set
    FORWARDED_ALLOW_IPS=169.254.0.0/16 (deployments/cloud/render.py), the proxy's link-local
    range, which nothing outside Cloud Run can send from; uvicorn's default (127.0.0.1, ::1)
    would leave every client on Cloud Run sharing the proxy's one budget. With a load balancer
    in front, its forwarding rule's address belongs in FORWARDED_ALLOW_IPS too. Locally the
    peer is the client itself.
    """
    return request.client.host if request.client is not None else None


async def current_company_id(request: Request) -> uuid.UUID:
    """The company the bearer key belongs to; 401 for a missing, malformed or unknown key, and
    429 (before any look-up) once the client's address has failed too often
    (`dispatch.rate_limits.UnauthenticatedLimits`)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    well_formed = (
        scheme.lower() == "bearer"
        and key.startswith(API_KEY_PREFIX)
        and len(key) <= 200
        and key.isascii()
    )
    key_hash = hash_api_key(key) if well_formed else None
    attempt = request.app.state.unauthenticated_limits.admit(client_address(request), key_hash)
    if key_hash is None:
        attempt.failed()
        if scheme.lower() != "bearer" or not key:
            raise _unauthenticated("send the company API key as 'Authorization: Bearer <key>'")
        raise _unauthenticated("invalid API key")
    sessions = request.app.state.services.sessions
    try:
        company_id = await company_for_api_key_hash(sessions, key_hash)
    except BaseException:
        attempt.abandoned()
        raise
    if company_id is None:
        attempt.failed()
        raise _unauthenticated("invalid API key")
    attempt.succeeded()
    request.app.state.company_limits.check(company_id)
    return company_id


CompanyId = Annotated[uuid.UUID, Depends(current_company_id)]
