"""`tendsocial serve` writes uvicorn's line per request only with `--access-log`: uvicorn decides
per connection from `logging.getLogger("uvicorn.access").hasHandlers()`, so the app's own
logging set-up (`configure_logging`, run when `dispatch.main` is imported, after uvicorn has
configured its loggers) must leave that logger as `access_log` left it. It once routed it to
the root handler regardless, and every publish webhook paid for a formatted access line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import uvicorn

from dispatch.observability import configure_logging

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in _LOGGERS
    }
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.mark.parametrize("access_log", [False, True])
def test_the_access_log_is_written_only_when_asked_for(access_log: bool) -> None:
    uvicorn.Config("dispatch.main:app", access_log=access_log, log_level="info")
    configure_logging(fmt="text", level="INFO")
    access = logging.getLogger("uvicorn.access")
    assert access.hasHandlers() is access_log
    assert access.handlers == []  # when on, its lines go through the app's own handler
    assert logging.getLogger("uvicorn.error").hasHandlers()  # start-up and errors: always
