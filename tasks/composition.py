"""How the shared services are built from one `Settings`: every entrypoint (the API app,
`dispatch/app.py`; the standalone runs, `flows/standalone.py`; the token refresh,
`tasks/token_refresh.py`) wires them here, so a new dependency is added in one place.

`use_cases` builds the scheduling commands (with their dispatcher, reads and media registration)
and the analytics fan-out over one session factory and one task queue; `PlatformClients` builds
each platform's adapter and connector once, on one HTTP client per platform, and closes the
clients with itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.settings import PlatformSettings, Settings
from tasks.cloud_tasks import TaskQueue
from tasks.dispatcher import TargetDispatcher
from tasks.egress import MediaPolicy
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.connecting import Connector
from tasks.platforms.http import platform_http_client
from tasks.platforms.registry import build_adapter, build_connector
from tasks.scheduling import Scheduler
from tasks.sync_fanout import SyncFanOut
from tasks.task_specs import WebhookTarget


@dataclass(frozen=True, slots=True)
class UseCases:
    """The use cases every entrypoint wires the same way, over one session factory and queue."""

    scheduler: Scheduler
    fan_out: SyncFanOut

    @property
    def dispatcher(self) -> TargetDispatcher:
        return self.scheduler.dispatcher


def use_cases(
    settings: Settings, *, sessions: async_sessionmaker[AsyncSession], queue: TaskQueue
) -> UseCases:
    webhook = WebhookTarget.from_settings(settings.webhooks)
    return UseCases(
        scheduler=Scheduler(
            sessions=sessions,
            queue=queue,
            webhook=webhook,
            queues=settings.queues,
            settings=settings.scheduling,
            media_policy=MediaPolicy.from_settings(settings.media),
            staging=settings.staging,
        ),
        fan_out=SyncFanOut(
            sessions=sessions,
            queue=queue,
            webhook=webhook,
            queues=settings.queues,
            settings=settings.analytics,
        ),
    )


class PlatformClients:
    """Each platform's adapter and connector, built on first use on that platform's own HTTP
    client (`tasks/platforms/http.py`: aiohttp connections, every destination checked by the
    egress guard under `media_policy`, no cookies); `aclose` (or leaving `async with`) closes
    the clients."""

    def __init__(self, settings: PlatformSettings, *, media_policy: MediaPolicy | None) -> None:
        self.settings = settings
        self.media_policy = media_policy
        self._http: dict[str, httpx.AsyncClient] = {}
        self._adapters: dict[str, PlatformAdapter] = {}
        self._connectors: dict[str, Connector] = {}

    def http(self, platform: str) -> httpx.AsyncClient:
        if platform not in self._http:
            self._http[platform] = platform_http_client(self.settings, policy=self.media_policy)
        return self._http[platform]

    def adapter(self, platform: str) -> PlatformAdapter:
        if platform not in self._adapters:
            self._adapters[platform] = build_adapter(
                platform,
                http=self.http(platform),
                settings=self.settings,
                media_policy=self.media_policy,
            )
        return self._adapters[platform]

    def connector(self, platform: str) -> Connector:
        if platform not in self._connectors:
            self._connectors[platform] = build_connector(
                platform,
                http=self.http(platform),
                settings=self.settings,
                media_policy=self.media_policy,
            )
        return self._connectors[platform]

    async def aclose(self) -> None:
        clients, self._http = list(self._http.values()), {}
        self._adapters.clear()
        self._connectors.clear()
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> PlatformClients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
