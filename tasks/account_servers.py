"""Re-check every account's stored server (`base_url`) against the egress guard: the use case
behind `tendsocial accounts recheck-servers`, and a step of every sweep (`flows/sweeper.py`).

A stored server may fail today's policy: a row stored before the storage check existed,
under local development's policy, by a path that skipped
`tasks.administration.add_account`, or under a policy tightened since. The adapters refuse such a
server before each call (`servers.account_server`), but only when the account next posts;
marked now, the account shows as needing a reconnect (accounts API, health metric) before a
post fails on it.

The check is the adapters' own (`account_server`, no DNS), so the pass and the call agree. A
name that resolves to a private address is refused at connect time instead
(`http.GuardedResolver`): an answer at sweep time says nothing about the next call's, and a
resolver hiccup must not disconnect accounts. The tenant reads `servers.REFUSED_MESSAGE` (the
rule, no address); the log has the account and the guard's reason.

Each refused account is marked by one conditional UPDATE (`models.accounts.
mark_account_needs_reconnect` with the server read): only while it is still active on that
server, so a reconnect in between wins and a second pass changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.accounts import mark_account_needs_reconnect
from models.database import database_url, unit_of_work
from models.settings import Settings
from models.statuses import AccountStatus
from models.tables import SocialAccount
from tasks.egress import MediaPolicy
from tasks.platforms.base import NeedsReconnectError
from tasks.platforms.servers import ServerUrlError, account_server, configured_servers

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServerRecheckReport:
    #: Active accounts with a server of their own that were checked.
    checked: int = 0
    #: Accounts marked `needs_reconnect` by this pass.
    marked: list[uuid.UUID] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "marked": len(self.marked),
            "accounts": [str(a) for a in self.marked],
        }


async def recheck_account_servers(
    sessions: async_sessionmaker[AsyncSession],
    *,
    policy: MediaPolicy,
    configured: Iterable[str] = (),
) -> ServerRecheckReport:
    """Mark every active account whose `base_url` `policy` refuses; servers on one of the
    operator's `configured` ones (`servers.configured_servers`) are trusted, as the adapters
    and the platform clients trust them."""
    trusted = tuple(configured)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(SocialAccount.id, SocialAccount.platform, SocialAccount.base_url).where(
                    SocialAccount.status == AccountStatus.ACTIVE,
                    SocialAccount.base_url.is_not(None),
                    SocialAccount.base_url != "",
                )
            )
        ).all()
    report = ServerRecheckReport(checked=len(rows))
    for account_id, platform, server in rows:
        try:
            account_server(server, default="", policy=policy, configured=trusted)
        except NeedsReconnectError as refused:
            async with unit_of_work(sessions) as session:
                marked = await mark_account_needs_reconnect(
                    session, account_id=account_id, reason=refused.message, server=server
                )
            if marked:
                report.marked.append(account_id)
                cause = refused.__cause__
                why = cause.detail if isinstance(cause, ServerUrlError) else refused.code
                log.warning(
                    "account %s (%s) needs reconnecting: its server is refused: %s",
                    account_id,
                    platform,
                    why,
                )
    if report.marked:
        log.warning("%d account(s) marked needs_reconnect: server refused", len(report.marked))
    return report


async def run_recheck_once(settings: Settings) -> ServerRecheckReport:
    """The pass with the deployment's wiring: its policy (`MEDIA_ALLOW_PRIVATE_ADDRESSES`:
    production's unless local development's), its configured servers, an engine of its own."""
    engine = create_async_engine(database_url())
    try:
        return await recheck_account_servers(
            async_sessionmaker(engine, expire_on_commit=False),
            policy=MediaPolicy.from_settings(settings.media),
            configured=configured_servers(settings.platforms),
        )
    finally:
        await engine.dispose()


def describe_recheck(report: ServerRecheckReport) -> str:
    return f"checked {report.checked} account server(s), {len(report.marked)} marked to reconnect"
