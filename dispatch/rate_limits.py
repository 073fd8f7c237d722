"""Per-company request limits on the company API: one company flooding the API gets 429 with
`Retry-After`, and every other company keeps its full rate.

pyrate-limiter (a maintained leaky-bucket library) keeps one in-memory bucket per company in this
process; the factory routes each request to its company's bucket. The limits are per instance: on
Cloud Run each instance enforces them for the requests it serves, which bounds what one company
can cost any instance. The job webhooks are not limited here (Cloud Tasks paces them by queue).
"""

from __future__ import annotations

import math
import threading
import uuid

from pyrate_limiter import BucketFactory, Duration, InMemoryBucket, Limiter, Rate, RateItem

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
