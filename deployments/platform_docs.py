"""The per-platform documentation tables, generated from the platforms' specs
(`tasks/platforms/<platform>/spec.py`), so the documents cannot drift from the code: the connect
table of `docs/connecting-accounts.md`, and the platform matrix of `docs/platforms.md` (text
rules, media, API versions, rate limits, metrics, uploads). `python -m deployments.platform_docs`
rewrites them between their markers, `--check` exits 1 when one differs, and
`tests/unit/test_platform_docs.py` fails then."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

from tasks.platforms.registry import registered_specs
from tasks.platforms.specs import (
    CAPABILITIES,
    MEDIA_KINDS,
    METRICS,
    MIB,
    LoginSpec,
    MediaCap,
    MediaKind,
    PlatformSpec,
    RefreshPolicy,
)

ROOT = Path(__file__).resolve().parent.parent
CONNECT_DOC = ROOT / "docs" / "connecting-accounts.md"
PLATFORMS_DOC = ROOT / "docs" / "platforms.md"
START, END = "<!-- connect-table:start -->", "<!-- connect-table:end -->"
MATRIX_START, MATRIX_END = "<!-- platform-matrix:start -->", "<!-- platform-matrix:end -->"

_TYPE_NAMES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WebP",
    "image/gif": "GIF",
    "video/mp4": "MP4",
    "video/quicktime": "MOV",
}
_COUNTING = {
    "x_weighted": "twitter-text weights (URL 23, emoji 2, CJK 2)",
    "graphemes": "graphemes",
    "mastodon": "graphemes (URL 23, `@user@domain` as `@user`)",
    "threads": "characters (emoji by UTF-8 bytes)",
    "characters": "characters",
}


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "does not expire"
    if value >= timedelta(days=2):
        return f"{value.days} days"
    hours = value.total_seconds() / 3600
    if hours >= 1:
        return f"{hours:g} hour" + ("s" if hours != 1 else "")
    minutes = value.total_seconds() / 60
    if minutes >= 1:
        return f"{minutes:g} minute" + ("s" if minutes != 1 else "")
    return f"{value.total_seconds():g} s"


def _refresh(policy: RefreshPolicy | None) -> str:
    if policy is None:
        return "none: reconnect when refused"
    rule = f"{_duration(policy.before)} before expiry"
    if policy.min_age is not None:
        rule += f", once {_duration(policy.min_age)} old"
    if policy.needs_refresh_token:
        rule += "; without a refresh token, used until it expires"
    return rule


def _login_name(spec: PlatformSpec, login: LoginSpec) -> str:
    if len(spec.logins) == 1:
        return spec.title
    return f"{spec.title} ({login.name.capitalize()} Login)"


def _scopes(login: LoginSpec) -> str:
    if not login.scopes:
        return "handle + app password (no scopes)"
    parts = []
    for capability in CAPABILITIES:
        scopes = login.scopes.get(capability)
        if scopes:
            parts.append(f"{capability}: {' '.join(f'`{s}`' for s in scopes)}")
    return "; ".join(parts)


def _links(urls: Iterable[str]) -> str:
    """Numbered links to the sources, each once; a source with a note keeps only its URL."""
    seen: list[str] = []
    for url in urls:
        url = url.split(" ", 1)[0].rstrip(";")
        if url.startswith("https://") and url not in seen:
            seen.append(url)
    return " ".join(f"[{i + 1}]({url})" for i, url in enumerate(seen))


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def connect_table() -> str:
    """Markdown: per platform login, how it connects, the scopes per capability, the token's
    lifetime and when it is renewed, and the documents."""
    rows = []
    for spec in registered_specs():
        for login in spec.logins:
            connect = "authorization code" + (" + PKCE S256" if login.pkce else "")
            if login.authorize is None:
                connect = "handle + app password → session"
            docs = " ".join(f"[{i + 1}]({url})" for i, url in enumerate(login.docs))
            rows.append(
                [
                    _login_name(spec, login),
                    connect,
                    _scopes(login),
                    login.granted_scopes_from.replace("_", " "),
                    _duration(login.access_token_lifetime),
                    _refresh(login.refresh),
                    docs,
                ]
            )
    header = [
        "Platform",
        "Connect",
        "Scopes asked (per capability)",
        "Granted scopes read from",
        "Access token",
        "Renewed",
        "Docs",
    ]
    return "\n".join(_table(header, rows))


def _size(size: int) -> str:
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size / 1e9:g} GB" if size % 10**9 == 0 else f"{size / 1e6:g} MB"


def _kind(spec: PlatformSpec, kind: MediaKind) -> str:
    media = spec.media
    cap: MediaCap | None = media.caps.get(kind) if media is not None else None
    if media is None or cap is None:
        return "not taken"
    types = "/".join(_TYPE_NAMES.get(t, t) for t in sorted(cap.mime_types))
    limit = "no byte limit documented" if cap.max_bytes is None else f"≤ {_size(cap.max_bytes)}"
    cell = f"{types} {limit}"
    if kind not in media.implemented:
        return f"refused ({cell} documented; not implemented)"
    if kind in media.alone:
        cell += ", alone"
    if kind in media.buffered:
        cell += ", from memory (≤ 50 MB)"
    return cell


def text_table() -> list[str]:
    rows = []
    for spec in registered_specs():
        rule = spec.text
        if rule is None:
            rows.append([spec.title, "no rule", "", "", ""])
            continue
        other = [
            f"{cap:,} {label.removesuffix('s') if cap == 1 else label}"
            for label, cap in (
                ("UTF-8 bytes", rule.max_bytes),
                ("links", rule.max_links),
                ("hashtags", rule.max_hashtags),
                ("@mentions", rule.max_mentions),
            )
            if cap is not None
        ]
        if spec.media is not None and spec.media.required:
            other.append("media required")
        limit = f"{rule.max_characters:,} {rule.unit}"
        if rule.per_account:
            limit += " (an account may carry its own)"
        rows.append(
            [
                spec.title,
                limit,
                _COUNTING[rule.counting],
                ", ".join(other) or "—",
                _links(rule.docs),
            ]
        )
    return _table(["Platform", "Limit", "Counted as", "Also", "Source"], rows)


def media_table() -> list[str]:
    rows = []
    for spec in registered_specs():
        media = spec.media
        items = str(media.max_items) if media and media.max_items else "—"
        sources = [*media.docs, *(c.source for c in media.caps.values())] if media else []
        rows.append(
            [spec.title, *(_kind(spec, kind) for kind in MEDIA_KINDS), items, _links(sources)]
        )
    return _table(["Platform", "Image", "GIF", "Video", "Items per post", "Source"], rows)


def versions_table() -> list[str]:
    rows = []
    for spec in registered_specs():
        versions = spec.versions
        if versions is None:
            continue
        default_sunset = versions.sunsets.get(versions.default)
        if default_sunset is not None:
            retires = default_sunset.isoformat()
        elif versions.support_months:
            retires = f"not published; supported {versions.support_months} months from release"
        else:
            retires = "not published"
        known = ", ".join(f"{v}: {d.isoformat()}" for v, d in sorted(versions.sunsets.items()))
        rows.append(
            [
                spec.title,
                f"`{versions.setting}`" if versions.setting else "fixed",
                versions.default,
                retires,
                known or "—",
                _links(versions.docs),
            ]
        )
    header = ["Platform", "Setting", "Default", "Default retires", "Known sunsets", "Source"]
    return _table(header, rows)


def rate_limits_table() -> list[str]:
    rows = []
    for spec in registered_specs():
        limits = spec.rate_limits
        if limits is None:
            continue
        fallback = _duration(limits.fallback_wait) if limits.fallback_wait else "5 minutes"
        rows.append(
            [
                spec.title,
                limits.reset_from,
                fallback,
                limits.publish_quota or "—",
                _links(limits.docs),
            ]
        )
    header = ["Platform", "429: wait until", "No reset stated", "Publishing quota", "Source"]
    return _table(header, rows)


def metrics_table() -> list[str]:
    rows = []
    for spec in registered_specs():
        metrics = spec.metrics
        if metrics is None:
            continue
        cells = []
        for metric in METRICS:
            if metric not in metrics.reported:
                cells.append("—")
            else:
                name = metrics.names.get(metric)
                cells.append(f"yes ({name})" if name else "yes")
        unavailable = "; ".join(f"{who}: {why}" for who, why in metrics.unavailable.items())
        rows.append(
            [
                spec.title,
                *cells,
                str(metrics.batch_size),
                unavailable or "—",
                _links(metrics.docs),
            ]
        )
    header = ["Platform", *METRICS, "Posts per request", "Not available for", "Source"]
    return _table(header, rows)


def _maybe(value: timedelta | None) -> str:
    return "—" if value is None else _duration(value)


def uploads_table() -> list[str]:
    rows = []
    for spec in registered_specs():
        upload = spec.upload
        if upload is None:
            continue
        parts = "—" if upload.part_bytes is None else _size(upload.part_bytes)
        if upload.max_parts:
            parts += f", at most {upload.max_parts}"
        if upload.parts_set_by:
            parts += f" (set by the {upload.parts_set_by})"
        rows.append(
            [
                spec.title,
                parts,
                _maybe(upload.processing_budget),
                _maybe(upload.processing_retry),
                _maybe(upload.processing_limit),
                _maybe(upload.unposted_lifetime),
                ", ".join(map(str, upload.accepted_statuses)) or "—",
                _links(upload.docs),
            ]
        )
    header = [
        "Platform",
        "Parts",
        "Processing waited for per attempt",
        "Longest wait between looks",
        "Given up after",
        "Unposted upload lives",
        "Success answers",
        "Source",
    ]
    return _table(header, rows)


def platform_matrix() -> str:
    """Markdown: every registered platform's facts, one table per concern."""
    sections = [
        ("Text", text_table()),
        ("Media (what each platform documents, and what our adapter does)", media_table()),
        ("API versions", versions_table()),
        ("Rate limits", rate_limits_table()),
        ("Metrics", metrics_table()),
        ("Uploads in steps", uploads_table()),
    ]
    out: list[str] = []
    for title, table in sections:
        out += [f"#### {title}", "", *table, ""]
    return "\n".join(out).rstrip()


def _between(text: str, start: str, end: str, block: str) -> str:
    """`text` with the block between the markers replaced."""
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{block}\n{end}{tail}"


def with_tables(text: str) -> str:
    """`docs/connecting-accounts.md`'s `text` with its connect table regenerated."""
    return _between(text, START, END, connect_table())


def with_matrix(text: str) -> str:
    """`docs/platforms.md`'s `text` with its platform matrix regenerated."""
    return _between(text, MATRIX_START, MATRIX_END, platform_matrix())


#: Each generated document and how it is regenerated.
DOCUMENTS: tuple[tuple[Path, Callable[[str], str]], ...] = (
    (CONNECT_DOC, with_tables),
    (PLATFORMS_DOC, with_matrix),
)


def main(argv: list[str]) -> int:
    stale = []
    for path, regenerate in DOCUMENTS:
        current = path.read_text()
        updated = regenerate(current)
        if updated != current:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(updated)
    if "--check" in argv and stale:
        print("out of date:", ", ".join(str(p.relative_to(ROOT)) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
