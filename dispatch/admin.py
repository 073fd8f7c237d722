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
from tasks.platforms.registry import normalize_platform


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
) -> SocialAccount:
    """Store a platform account with its tokens (encrypted at rest)."""
    normalized = normalize_platform(platform)
    if session.get(Company, company_id) is None:
        raise ValueError(f"no company {company_id}")
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
