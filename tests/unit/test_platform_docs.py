"""The README's connect table is the specs' (`deployments/platform_docs.py`)."""

from deployments.platform_docs import END, README, START, connect_table, with_tables
from tasks.platforms.registry import PLATFORMS
from tasks.platforms.specs import platform_spec


def test_readme_connect_table_is_generated_from_the_specs() -> None:
    text = README.read_text()
    assert START in text and END in text
    assert with_tables(text) == text, "run: python -m deployments.platform_docs"


def test_the_table_has_a_row_per_login_with_its_scopes() -> None:
    table = connect_table()
    logins = [login for p in PLATFORMS for login in platform_spec(p).logins]
    assert len(table.splitlines()) == 2 + len(logins)
    assert "`media.write`" in table
    assert "`w_member_social`" in table
