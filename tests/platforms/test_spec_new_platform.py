"""Adding a platform is one folder (its spec, adapter and connector) and one registry line: a toy
platform, written to a temporary folder and registered for this test only, is validated,
media-checked, built and documented by the same code as the seven real ones, with no other edit
(docs/adding-a-platform.md)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks.platforms
from deployments.platform_docs import connect_table, platform_matrix
from models.settings import PlatformSettings
from tasks.media import MediaLimits, check_media_against_platform
from tasks.platforms import registry
from tasks.platforms.media_support import media_problems
from tasks.platforms.specs import forget_spec, platform_spec
from tasks.platforms.text_limits import validate_content
from tests.support import clients

SPEC = """
from tasks.platforms.specs import (
    LoginSpec, MediaSpec, MetricsSpec, PlatformSpec, TextRule, media_cap,
)

SOURCE = "https://toy.example/docs"
SPEC = PlatformSpec(
    name="toy",
    title="Toy",
    api_base_url="https://api.toy.example",
    logins=(
        LoginSpec(
            name="app_password", authorize=None, token=None, scopes={},
            granted_scopes_from="not_reported", docs=(SOURCE,),
        ),
    ),
    text=TextRule(max_characters=10, counting="graphemes", unit="graphemes", docs=(SOURCE,)),
    media=MediaSpec(
        caps={
            "image": media_cap(1_000, ("image/png",), SOURCE),
            "video": media_cap(5_000, ("video/mp4",), SOURCE),
        },
        implemented=frozenset({"image", "video"}),
        max_items=2,
        alone=frozenset({"video"}),
        docs=(SOURCE,),
    ),
    metrics=MetricsSpec(reported=("likes",), batch_size=5, docs=(SOURCE,)),
    adapter_class="ToyAdapter",
    connector_class="ToyConnector",
)
"""
ADAPTER = """
from typing import Any, ClassVar


class ToyAdapter:
    platform: ClassVar[str] = "toy"
    metrics_batch_size: ClassVar[int] = 5

    def __init__(self, *, http: Any, base_url: str, **options: Any) -> None:
        self.http = http
        self.base_url = base_url
        self.options = options
"""


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`tasks/platforms/toy/` in a temporary folder, and its registry line."""
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "spec.py").write_text(textwrap.dedent(SPEC))
    (folder / "adapter.py").write_text(textwrap.dedent(ADAPTER))
    monkeypatch.setattr(tasks.platforms, "__path__", [*tasks.platforms.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "PLATFORMS", (*registry.PLATFORMS, "toy"))
    importlib.invalidate_caches()
    try:
        yield "toy"
    finally:
        forget_spec("toy")
        for name in [m for m in sys.modules if m.startswith("tasks.platforms.toy")]:
            del sys.modules[name]


def test_an_unregistered_platform_is_unknown() -> None:
    with pytest.raises(ValueError):
        validate_content("toy", "hi", media_count=0)
    with pytest.raises(ValueError):
        registry.normalize_platform("toy")
    assert media_problems("toy", [("image/png", 10)])  # nothing to check it against


def test_the_text_rule_of_a_new_platform_is_applied(toy: str) -> None:
    assert registry.normalize_platform("Toy") == toy
    assert validate_content(toy, "a" * 10, media_count=0) == []
    assert validate_content(toy, "a" * 11, media_count=0) == [
        "Toy allows 10 graphemes, the text has 11"
    ]
    assert validate_content(toy, "hi", media_count=3) == ["Toy allows at most 2 media items, got 3"]


def test_the_media_matrix_of_a_new_platform_is_applied(toy: str) -> None:
    assert media_problems(toy, [("image/png", 1_000), ("image/png", 10)]) == []
    assert check_media_against_platform(platform=toy, mime_type="image/png", size_bytes=1_001)
    assert check_media_against_platform(platform=toy, mime_type="image/gif", size_bytes=1)
    [alone] = media_problems(toy, [("video/mp4", 10), ("image/png", 10)])
    assert alone.index == 0 and "only as the post's one media item" in alone.message
    assert MediaLimits.for_platform(toy, "video/mp4").max_bytes == 5_000


async def test_the_registry_builds_the_adapter_its_spec_names(toy: str) -> None:
    async with clients.async_client() as http:
        adapter = registry.build_adapter(toy, http=http, settings=PlatformSettings(_env_file=None))
    assert type(adapter).__name__ == "ToyAdapter"
    assert adapter.base_url == "https://api.toy.example"  # no setting yet: the spec's URL


def test_the_documents_list_a_new_platform(toy: str) -> None:
    assert platform_spec(toy).title == "Toy"
    assert "| Toy | handle + app password" in connect_table()
    matrix = platform_matrix()
    assert "| Toy | 10 graphemes |" in matrix
    assert "| Toy | PNG ≤ 0.001 MB | not taken | MP4 ≤ 0.005 MB, alone | 2 |" in matrix
