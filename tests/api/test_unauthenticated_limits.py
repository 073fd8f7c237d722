"""Floods without a valid key are cheap and bounded: requests that fail to authenticate are limited
per client address, answered 429 with Retry-After before any key look-up, while valid keys spend
nothing of that budget and other addresses are untouched.

Over HTTP, every client is 127.0.0.1, which uvicorn trusts as a proxy by default: a request's
`X-Forwarded-For` stands for the client address Cloud Run's proxy would report."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from dispatch.app import create_app
from dispatch.errors import ApiError
from dispatch.rate_limits import ADDRESS_TABLE_SIZE, UnauthenticatedLimits, address_budget
from models.database import database_url as configured_database_url
from models.settings import SchedulingSettings
from tasks.api_keys import hash_api_key
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support import clients
from tests.support.servers import serve_in_thread
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET
from tests.support.tenants import Tenant, make_company

LIMIT = 10
ATTACKER = "203.0.113.7"
NEIGHBOUR = "198.51.100.23"


@dataclass
class CountedApi:
    """The app over HTTP, counting the API-key look-ups its database sees."""

    base_url: str
    lookups: list[str] = field(default_factory=list)


@pytest.fixture
def counted_api(database_url: URL) -> Iterator[CountedApi]:
    engine = create_async_engine(configured_database_url(), poolclass=NullPool)
    settings = make_settings(
        WEBHOOK_SECRET=WEBHOOK_SECRET, UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS=LIMIT
    )
    app = create_app(
        settings=settings,
        queue=InMemoryTaskQueue(),
        sessions=async_sessionmaker(engine, expire_on_commit=False),
    )
    with serve_in_thread(app) as base_url:
        api = CountedApi(base_url=base_url)

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            if "api_key_hash" in statement:
                api.lookups.append(statement)

        yield api


def _bad_keys(count: int) -> list[dict[str, str]]:
    """Well-formed keys nobody has (each needs a look-up), with a missing and a malformed
    header mixed in (no look-up, still a failure)."""
    headers: list[dict[str, str]] = []
    for i in range(count):
        if i % 5 == 3:
            headers.append({})
        elif i % 5 == 4:
            headers.append({"Authorization": "Bearer not-a-key"})
        else:
            headers.append({"Authorization": f"Bearer ts_{uuid.uuid4().hex}{uuid.uuid4().hex}"})
    return headers


async def _flood(base_url: str, *, address: str, requests: int, concurrency: int) -> list:
    """`requests` bad-key GETs from `address`, `concurrency` in flight; the answers."""
    limits = httpx.Limits(max_connections=concurrency)
    async with clients.async_client(base_url=base_url, timeout=60, limits=limits) as http:
        gate = asyncio.Semaphore(concurrency)

        async def one(headers: dict[str, str]) -> httpx.Response:
            async with gate:
                return await http.get(
                    "/api/social-posts", headers={**headers, "X-Forwarded-For": address}
                )

        return list(await asyncio.gather(*(one(h) for h in _bad_keys(requests))))


def _get(
    base_url: str, *, key: str | None, address: str, http: httpx.Client | None = None
) -> httpx.Response:
    """One company API request from `address` (on `http`, or a client of its own)."""
    headers = {"X-Forwarded-For": address}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if http is not None:
        return http.get(f"{base_url}/api/social-posts", headers=headers)
    with clients.client(timeout=30) as own:
        return own.get(f"{base_url}/api/social-posts", headers=headers)


def test_a_bad_key_flood_gets_429_past_the_limit_with_no_lookup_per_refused_request(
    counted_api: CountedApi,
) -> None:
    answers = asyncio.run(
        _flood(counted_api.base_url, address=ATTACKER, requests=150, concurrency=32)
    )
    codes = [a.status_code for a in answers]
    assert set(codes) == {401, 429}
    # The address's first wave gets past as far as the requests in flight at once (32 here);
    # once it has failed, each request takes a unit at the gate: the budget, plus that first
    # wave, plus a unit refilled meanwhile, and no more.
    assert LIMIT <= codes.count(401) <= LIMIT + 32 + 1
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) >= 150 - LIMIT - 32 - 1
    for answer in refused:
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
        assert answer.json()["error"]["code"] == "rate_limited"
    # Exactly one database look-up per well-formed key that was let through, none for the
    # 429s (the missing and malformed headers never reach the database either).
    let_through = [
        a
        for a in answers
        if a.status_code == 401 and a.json()["error"]["message"] == "invalid API key"
    ]
    assert 0 < len(counted_api.lookups) <= len(let_through) <= LIMIT + 32 + 1
    # Still refused before any look-up afterwards, whichever way the key is spoiled.
    before = len(counted_api.lookups)
    again = _get(counted_api.base_url, key=f"ts_{uuid.uuid4().hex}", address=ATTACKER)
    assert again.status_code == 429
    assert len(counted_api.lookups) == before


def test_a_company_and_another_address_are_not_held_up_by_a_flood(
    counted_api: CountedApi,
) -> None:
    """During a flood from the attacker's address: the company that works from that same
    address (it authenticated there before) keeps getting 200, a company calling from another
    address too, and a bad key from that other address is still a plain 401."""
    same_address = make_company(name="Shares The NAT")
    elsewhere = make_company(name="Elsewhere")
    assert _get(counted_api.base_url, key=same_address.api_key, address=ATTACKER).status_code == (
        200
    )

    async def during_the_flood() -> tuple[list[httpx.Response], list[httpx.Response]]:
        flood = asyncio.create_task(
            _flood(counted_api.base_url, address=ATTACKER, requests=200, concurrency=16)
        )
        legitimate: list[httpx.Response] = []
        async with clients.async_client(base_url=counted_api.base_url, timeout=60) as http:
            while not flood.done() or len(legitimate) < 20:
                for tenant, address in ((same_address, ATTACKER), (elsewhere, NEIGHBOUR)):
                    legitimate.append(await _company_get(http, tenant, address))
        return await flood, legitimate

    flooded, legitimate = asyncio.run(during_the_flood())
    assert [a.status_code for a in flooded].count(429) >= 200 - LIMIT - 16 - 1
    assert {a.status_code for a in legitimate} == {200}, [a.text for a in legitimate][:3]
    # The neighbour's own failures have their own budget.
    stranger = _get(counted_api.base_url, key=f"ts_{uuid.uuid4().hex}", address=NEIGHBOUR)
    assert stranger.status_code == 401
    assert stranger.json()["error"]["code"] == "unauthenticated"


async def _company_get(http: httpx.AsyncClient, tenant: Tenant, address: str) -> httpx.Response:
    return await http.get(
        "/api/social-posts",
        headers={"Authorization": f"Bearer {tenant.api_key}", "X-Forwarded-For": address},
    )


def test_valid_keys_never_spend_the_address_budget(counted_api: CountedApi) -> None:
    """Fifty valid requests from one address (companies the instance has never seen, so each
    one goes through the gate), then the address still has its whole budget of failures."""
    url = counted_api.base_url
    with clients.client(timeout=30) as http:
        for _ in range(5):
            tenant = make_company(name="Busy")
            for _ in range(10):
                answer = _get(url, key=tenant.api_key, address=ATTACKER, http=http)
                assert answer.status_code == 200
        codes = [
            _get(url, key=f"ts_{uuid.uuid4().hex}", address=ATTACKER, http=http).status_code
            for _ in range(LIMIT)
        ]
    assert codes == [401] * LIMIT


def test_a_first_burst_of_valid_keys_is_never_refused(counted_api: CountedApi) -> None:
    """Four companies this instance has never seen send 10 requests each at once from one
    address (a new instance right after a deploy, one office's NAT): in flight together they
    are far past the address's budget of failures, and none of them fails, so none is refused."""
    tenants = [make_company(name=f"Burst {i}") for i in range(4)]

    async def burst() -> list[httpx.Response]:
        async with clients.async_client(base_url=counted_api.base_url, timeout=60) as http:
            return await asyncio.gather(
                *(_company_get(http, tenant, ATTACKER) for tenant in tenants for _ in range(10))
            )

    answers = asyncio.run(burst())
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers][:3]


