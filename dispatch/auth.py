"""Company API keys: `Authorization: Bearer <key>`, stored as SHA-256.

Keys are 256-bit random tokens, so a fast hash is enough (no dictionary to guess from), and the
lookup by hash means no key is ever compared byte by byte in Python.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Annotated

from fastapi import Depends, Request

from dispatch.errors import ApiError
from tasks.tenants import company_for_api_key_hash

API_KEY_PREFIX = "ts_"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message)


async def current_company_id(request: Request) -> uuid.UUID:
    """The company the bearer key belongs to; 401 for a missing, malformed or unknown key."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthenticated("send the company API key as 'Authorization: Bearer <key>'")
    key = key.strip()
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200 or not key.isascii():
        raise _unauthenticated("invalid API key")
    sessions = request.app.state.services.sessions
    company_id = await company_for_api_key_hash(sessions, hash_api_key(key))
    if company_id is None:
        raise _unauthenticated("invalid API key")
    request.app.state.company_limits.check(company_id)
    return company_id


CompanyId = Annotated[uuid.UUID, Depends(current_company_id)]
