"""Every platform's facts are in its spec with a source, and the adapters read them from there
(the API version defaults in `models/settings.py`, which cannot import the specs, are held equal
to them by `tests/unit/test_settings.py`)."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest

from tasks.platforms.registry import PLATFORMS
from tasks.platforms.specs import platform_spec


@pytest.mark.parametrize("name", PLATFORMS)
def test_every_fact_cites_its_source(name: str) -> None:
    spec = platform_spec(name)
    parts = [spec.text, spec.media, spec.rate_limits, spec.metrics, spec.versions, spec.upload]
    for part in parts:
        if part is not None:
            assert part.docs, f"{name}: {type(part).__name__} cites nothing"
            assert all(url.startswith("https://") for url in part.docs), (name, part.docs)
    assert spec.media is not None
    for kind, cap in spec.media.caps.items():
        assert cap.mime_types and cap.source, (name, kind)
    assert spec.media.implemented <= set(spec.media.caps), name


@pytest.mark.parametrize("name", PLATFORMS)
def test_the_adapter_reads_its_batch_size_from_the_spec(name: str) -> None:
    spec = platform_spec(name)
    module = importlib.import_module(f"tasks.platforms.{name}.adapter")
    assert spec.metrics is not None
    assert getattr(module, spec.adapter_class).metrics_batch_size == spec.metrics.batch_size


def test_the_upload_facts_the_adapters_rely_on() -> None:
    """The figures the adapters read from the specs (`SPEC.upload`, `rate_limits`, `versions`),
    held here so a change to one is a deliberate one."""
    x, linkedin, mastodon, facebook = (
        platform_spec(name).upload for name in ("x", "linkedin", "mastodon", "facebook")
    )
    assert x is not None and linkedin is not None and mastodon is not None
    assert facebook is not None
    # 1 MiB APPEND segments, 0-999: 512 MB fits, and each stays under X's 5 MB.
    assert x.part_bytes == 1024 * 1024 and x.max_parts == 1000
    assert x.part_bytes * x.max_parts >= 512_000_000
    assert x.processing_budget == timedelta(seconds=18)
    # Processing waits grow from `poll_interval` to `processing_retry` (`base.Backoff.of`).
    assert (x.poll_interval, x.processing_retry) == (timedelta(seconds=1), timedelta(seconds=10))
    assert set(x.accepted_statuses) >= {200, 201, 202, 204}
    assert linkedin.processing_retry == timedelta(seconds=10)
    assert linkedin.poll_interval == timedelta(seconds=2)
    assert linkedin.accepted_statuses == (200, 201)
    # Mastodon: 0.5 s doubling to 4 s for 18 s per attempt; 200 processed at once, 202 still
    # processing.
    assert mastodon.processing_budget == timedelta(seconds=18)
    assert (mastodon.poll_interval, mastodon.processing_retry) == (
        timedelta(seconds=0.5),
        timedelta(seconds=4),
    )
    assert mastodon.accepted_statuses == (200, 202)
    assert (facebook.processing_retry, facebook.processing_limit) == (
        timedelta(seconds=20),
        timedelta(hours=2),
    )
    linkedin_limits = platform_spec("linkedin").rate_limits
    graph_limits = platform_spec("facebook").rate_limits
    assert linkedin_limits is not None and linkedin_limits.fallback_wait == timedelta(minutes=5)
    assert graph_limits is not None and graph_limits.fallback_wait == timedelta(hours=1)
    threads = platform_spec("threads").versions
    assert threads is not None and threads.default == "v1.0"
