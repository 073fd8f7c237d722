"""The documents' per-platform tables are the specs' (`deployments/platform_docs.py`): the
connect table of docs/connecting-accounts.md and the platform matrix of docs/platforms.md."""

from deployments.platform_docs import (
    CONNECT_DOC,
    END,
    MATRIX_END,
    MATRIX_START,
    PLATFORMS_DOC,
    START,
    connect_table,
    platform_matrix,
    with_matrix,
    with_tables,
)
from tasks.platforms.registry import PLATFORMS
from tasks.platforms.specs import platform_spec


def test_the_connect_table_is_generated_from_the_specs() -> None:
    text = CONNECT_DOC.read_text()
    assert START in text and END in text
    assert with_tables(text) == text, "run: python -m deployments.platform_docs"


def test_the_table_has_a_row_per_login_with_its_scopes() -> None:
    table = connect_table()
    logins = [login for p in PLATFORMS for login in platform_spec(p).logins]
    assert len(table.splitlines()) == 2 + len(logins)
    assert "`media.write`" in table
    assert "`w_member_social`" in table


def test_the_platform_matrix_is_generated_from_the_specs() -> None:
    text = PLATFORMS_DOC.read_text()
    assert MATRIX_START in text and MATRIX_END in text
    assert with_matrix(text) == text, "run: python -m deployments.platform_docs"


def test_the_matrix_says_what_each_platform_takes_and_reports() -> None:
    matrix = platform_matrix()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in matrix.splitlines()}
    for name in PLATFORMS:
        assert platform_spec(name).title in rows
    assert "300 graphemes" in matrix and "3,000 UTF-8 bytes" in matrix  # Bluesky's two limits
    assert "`r_member_social`" in matrix  # LinkedIn member metrics: restricted by design
    assert "`LINKEDIN_VERSION` | 202607" in matrix
    bluesky_metrics = [line for line in matrix.splitlines() if line.startswith("| Bluesky | — |")]
    assert bluesky_metrics, "Bluesky reports no impressions"
