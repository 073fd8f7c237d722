"""Request limits on the company API.

Per company: one company flooding the API gets 429 with `Retry-After`, and every other company
keeps its full rate.

pyrate-limiter (a maintained leaky-bucket library) keeps one in-memory bucket per company in this
process; the factory routes each request to its company's bucket. The limits are per instance: on
Cloud Run each instance enforces them for the requests it serves, which bounds what one company
can cost any instance. The job webhooks are not limited here (Cloud Tasks paces them by queue).

Per client address, for requests that fail to authenticate (`UnauthenticatedLimits`, below): a
flood of missing or bad keys is refused before the key look-up once its address is over budget.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pyrate_limiter import (
    GCRA,
    BucketFactory,
    Duration,
    InMemoryBucket,
    Limiter,
    Rate,
    RateItem,
)

from dispatch.errors import ApiError
from models.settings import SchedulingSettings


class _BucketPerCompany(BucketFactory):
    """Routes each request to its company's bucket, created on first use."""

    def __init__(self, rates: list[Rate]) -> None:
        self.rates = rates
        self._buckets: dict[str, InMemoryBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, name: str) -> InMemoryBucket:
        found = self._buckets.get(name)
        if found is None:
            with self._lock:
                found = self._buckets.get(name)
                if found is None:
                    found = self._buckets[name] = self.create(InMemoryBucket, self.rates)
        return found

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, self.bucket(name).now(), weight=weight)

    def get(self, item: RateItem) -> InMemoryBucket:
        return self.bucket(item.name)


class CompanyRateLimits:
    """`check(company_id)` raises a 429 `ApiError` with `Retry-After` once the company is over
    its per-second or per-minute rate."""

    def __init__(self, settings: SchedulingSettings) -> None:
        rates = [
            Rate(settings.company_requests_per_second, Duration.SECOND),
            Rate(settings.company_requests_per_minute, Duration.MINUTE),
        ]
        self._buckets = _BucketPerCompany(rates)
        self._limiter = Limiter(self._buckets)

    def check(self, company_id: uuid.UUID) -> None:
        name = str(company_id)
        if self._limiter.try_acquire(name, blocking=False):
            return
        bucket = self._buckets.bucket(name)
        wait_ms = bucket.waiting(self._buckets.wrap_item(name))
        seconds = max(1, math.ceil(max(int(wait_ms), 0) / 1000))  # type: ignore[arg-type]
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests for this company; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


# --------------------------------------------------------------------- unauthenticated requests
#: Addresses whose failures are remembered at once (about 270 bytes each, measured: ~9 MB in
#: all); past it the least recently seen address is forgotten first. An address matters only
#: while it owes (at most a minute after its last failure), so this covers 32,768 failing
#: addresses a minute per instance; a flood from more addresses than that is for Cloud Armor.
ADDRESS_TABLE_SIZE = 32_768
#: API keys (by hash) that authenticated recently on this instance: they pass the address gate,
#: so a flood of bad keys from a company's own address (its NAT, its office) does not keep the
#: company out. A key the instance has not seen yet waits like the flood while its address is
#: over budget (nothing before the look-up tells it from a bad key).
KNOWN_KEYS_SIZE = 8_192

_V = TypeVar("_V")


def address_budget(host: str | None) -> str:
    """Which budget a client address spends: an IPv4 address its own; an IPv6 address its /64
    (what one host or one subscriber is usually given, so stepping through a /64 does not mint
    fresh budgets; IPv4-mapped addresses count as IPv4); anything else (no client, a unix
    socket) one shared budget per name."""
    if not host:
        return "-"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Lru(OrderedDict[str, _V], Generic[_V]):
    """A mapping of at most `size` entries that forgets the least recently used first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def touch(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass(slots=True)
class AuthAttempt:
    """One request past the address gate; the caller says how its authentication ended."""

    limits: UnauthenticatedLimits
    budget: str
    key_hash: str | None
    #: Whether a unit was taken for it at the gate (an address already failing), to be given
    #: back if the key turns out valid.
    reserved: bool = False

    def succeeded(self) -> None:
        """A valid key: it spends nothing of the address's budget and passes the gate later."""
        self.limits.settle(self, valid=True)

    def failed(self) -> None:
        """No key, a malformed one or an unknown one: one failure against the address."""
        self.limits.settle(self, valid=False)

    def abandoned(self) -> None:
        """The look-up itself failed (the database): not the client's failure."""
        self.limits.settle(self, valid=None)


