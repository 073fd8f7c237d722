"""Which task headers carry credentials, and their redaction in what the emulator and the
`tendsocial tasks` commands show.

A task's headers are sent as they are on each attempt; only what is *shown* of a task (its views,
`tasks describe`) hides the values of headers whose name says they authenticate the request:
`X-Webhook-Secret`, `Authorization`, any `...Token...` or `...Key...`.
"""

from __future__ import annotations

from collections.abc import Mapping

#: A header whose name contains one of these (any case) carries a credential.
SECRET_HEADER_WORDS = ("secret", "authorization", "token", "key")
REDACTED = "<redacted>"


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_HEADER_WORDS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` with every credential's value replaced by `<redacted>`."""
    return {name: REDACTED if is_secret_header(name) else value for name, value in headers.items()}
