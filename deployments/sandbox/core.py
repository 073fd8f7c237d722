"""Shared state of the sandbox platforms: recorded posts, accounts and tokens, injected faults.

One `SandboxState` lives on `app.state.sandbox`; every platform router reads it through the
`get_sandbox` dependency. Platform modules own their wire formats; this module owns only the
bookkeeping they share, so a test can inject a fault on any platform the same way.

Operation names used by the platform modules for `FaultPlan.take` (a fault added without an
operation matches every operation of its platform): `publish`, `lookup` (reconcile reads),
`metrics`, `refresh`, `media`, `instance`; Meta modules add their own (`container`, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request

FAULT_KINDS: frozenset[str] = frozenset(
    {
        "rate_limit",
        "server_error",
        "timeout_after_accept",
        "timeout_before_accept",
        "duplicate",
        "expired_token",
        "revoked_token",
        "invalid_content",  # a permanent validation error, as for text the platform refuses
        "invalid_client",  # X/LinkedIn token endpoints refuse our OAuth client (config error)
    }
)
#: How long a timeout fault holds the answer when the test names no delay: past any sane
#: client timeout used in tests, short enough not to slow shutdown much.
DEFAULT_FAULT_DELAY_SECONDS = 2.0
DEFAULT_RETRY_AFTER_SECONDS = 900


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    retry_after_seconds: int | None = None
    delay_seconds: float | None = None

    @property
    def delay(self) -> float:
        return DEFAULT_FAULT_DELAY_SECONDS if self.delay_seconds is None else self.delay_seconds

    @property
    def retry_after(self) -> int:
        if self.retry_after_seconds is None:
            return DEFAULT_RETRY_AFTER_SECONDS
        return self.retry_after_seconds


@dataclass(slots=True)
class _PlannedFault:
    fault: Fault
    remaining: int
    operation: str | None


class FaultPlan:
    """Faults queued per platform, consumed in order by the matching operation."""

    def __init__(self) -> None:
        self._planned: dict[str, list[_PlannedFault]] = {}

    def add(
        self,
        platform: str,
        kind: str,
        *,
        count: int = 1,
        operation: str | None = None,
        retry_after_seconds: int | None = None,
        delay_seconds: float | None = None,
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        fault = Fault(kind, retry_after_seconds=retry_after_seconds, delay_seconds=delay_seconds)
        self._planned.setdefault(platform, []).append(_PlannedFault(fault, count, operation))

    def take(self, platform: str, operation: str | None) -> Fault | None:
        """The next fault for this call, if any; each call consumes one of its count."""
        planned = self._planned.get(platform, [])
        for item in planned:
            if item.operation is None or item.operation == operation:
                item.remaining -= 1
                if item.remaining <= 0:
                    planned.remove(item)
                return item.fault
        return None

    def pending(self, platform: str | None = None) -> list[dict[str, Any]]:
        return [
            {"platform": p, "kind": i.fault.kind, "count": i.remaining, "operation": i.operation}
            for p, items in self._planned.items()
            if platform is None or p == platform
            for i in items
        ]

    def clear(self) -> None:
        self._planned.clear()


@dataclass(slots=True)
class SandboxAccount:
    platform: str
    external_id: str
    handle: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: On the sandbox clock: where the age of the account's first token counts from (Meta
    #: refreshes only tokens at least 24 h old, deployments/sandbox/graph_tokens.py).
    registered_at: datetime | None = None


class SandboxState:
    """Everything the sandbox remembers. Change it under `lock` from request handlers."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.faults = FaultPlan()
        self.posts: dict[str, list[dict[str, Any]]] = {}
        #: `find_posts` indexes: (platform, matched fields) -> their values -> posts, built on
        #: first use and kept up by `record_post` (stored posts are never changed). A scan per
        #: publish made each publish dearer as a burst's posts piled up (a fake's cost on the
        #: same machine as the service it measures: bench/bench_cpu_per_publish.py).
        self._post_index: dict[
            tuple[str, tuple[str, ...]], dict[tuple[Any, ...], list[dict[str, Any]]]
        ] = {}
        self.accounts: dict[str, dict[str, SandboxAccount]] = {}
        self.access_tokens: dict[str, dict[str, str]] = {}
        self.refresh_tokens: dict[str, dict[str, str]] = {}
        #: Platform-specific scratch space (idempotency keys, uploads, containers...).
        self.extra: dict[str, dict[str, Any]] = {}
        self.clock_offset = timedelta()
        #: Names of the platform modules the app mounted (for healthz).
        self.platforms_loaded: set[str] = set()
        self._sequence = itertools.count(1)

    # ------------------------------------------------------------------ time and ids
    def now(self) -> datetime:
        """Wall clock plus the offset tests move with `POST /_sandbox/clock`."""
        return datetime.now(UTC) + self.clock_offset

    def new_numeric_id(self) -> str:
        """A snowflake-like id: milliseconds since 2010-11-04 shifted left, plus a sequence."""
        millis = int(self.now().timestamp() * 1000) - 1288834974657
        return str((millis << 22) | (next(self._sequence) & 0x3FFFFF))

    # ------------------------------------------------------------------ posts
    def record_post(self, platform: str, post: dict[str, Any]) -> dict[str, Any]:
        """Store an accepted post, filling `id` and `created_at` when the module did not."""
        stored = dict(post)
        stored.setdefault("id", self.new_numeric_id())
        stored.setdefault("created_at", self.now().isoformat().replace("+00:00", "Z"))
        stored.setdefault("url", None)
        stored.setdefault("text", "")
        stored.setdefault("account", None)
        self.posts.setdefault(platform, []).append(stored)
        for (indexed_platform, fields), index in self._post_index.items():
            if indexed_platform == platform:
                index.setdefault(tuple(stored.get(f) for f in fields), []).append(stored)
        return stored

    def find_posts(self, platform: str, **match: Any) -> list[dict[str, Any]]:
        """The platform's posts whose fields equal `match`, oldest first."""
        fields = tuple(sorted(match))
        index = self._post_index.get((platform, fields))
        if index is None:
            index = self._post_index[(platform, fields)] = {}
            for post in self.posts.get(platform, []):
                index.setdefault(tuple(post.get(f) for f in fields), []).append(post)
        return list(index.get(tuple(match[f] for f in fields), ()))

    def platform_extra(self, platform: str) -> dict[str, Any]:
        return self.extra.setdefault(platform, {})

    # ------------------------------------------------------------------ accounts and tokens
    def add_account(
        self,
        platform: str,
        *,
        external_id: str,
        handle: str,
        access_token: str | None = None,
        refresh_token: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SandboxAccount:
        """Register (or replace) an account; without `access_token` it has no token yet (an
        account an OAuth consent creates gets its tokens from the code grant)."""
        account = SandboxAccount(
            platform, external_id, handle, dict(extra or {}), registered_at=self.now()
        )
        self.accounts.setdefault(platform, {})[external_id] = account
        if access_token:
            self.access_tokens.setdefault(platform, {})[access_token] = external_id
        if refresh_token:
            self.refresh_tokens.setdefault(platform, {})[refresh_token] = external_id
        return account

    def account(self, platform: str, external_id: str) -> SandboxAccount | None:
        return self.accounts.get(platform, {}).get(external_id)

    def account_for_token(self, platform: str, access_token: str | None) -> SandboxAccount | None:
        """The account a bearer token belongs to, or None for unknown / revoked tokens."""
        if not access_token:
            return None
        external_id = self.access_tokens.get(platform, {}).get(access_token)
        return None if external_id is None else self.account(platform, external_id)

    def expire_access_token(self, platform: str, access_token: str) -> None:
        self.access_tokens.get(platform, {}).pop(access_token, None)

    def revoke_account(self, platform: str, external_id: str) -> None:
        """Drop every token of the account, as a user revoking the app does."""
        for table in (self.access_tokens, self.refresh_tokens):
            tokens = table.get(platform, {})
            for token in [t for t, owner in tokens.items() if owner == external_id]:
                del tokens[token]

    def refresh(
        self, platform: str, refresh_token: str | None, *, rotate: bool
    ) -> tuple[SandboxAccount, str, str] | None:
        """Issue a new access token; rotating platforms also replace the (single-use) refresh token.

        Returns (account, access token, refresh token), or None when the refresh token is unknown,
        already used or revoked.
        """
        tokens = self.refresh_tokens.get(platform, {})
        external_id = tokens.get(refresh_token or "")
        account = None if external_id is None else self.account(platform, external_id)
        if account is None or refresh_token is None:
            return None
        access = f"{platform}-at-{secrets.token_urlsafe(12)}"
        self.access_tokens.setdefault(platform, {})[access] = account.external_id
        if rotate:
            del tokens[refresh_token]
            refresh_token = f"{platform}-rt-{secrets.token_urlsafe(12)}"
            tokens[refresh_token] = account.external_id
        return account, access, refresh_token

    # ------------------------------------------------------------------ rate-limit bookkeeping
    def rate_window(
        self, platform: str, *, limit: int, window_seconds: int
    ) -> tuple[int, int, int]:
        """Count one request in the platform's fixed window: (limit, remaining, reset epoch)."""
        windows = self.platform_extra(platform).setdefault("_rate_window", {})
        now = int(self.now().timestamp())
        start = windows.get("start", 0)
        if now >= start + window_seconds:
            windows["start"], windows["used"] = now, 0
            start = now
        windows["used"] = windows.get("used", 0) + 1
        return limit, max(limit - windows["used"], 0), start + window_seconds

    def reset(self) -> None:
        self.faults.clear()
        self.posts.clear()
        self._post_index.clear()
        self.accounts.clear()
        self.access_tokens.clear()
        self.refresh_tokens.clear()
        self.extra.clear()
        self.clock_offset = timedelta()


def get_sandbox(request: Request) -> SandboxState:
    """FastAPI dependency: the sandbox state of the running app."""
    return request.app.state.sandbox


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header (or an `access_token` query parameter)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("access_token")


async def fault_delay(fault: Fault) -> None:
    """Hold the answer as a slow platform would; never under the state lock."""
    await asyncio.sleep(fault.delay)


def pseudo_count(post_id: str, metric: str, *, age_seconds: float, per_hour: int = 5) -> int:
    """A deterministic, age-growing count so metric syncs see stable but changing numbers."""
    seed = int(hashlib.sha256(f"{post_id}:{metric}".encode()).hexdigest()[:8], 16)
    return seed % 20 + int(max(age_seconds, 0.0) / 3600 * per_hour)


def post_age_seconds(state: SandboxState, post: dict[str, Any]) -> float:
    created = datetime.fromisoformat(str(post["created_at"]).replace("Z", "+00:00"))
    return (state.now() - created).total_seconds()
