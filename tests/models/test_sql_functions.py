"""The migrated database's PL/pgSQL functions are the ones `models/sql/functions.sql` defines:
the file is where they are read and changed, the migrations where they are created.

The file's functions are created in a schema of the test's own, inside a transaction that is
rolled back, and both sides are compared as PostgreSQL prints them (`pg_get_functiondef`:
https://www.postgresql.org/docs/current/functions-info.html), whitespace aside."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

import models

SOURCE = Path(models.__file__).parent / "sql" / "functions.sql"
SCRATCH = "functions_source"

#: The schema's own functions (not an extension's), printed by PostgreSQL.
DEFINITIONS = text(
    """
    SELECT p.proname, pg_get_functiondef(p.oid)
      FROM pg_proc AS p
      JOIN pg_namespace AS n ON n.oid = p.pronamespace
     WHERE n.nspname = :schema
       AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                        WHERE d.objid = p.oid AND d.deptype = 'e')
    """
)


def _normalized(definition: str, schema: str) -> str:
    return " ".join(definition.replace(f"{schema}.", "").split())


def _definitions(conn: object, schema: str) -> dict[str, str]:
    rows = conn.execute(DEFINITIONS, {"schema": schema}).all()  # type: ignore[attr-defined]
    return {name: _normalized(definition, schema) for name, definition in rows}


def test_the_migrated_functions_are_the_source_files(db: Engine) -> None:
    with db.connect() as conn, conn.begin() as transaction:
        migrated = _definitions(conn, "public")
        conn.execute(text(f"CREATE SCHEMA {SCRATCH}"))
        conn.execute(text(f"SET LOCAL search_path = {SCRATCH}, public"))
        conn.exec_driver_sql(SOURCE.read_text())
        source = _definitions(conn, SCRATCH)
        transaction.rollback()
    assert set(source) == {"run_records_notify", "roll_up_post_status", "record_publish_attempt"}
    assert set(migrated) == set(source), "a function is in the database or the file only"
    for name, definition in source.items():
        assert migrated[name] == definition, f"{name} differs from models/sql/functions.sql"


def test_the_file_defines_each_function_once() -> None:
    names = re.findall(r"CREATE OR REPLACE FUNCTION (\w+)\(", SOURCE.read_text())
    assert len(names) == len(set(names)) == 3, names
