"""Threads: container → `threads_publish`, with the same container checkpoint as Instagram.

Text-only posts are allowed. `auto_publish_text` is deliberately not used: it collapses the two
steps into one call and loses the checkpoint that makes a retry safe.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    TokenSet,
)
from tasks.platforms.graph import ContainerAdapter, ContainerSpec, GraphClient, as_int
from tasks.platforms.text_limits import validate_threads
from tasks.platforms.threads.spec import SPEC

assert SPEC.versions is not None
#: Threads' own API version (the spec's; `threads/connect.py` reads it from here).
THREADS_VERSION = SPEC.versions.default
INSIGHT_METRICS: tuple[str, ...] = ("views", "likes", "replies", "reposts", "quotes", "shares")


class ThreadsAdapter(ContainerAdapter):
    """Text, image, video and carousel threads (`external_id` = threads-user-id).

    Threads' API is `v1.0`, so that is the default version here. Options as for Instagram.
    """

    platform: ClassVar[str] = "threads"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    #: An expired Threads token cannot be refreshed ("at least 24 hours old but have not
    #: expired", developers.facebook.com/docs/threads/get-started/long-lived-tokens): a 190/463
    #: means reconnect; the refresh job renews tokens before expiry.
    token_refreshable: ClassVar[bool] = False
    content_rules = staticmethod(validate_threads)
    upload = SPEC.upload
    spec: ClassVar[ContainerSpec] = ContainerSpec(
        create_edge="threads",
        publish_edge="threads_publish",
        list_edge="threads",
        status_field="status",
        text_field="text",
        video_type="VIDEO",
        image_type="IMAGE",
        text_type="TEXT",
    )

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        graph_version: str = THREADS_VERSION,
        **options: Any,
    ) -> None:
        """Threads has its own API versions (only `v1.0` so far): a Facebook Graph version
        such as `v21.0`, which the registry passes to every Meta adapter, does not apply."""
        if not graph_version.startswith("v1."):
            graph_version = THREADS_VERSION
        super().__init__(http=http, base_url=base_url, graph_version=graph_version, **options)

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        return await self.refresh_long_lived(account=account, grant_type="th_refresh_token")

    async def metrics_for(
        self, graph: GraphClient, account: AccountContext, remote_id: str
    ) -> MetricCounts:
        """`shares` sums reposts, quotes and shares: the ways a thread spreads."""
        values = await self.insights(graph, account, remote_id, INSIGHT_METRICS)
        spread = [as_int(values.get(k)) for k in ("reposts", "quotes", "shares")]
        known = [v for v in spread if v is not None]
        return MetricCounts(
            impressions=as_int(values.get("views")),
            likes=as_int(values.get("likes")),
            comments=as_int(values.get("replies")),
            shares=sum(known) if known else None,
            raw=values,
        )
