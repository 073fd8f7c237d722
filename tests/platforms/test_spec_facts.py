"""Every platform's facts are in its spec with a source, and the adapters' own constants (which
the adapters still hold) agree with them until the adapters read the spec."""

from __future__ import annotations

import importlib

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
def test_the_adapters_constants_agree_with_the_spec(name: str) -> None:
    spec = platform_spec(name)
    module = importlib.import_module(f"tasks.platforms.{name}.adapter")
    adapter = getattr(module, spec.adapter_class)
    assert spec.metrics is not None
    assert adapter.metrics_batch_size == spec.metrics.batch_size
    upload = spec.upload
    if name == "x":
        assert upload is not None
        assert (upload.part_bytes, upload.max_parts) == (module.CHUNK_BYTES, module.MAX_SEGMENTS)
        assert upload.processing_budget.total_seconds() == module.PROCESSING_BUDGET_SECONDS
        assert upload.processing_retry == module.MEDIA_PROCESSING_RETRY
    if name == "linkedin":
        assert upload is not None and spec.rate_limits is not None
        assert upload.processing_retry == module.VIDEO_PROCESSING_RETRY
        assert spec.rate_limits.fallback_wait == module.SHORT_THROTTLE_WAIT
    if name == "mastodon":
        assert upload is not None
        assert upload.processing_retry == module.MEDIA_PROCESSING_RETRY
        budget = module.MEDIA_POLLS * module.MEDIA_POLL_SECONDS
        assert budget == upload.processing_budget.total_seconds()
    if name == "facebook":
        assert upload is not None
        assert upload.processing_retry == module.VIDEO_PROCESSING_RETRY
        assert upload.processing_limit == module.VIDEO_PROCESSING_LIMIT
    if name == "threads":
        assert spec.versions is not None and spec.versions.default == module.THREADS_VERSION