# ------------------------------------------------------------------------------- unit level
class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _limits(
    per_minute: int, clock: FakeClock | None = None, **kwargs: int
) -> UnauthenticatedLimits:
    settings = SchedulingSettings(UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS=per_minute)
    return UnauthenticatedLimits(settings, clock=clock or FakeClock(), **kwargs)


def _fail(limits: UnauthenticatedLimits, host: str, key: str | None = None) -> None:
    limits.admit(host, None if key is None else hash_api_key(key)).failed()


def test_the_budget_refills_at_the_configured_rate_and_retry_after_says_when() -> None:
    clock = FakeClock()
    limits = _limits(60, clock)
    for _ in range(60):
        _fail(limits, ATTACKER)
    with pytest.raises(ApiError) as refused:
        limits.admit(ATTACKER, None)
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "1"}  # 60 a minute: one a second
    clock.now += 1.0
    _fail(limits, ATTACKER)  # the refilled unit
    with pytest.raises(ApiError):
        limits.admit(ATTACKER, None)


def test_a_known_key_passes_an_exhausted_address_until_it_stops_working() -> None:
    limits = _limits(3)
    limits.admit(ATTACKER, hash_api_key("ts_good")).succeeded()
    for _ in range(3):
        _fail(limits, ATTACKER)
    with pytest.raises(ApiError):
        limits.admit(ATTACKER, hash_api_key("ts_new"))  # unknown: waits like the flood
    known = limits.admit(ATTACKER, hash_api_key("ts_good"))
    assert not known.reserved
    known.failed()  # revoked meanwhile: forgotten, and it counts as a failure from now on
    with pytest.raises(ApiError):
        limits.admit(ATTACKER, hash_api_key("ts_good"))


