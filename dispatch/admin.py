"""Administrative use cases behind the CLI: companies and their platform accounts.

Connecting accounts by OAuth is the front end's job; this back end stores and refreshes tokens.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from dispatch.auth import hash_api_key, new_api_key
from models.tables import Company, SocialAccount
from tasks.media import MediaPolicy
from tasks.platforms.registry import normalize_platform
from tasks.platforms.servers import ServerUrlError, checked_server_url

#: Platforms whose accounts may name their own server (`base_url`).
SELF_HOSTED_PLATFORMS = frozenset({"mastodon", "bluesky", "instagram", "facebook", "threads"})


@dataclass(frozen=True, slots=True)
class NewCompany:
    id: uuid.UUID
    name: str
    api_key: str


def create_company(session: Session, *, name: str) -> NewCompany:
    """Create a company; its API key is returned once and only its hash is stored."""
    if not name.strip() or "\x00" in name:
        raise ValueError("company name must be non-empty text")
    key = new_api_key()
    company = Company(name=name.strip(), api_key_hash=hash_api_key(key))
    session.add(company)
    session.flush()
    return NewCompany(id=company.id, name=company.name, api_key=key)


def add_account(
    session: Session,
    *,
    company_id: uuid.UUID,
    platform: str,
    handle: str,
    access_token: str,
    refresh_token: str | None = None,
    base_url: str | None = None,
    external_id: str | None = None,
    token_expires_at: datetime | None = None,
    max_characters: int | None = None,
    server_policy: MediaPolicy | None = None,
) -> SocialAccount:
    """Store a platform account with its tokens (encrypted at rest).

    A `base_url` (the account's Mastodon instance, PDS or Graph host) goes through the media
    fetcher's egress guard, name resolution included (`tasks/platforms/servers.py`):
    `server_policy` is production's (https, public addresses) unless the caller passes local
    development's (`MediaPolicy.from_settings` with `MEDIA_ALLOW_PRIVATE_ADDRESSES`)."""
    normalized = normalize_platform(platform)
    if session.get(Company, company_id) is None:
        raise ValueError(f"no company {company_id}")
    if base_url is not None:
        if normalized not in SELF_HOSTED_PLATFORMS:
            raise ValueError(f"{normalized} accounts have no server of their own (base_url)")
        try:
            base_url = checked_server_url(base_url, policy=server_policy or MediaPolicy())
        except ServerUrlError as exc:  # the operator sees why; a tenant would not
            raise ValueError(f"base_url refused: {exc.detail}") from None
    account = SocialAccount(
        company_id=company_id,
        platform=normalized,
        handle=handle,
        external_id=external_id or handle,
        access_token=access_token,
        refresh_token=refresh_token or None,
        base_url=base_url,
        token_expires_at=token_expires_at,
        max_characters=max_characters,
    )
    session.add(account)
    session.flush()
    return account
