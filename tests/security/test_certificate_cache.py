"""The OIDC certificate cache: a stream of tokens with made-up key ids
costs at most one outbound fetch per interval, a failed refresh keeps the certificates we have,
and `Cache-Control: max-age` decides when they are stale."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from dispatch.caller_auth import CertificateCache
from tests.support.servers import serve_in_thread


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def certs_server(state: dict) -> FastAPI:
    """Google's cert endpoint as documented: a JSON object of key id → PEM, with max-age."""
    app = FastAPI()

    @app.get("/certs")
    async def certs() -> JSONResponse:
        state["fetches"] += 1
        if state["down"]:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse(
            state["keys"], headers={"Cache-Control": f"public, max-age={state['max_age']}"}
        )

    return app


async def test_unknown_key_ids_cost_one_fetch_per_interval_and_failures_keep_stale_certs() -> None:
    state = {"fetches": 0, "down": False, "keys": {"k1": "PEM-1"}, "max_age": 300}
    clock = FakeClock()
    with serve_in_thread(certs_server(state)) as base_url:
        cache = CertificateCache(f"{base_url}/certs", min_refetch_seconds=60, clock=clock)
        assert await cache.certs(key_id="k1") == {"k1": "PEM-1"}
        for n in range(20):  # tokens with random key ids, all within the interval
            assert "k1" in await cache.certs(key_id=f"forged-{n}")
        assert state["fetches"] == 1

        clock.now += 61  # past the interval: one refetch for an unknown id, then quiet again
        state["keys"] = {"k1": "PEM-1", "k2": "PEM-2"}
        assert "k2" in await cache.certs(key_id="k2")
        assert "k2" in await cache.certs(key_id="forged")
        assert state["fetches"] == 2

        clock.now += 301  # max-age passed and the endpoint fails: the cached certs stay
        state["down"] = True
        assert await cache.certs(key_id="k1") == {"k1": "PEM-1", "k2": "PEM-2"}
        assert state["fetches"] == 3


async def test_requests_arriving_during_the_first_fetch_wait_for_it() -> None:
    """An instance's first burst: 20 deliveries at once, one fetch, and every one of them
    verified against the fetched certificates (not an empty set: that was 19 × 401)."""
    state = {"fetches": 0, "down": False, "keys": {"k1": "PEM-1"}, "max_age": 300}
    with serve_in_thread(certs_server(state)) as base_url:
        cache = CertificateCache(f"{base_url}/certs", min_refetch_seconds=60)
        answers = await asyncio.gather(*(cache.certs(key_id="k1") for _ in range(20)))
    assert answers == [{"k1": "PEM-1"}] * 20
    assert state["fetches"] == 1


async def test_certificates_stay_fresh_for_max_age() -> None:
    state = {"fetches": 0, "down": False, "keys": {"k1": "PEM-1"}, "max_age": 7200}
    clock = FakeClock()
    with serve_in_thread(certs_server(state)) as base_url:
        cache = CertificateCache(f"{base_url}/certs", clock=clock)
        await cache.certs(key_id="k1")
        clock.now += 3_700  # past the one-hour default, inside the server's max-age
        await cache.certs(key_id="k1")
        assert state["fetches"] == 1
        clock.now += 3_600
        await cache.certs(key_id="k1")
        assert state["fetches"] == 2
