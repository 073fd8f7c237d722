"""No secret in any log line: httpx's request lines are silenced, and every formatted line is
redacted, whatever logger wrote it (Meta's token refresh puts `access_token` in the URL, which httpx
logged at INFO)."""

from __future__ import annotations

import io
import logging

import pytest

from dispatch.observability import CloudLoggingFormatter, TextFormatter, configure_logging

LEAKY = [
    "GET https://graph.instagram.com/refresh_access_token?grant_type=ig_refresh_token"
    "&access_token=IGQVJsecret123 200",
    "POST https://api.x.com/2/oauth2/token body=grant_type=refresh_token&refresh_token=rt-secret1",
    "headers: {'Authorization': 'Bearer eyJsecretsecret', 'X-Webhook-Secret': 'whsecret0123'}",
    "client_secret=cs-secret-1&code=auth-code-secret",
]
SECRETS = ["IGQVJsecret123", "rt-secret1", "eyJsecretsecret", "whsecret0123", "cs-secret-1"]


@pytest.mark.parametrize("formatter", [TextFormatter(), CloudLoggingFormatter()])
def test_every_formatted_line_is_redacted(formatter: logging.Formatter) -> None:
    for message in LEAKY:
        record = logging.LogRecord("any", logging.ERROR, __file__, 1, message, None, None)
        line = formatter.format(record)
        assert "[redacted]" in line
        assert not any(secret in line for secret in SECRETS), line


def test_httpx_request_lines_are_not_logged_even_at_debug() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    configure_logging(level="DEBUG")
    root.handlers[0].stream = stream  # type: ignore[attr-defined]
    try:
        logging.getLogger("httpx").info("HTTP Request: GET https://x?access_token=abc")
        logging.getLogger("httpcore.http11").debug("send_request_headers.started")
        logging.getLogger("tendsocial").debug("refreshing with access_token=abc123")
    finally:  # give pytest its handlers back (log capture of later tests)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    written = stream.getvalue()
    assert "HTTP Request" not in written and "send_request_headers" not in written
    assert "access_token=[redacted]" in written and "abc123" not in written