def test_a_failing_address_reserves_at_the_gate_and_a_valid_key_gives_it_back() -> None:
    limits = _limits(3)
    first = limits.admit(ATTACKER, hash_api_key("ts_a"))
    assert not first.reserved  # no failure remembered: nothing held back
    first.failed()
    # Now failing: two more in flight take the two units left, a third waits.
    pending = [limits.admit(ATTACKER, hash_api_key(f"ts_{i}")) for i in range(2)]
    assert all(p.reserved for p in pending)
    with pytest.raises(ApiError):
        limits.admit(ATTACKER, hash_api_key("ts_z"))
    pending[0].succeeded()  # a valid key: its unit comes back
    limits.admit(ATTACKER, hash_api_key("ts_y")).failed()
    with pytest.raises(ApiError):
        limits.admit(ATTACKER, None)


def test_a_lookup_that_could_not_run_gives_its_unit_back() -> None:
    limits = _limits(2)
    for _ in range(10):
        limits.admit(ATTACKER, hash_api_key("ts_x")).abandoned()
    _fail(limits, ATTACKER)
    _fail(limits, ATTACKER)
    with pytest.raises(ApiError):
        limits.admit(ATTACKER, None)


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() -> None:
    limits = _limits(4)
    for i in range(4):
        _fail(limits, f"2001:db8:1:2::{i + 1:x}")
    with pytest.raises(ApiError):
        limits.admit("2001:db8:1:2:ffff::9", None)  # same /64
    limits.admit("2001:db8:1:3::1", None).failed()  # the next /64 is another budget
    assert address_budget("::ffff:203.0.113.7") == address_budget(ATTACKER) == ATTACKER
    assert address_budget(None) == "-"


def test_the_table_never_exceeds_its_size_under_20_times_as_many_addresses() -> None:
    limits = _limits(60, table_size=1_000)
    network = ipaddress.ip_network("10.0.0.0/8")
    for i in range(20_000):
        _fail(limits, str(network[i + 1]))
        if i % 997 == 0:
            assert len(limits) <= 1_000
    assert len(limits) == 1_000
    # The addresses still remembered are the most recent ones: the last one still owes.
    latest = str(network[20_000])
    for _ in range(59):
        _fail(limits, latest)
    with pytest.raises(ApiError):
        limits.admit(latest, None)


@pytest.mark.slow  # 100k failures through the default-size table: seconds of CPU
def test_the_default_table_stays_within_a_few_megabytes_under_100k_addresses() -> None:
    limits = _limits(60)
    network = ipaddress.ip_network("10.0.0.0/8")
    tracemalloc.start()
    try:
        for i in range(100_000):
            _fail(limits, str(network[i + 1]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(limits) == ADDRESS_TABLE_SIZE
    per_address = peak / ADDRESS_TABLE_SIZE
    assert peak < 16 * 2**20, f"{peak / 2**20:.1f} MB ({math.ceil(per_address)} B per address)"