class UnauthenticatedLimits:
    """Failed authentications per client address. Past the budget the address gets 429 with
    `Retry-After` before its key is looked up, so a flood of bad keys costs a dictionary probe
    per request, not a database query.

    - Only failures spend the budget. An address with no failure remembered passes the gate
      freely, so a company's burst of valid keys this instance has not seen yet (a new
      instance, the first minute after a deploy) is never refused for requests merely in
      flight; a flood's first wave gets past only as far as the requests in flight at once.
      Once an address has failed, every request of it without a known key takes a unit at the
      gate (so concurrent bad keys cannot slip past while the look-ups run), given back when
      the key turns out valid or the look-up could not run.
    - A key that authenticated recently (`KNOWN_KEYS_SIZE`, by hash) skips the gate: a company
      sharing an address with an attacker keeps working (one the instance has not seen yet
      waits like the flood while the address is over budget). It still goes through its own
      per-company limit, and through the look-up (a revoked key fails and is forgotten).
    - The algorithm is pyrate-limiter's GCRA: one number per address; its `step` is pure, so
      the gate reads it without spending. The table is a bounded LRU (`ADDRESS_TABLE_SIZE`),
      so memory stays flat under a flood from many addresses.
    - Per instance, like the company limits.
    """

    def __init__(
        self,
        settings: SchedulingSettings,
        *,
        table_size: int = ADDRESS_TABLE_SIZE,
        known_keys: int = KNOWN_KEYS_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        per_minute = settings.unauthenticated_requests_per_minute_per_address
        self._rates = [Rate(per_minute, Duration.MINUTE)]
        self._gcra = GCRA()
        self._idle = self._gcra.initial(self._rates)
        self._budgets: _Lru[tuple[float, ...]] = _Lru(table_size)
        self._known: _Lru[None] = _Lru(known_keys)
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Addresses remembered now (never more than the table's size)."""
        return len(self._budgets)

    def admit(self, host: str | None, key_hash: str | None) -> AuthAttempt:
        """Let a request through to the key look-up, or raise 429 for its address."""
        budget = address_budget(host)
        if key_hash is not None and key_hash in self._known:
            return AuthAttempt(self, budget, key_hash)
        with self._lock:
            state = self._budgets.get(budget, self._idle)
            if self._gcra.consumed(self._rates, state, self._now_ms()) == 0:
                # No failure of this address is remembered: nothing to hold back (a company's
                # first burst is never refused for requests merely in flight).
                return AuthAttempt(self, budget, key_hash)
            wait_ms = self._step_locked(budget, weight=1)
        if wait_ms is not None:
            seconds = max(1, math.ceil(wait_ms / 1000))
            raise ApiError(
                429,
                "rate_limited",
                f"too many failed authentications from this address; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        return AuthAttempt(self, budget, key_hash, reserved=True)

    def settle(self, attempt: AuthAttempt, *, valid: bool | None) -> None:
        """Close `attempt`: valid (the key remembered), failed (one unit spent; a known key
        that stopped working is forgotten) or abandoned (None: not the client's failure). A
        unit reserved at the gate is the failure's own, and given back otherwise."""
        if valid is False and attempt.key_hash is not None:
            self._known.pop(attempt.key_hash, None)
        if valid and attempt.key_hash is not None:
            self._known.touch(attempt.key_hash, None)
        weight = (1 if valid is False else 0) - (1 if attempt.reserved else 0)
        if weight:
            with self._lock:
                self._step_locked(attempt.budget, weight=weight)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _step_locked(self, budget: str, *, weight: int) -> int | None:
        """Spend `weight` units of the address's budget (a negative weight gives them back):
        None when they were there, else the milliseconds until they are. Under `_lock`."""
        state = self._budgets.get(budget, self._idle)
        new_state, decision = self._gcra.step(self._rates, state, self._now_ms(), weight)
        if decision.allowed:
            self._budgets.touch(budget, new_state)
            return None
        if budget in self._budgets:  # an address still flooding stays remembered
            self._budgets.move_to_end(budget)
        return decision.retry_after_ms or 1
