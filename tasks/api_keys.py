"""Company API keys: how a key looks and the hash stored in its place.

Keys are 256-bit random tokens, so a fast hash is enough (no dictionary to guess from), and the
look-up by hash means no key is ever compared byte by byte in Python. Creating a company
(`tasks/administration.py`) and authenticating a request (`dispatch/auth.py`) must agree on both.
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "ts_"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
