"""Administrative use cases behind the CLI (`tendsocial company create`, `tendsocial accounts
add`) and the local stack's demo data: companies and their platform accounts, on a synchronous
session the caller commits.

Connecting accounts by OAuth is `tasks/account_connect.py`; this stores tokens pasted by an
operator. Refusals are the use cases' errors (`tasks/errors.py`), each also a `ValueError`, which
is what the CLI and scripts catch to print one line.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models.accounts import account_upsert
from models.tables import Company
from tasks.api_keys import hash_api_key, new_api_key
from tasks.egress import MediaPolicy
from tasks.errors import InvalidRequestError, NotFoundError
from tasks.platforms.registry import normalize_platform
from tasks.platforms.servers import ServerUrlError, checked_server_url

#: Platforms whose accounts may name their own server (`base_url`).
SELF_HOSTED_PLATFORMS = frozenset({"mastodon", "bluesky", "instagram", "facebook", "threads"})


class AdminRequestInvalid(InvalidRequestError, ValueError):
    """The request can never succeed as sent (an empty name, an unknown platform, ...)."""


class CompanyNotFound(NotFoundError, ValueError):
    """No company with that id."""


class AccountRefused(InvalidRequestError, ValueError):
    """The database refused the account: one line saying why, never the statement or its
    values (the encrypted tokens among them)."""


@dataclass(frozen=True, slots=True)
class NewCompany:
    id: uuid.UUID
    name: str
    api_key: str


def create_company(session: Session, *, name: str) -> NewCompany:
    """Create a company; its API key is returned once and only its hash is stored."""
    if not name.strip() or "\x00" in name:
        raise AdminRequestInvalid(
            "invalid_name", "company name must be non-empty text", field="name"
        )
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
    try:
        normalized = normalize_platform(platform)
    except ValueError as exc:
        raise AdminRequestInvalid("unknown_platform", str(exc), field="platform") from None
    if session.get(Company, company_id) is None:
        raise CompanyNotFound("company_not_found", f"no company {company_id}", field="companyId")
    if base_url is not None:
        if normalized not in SELF_HOSTED_PLATFORMS:
            raise AdminRequestInvalid(
                "no_own_server",
                f"{normalized} accounts have no server of their own (base_url)",
                field="baseUrl",
            )
        try:
            base_url = checked_server_url(base_url, policy=server_policy or MediaPolicy())
        except ServerUrlError as exc:  # the operator sees why; a tenant would not
            raise AdminRequestInvalid(
                "server_refused", f"base_url refused: {exc.detail}", field="baseUrl"
            ) from None
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
        raise AccountRefused(
            "account_refused", f"the database refused the account: {_refusal(exc)}"
        ) from None
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
