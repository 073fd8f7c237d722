"""Administrative use cases behind the CLI: companies and their platform accounts.

Connecting accounts by OAuth is the front end's job; this back end stores and refreshes tokens.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dispatch.auth import hash_api_key, new_api_key
from models.accounts import account_upsert
from models.tables import Company
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


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """The account `add_account` stored (never its tokens); `created` false: an existing account
    (same company, platform and external id) got the new tokens and kept its id."""

    id: uuid.UUID
    platform: str
    handle: str
    external_id: str
    base_url: str | None
    created: bool


class AccountRefused(ValueError):
    """The database refused the account: one line saying why, never the statement or its
    values (the encrypted tokens among them)."""


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
) -> StoredAccount:
    """Store a platform account with its tokens (encrypted at rest), or, when the company has
    it already (same platform and external id), give it the new tokens: it keeps its id and its
    posts, and is active again (`models.accounts.account_upsert`, one statement).

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
    external_id = external_id or handle
    statement = account_upsert(
        company_id=company_id,
        platform=normalized,
        external_id=external_id,
        handle=handle,
        access_token=access_token,
        refresh_token=refresh_token or None,
        token_expires_at=token_expires_at,
        base_url=base_url,
        granted_scopes=None,  # pasted tokens: what they were granted is not known
        max_characters=max_characters,
    )
    try:
        account_id, created = session.execute(statement).one()
    except DBAPIError as exc:
        raise AccountRefused(f"the database refused the account: {_refusal(exc)}") from None
    return StoredAccount(
        id=account_id,
        platform=normalized,
        handle=handle,
        external_id=external_id,
        base_url=base_url,
        created=bool(created),
    )


def _refusal(error: DBAPIError) -> str:
    """PostgreSQL's primary message (e.g. "value too long for type character varying(200)"):
    unlike the detail, it never quotes the row."""
    diag = getattr(error.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary) if primary else type(error.orig).__name__
