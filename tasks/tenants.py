"""Who is calling: the company behind an API key (the company API's authentication)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import company_by_api_key_hash


async def company_for_api_key_hash(
    sessions: async_sessionmaker[AsyncSession], key_hash: str
) -> uuid.UUID | None:
    """The id of the company whose API key hashes to `key_hash`, or None."""
    async with sessions() as session:
        company = await company_by_api_key_hash(session, key_hash)
    return None if company is None else company.id
