"""The sandbox's own log never holds a token.

The platforms it stands in for take credentials in the URL, so uvicorn's access line for such a
request would carry them:

- Instagram's and Threads' token refresh,
  `GET /refresh_access_token?grant_type=ig_refresh_token&access_token=...`
  (https://developers.facebook.com/documentation/instagram-platform/reference/refresh_access_token),
  and every Graph call made with `?access_token=`;
- the long-lived token exchange, `client_secret=` and `fb_exchange_token=`
  (https://developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived);
- the code exchange (`code=`) and `debug_token?input_token=`
  (https://developers.facebook.com/docs/graph-api/reference/debug_token/).

`RedactTokens` replaces those values, and any `Authorization` header value, in every record its
handler writes.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

REDACTED = "[redacted]"
#: Query (or form) parameters whose value is a credential.
SECRET_PARAMETERS = (
    "access_token",
    "client_secret",
    "fb_exchange_token",
    "code",
    "input_token",
    "refresh_token",
)
_PARAMETER = re.compile(
    r"(?i)(?P<key>(?<![\w.-])(?:" + "|".join(SECRET_PARAMETERS) + r")=)(?P<value>[^&\s\"'#]+)"
)
_AUTHORIZATION = re.compile(
    r"(?i)(?P<key>\bauthorization\b[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|oauth)\s+)?)"
    r"(?P<value>[^\s\"',;}]+)"
)


def redact(text: str) -> str:
    """`text` with every credential value replaced by `[redacted]`."""
    for pattern in (_AUTHORIZATION, _PARAMETER):
        text = pattern.sub(lambda match: match.group("key") + REDACTED, text)
    return text


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Redacts the message and its string arguments in place (uvicorn's access formatter reads
    the request line from `args`, so the arguments keep their shape)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        return True


def sandbox_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, every handler behind `RedactTokens`."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config
