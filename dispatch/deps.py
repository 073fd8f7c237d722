"""Typed FastAPI dependencies: what a route may ask for, built once per app by `create_app`.

Routes declare `scheduler: SchedulerDep` instead of reaching into `request.app.state`, so what a
route uses is in its signature and checked by the type checker.

Every dependency is `async def` although none awaits: FastAPI runs a plain `def` dependency in
the thread pool, a thread hop per dependency per request (three per publish webhook), for what
is an attribute read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.settings import Settings
from tasks.account_connect import AccountConnect
from tasks.cloud_tasks import TaskQueue
from tasks.dispatcher import TargetDispatcher
from tasks.metrics import MetricsSync
from tasks.publishing import AdapterFactory, Publisher
from tasks.scheduling import Scheduler
from tasks.staging import MediaStager
from tasks.sync_fanout import SyncFanOut


@dataclass(slots=True)
class Services:
    """Everything the routes use, wired once per app (the composition root is `dispatch.app`)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    queue: TaskQueue
    scheduler: Scheduler
    dispatcher: TargetDispatcher
    fan_out: SyncFanOut
    #: Set by the app's lifespan, which owns the platforms' HTTP clients.
    adapters: AdapterFactory | None = None
    publisher: Publisher | None = None
    stager: MediaStager | None = None
    metrics: MetricsSync | None = None
    connect: AccountConnect | None = None


async def services(request: Request) -> Services:
    return request.app.state.services


async def _scheduler(request: Request) -> Scheduler:
    return request.app.state.services.scheduler


async def _publisher(request: Request) -> Publisher:
    publisher = request.app.state.services.publisher
    if publisher is None:
        raise RuntimeError("the app's lifespan has not started")
    return publisher


async def _stager(request: Request) -> MediaStager:
    stager = request.app.state.services.stager
    if stager is None:
        raise RuntimeError("the app's lifespan has not started")
    return stager


async def _metrics(request: Request) -> MetricsSync:
    metrics = request.app.state.services.metrics
    if metrics is None:
        raise RuntimeError("the app's lifespan has not started")
    return metrics


async def _connect(request: Request) -> AccountConnect:
    connect = request.app.state.services.connect
    if connect is None:
        raise RuntimeError("the app's lifespan has not started")
    return connect


async def _settings(request: Request) -> Settings:
    return request.app.state.services.settings


ServicesDep = Annotated[Services, Depends(services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]
PublisherDep = Annotated[Publisher, Depends(_publisher)]
StagerDep = Annotated[MediaStager, Depends(_stager)]
MetricsDep = Annotated[MetricsSync, Depends(_metrics)]
ConnectDep = Annotated[AccountConnect, Depends(_connect)]
