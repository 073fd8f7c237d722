"""One line naming the fix, instead of a traceback, when a command fails for want of a
credential or of a service that answers (the CLI prints it: `deployments/cli.py`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx

from deployments.local_stack.core import StackError


def explain_failure(error: BaseException) -> str | None:
    """One line naming the fix when `error` (or what caused it) is a missing credential or a
    service that does not answer; None for anything else (a real bug keeps its traceback)."""
    for cause in _causes(error):
        line = _explain_one(cause)
        if line:
            return line
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _explain_one(error: BaseException) -> str | None:
    import grpc
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from sqlalchemy import exc as sa_exc

    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if isinstance(error, StackError):
        return str(error)
    if isinstance(error, auth_exc.DefaultCredentialsError):
        return (
            "no Cloud Tasks emulator or Google credentials: start `tendsocial dev` or set "
            "CLOUD_TASKS_EMULATOR_HOST (for Google: gcloud auth application-default login)"
        )
    unavailable = isinstance(
        error, gexc.ServiceUnavailable | gexc.DeadlineExceeded | gexc.RetryError
    ) or (
        isinstance(error, grpc.RpcError)
        and getattr(error, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE
    )
    if unavailable:
        if emulator:
            return (
                f"no Cloud Tasks emulator answers at {emulator}: start `tendsocial dev` or fix "
                "CLOUD_TASKS_EMULATOR_HOST"
            )
        return "Google Cloud Tasks does not answer: check the network, GCP_PROJECT_ID, GCP_LOCATION"
    if (
        isinstance(error, sa_exc.ProgrammingError)
        and "UndefinedTable" in type(getattr(error, "orig", None)).__name__
    ):
        return (
            f"the database at {_database_address()} has no TendSocial tables: run "
            "`tendsocial db upgrade`, or start `tendsocial dev` and run commands beside it"
        )
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        return (
            f"the database at {_database_address()} cannot be used "
            f"({reason[0] if reason else type(error).__name__}): start `tendsocial dev` or set "
            "DATABASE_URL"
        )
    if isinstance(error, httpx.TransportError):
        try:
            url = str(error.request.url)
        except RuntimeError:
            url = "the configured URL"
        prefect = os.environ.get("PREFECT_API_URL")
        if prefect and url.startswith(prefect.rstrip("/")):
            return (
                f"no Prefect server answers at {prefect}: start `tendsocial dev` or set "
                "PREFECT_API_URL"
            )
        return f"nothing answers at {url} ({type(error).__name__}): is `tendsocial dev` running?"
    return None


def _database_address() -> str:
    from sqlalchemy import make_url

    configured = os.environ.get("DATABASE_URL")
    if not configured:
        return "the embedded PostgreSQL"
    try:
        return make_url(configured).render_as_string(hide_password=True)
    except Exception:
        return "DATABASE_URL"
