"""Authorizations in flight and the apps registered on Mastodon instances (`tasks/
account_connect.py`). Nothing here commits."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.tables import ConnectState, MastodonApp


async def add_connect_state(session: AsyncSession, state: ConnectState) -> None:
    """Store a new authorization, and drop the company's expired ones on the way."""
    await session.execute(
        delete(ConnectState).where(
            ConnectState.company_id == state.company_id, ConnectState.expires_at <= func.now()
        )
    )
    session.add(state)
    await session.flush()


async def take_connect_state(
    session: AsyncSession, *, state_hash: str, company_id: uuid.UUID
) -> ConnectState | None:
    """Consume the company's unexpired authorization with this state hash: one statement, so a
    state can be taken once, by its own company only (another company's callback finds none
    and leaves it in place)."""
    row = (
        await session.execute(
            delete(ConnectState)
            .where(
                ConnectState.state_hash == state_hash,
                ConnectState.company_id == company_id,
                ConnectState.expires_at > func.now(),
            )
            .returning(ConnectState)
        )
    ).scalar_one_or_none()
    return row


async def mastodon_app(
    session: AsyncSession, *, server: str, redirect_uri: str, scopes: str
) -> MastodonApp | None:
    return await session.scalar(
        select(MastodonApp).where(
            MastodonApp.server == server,
            MastodonApp.redirect_uri == redirect_uri,
            MastodonApp.scopes == scopes,
        )
    )


async def add_mastodon_app(
    session: AsyncSession,
    *,
    server: str,
    redirect_uri: str,
    scopes: str,
    client_id: str,
    client_secret: str,
) -> MastodonApp:
    """Keep a registered app; when another connect registered one meanwhile, theirs is kept
    and returned (ours is simply never used)."""
    await session.execute(
        insert(MastodonApp)
        .values(
            id=uuid.uuid4(),
            server=server,
            redirect_uri=redirect_uri,
            scopes=scopes,
            client_id=client_id,
            client_secret=client_secret,
        )
        .on_conflict_do_nothing(index_elements=["server", "redirect_uri", "scopes"])
    )
    app = await mastodon_app(session, server=server, redirect_uri=redirect_uri, scopes=scopes)
    assert app is not None
    return app
