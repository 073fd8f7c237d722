"""Checking a schedule request before anything is stored: the time, the platforms, each
account's ownership, state and granted scopes, the media against each platform's media matrix,
and each platform's text limits. A refusal is an `InvalidRequestError` naming the request field
at fault, which the edge answers with 422; nothing here writes.

Also the rows a valid request becomes (`post_values`, `target_row`), shared by scheduling and
rescheduling.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.accounts import accounts_of_company
from models.settings import SchedulingSettings
from models.statuses import UNCANCELLABLE_TARGET_STATUSES, AccountStatus
from models.tables import MediaAsset, PublishTarget
from tasks.errors import ConflictError, InvalidRequestError
from tasks.media import media_kind
from tasks.platforms.media_support import media_problems
from tasks.platforms.registry import normalize_platform
from tasks.platforms.specs import Capability, missing_grants, platform_spec
from tasks.platforms.text_limits import validate_content
from tasks.task_specs import target_idempotency_key


@dataclass(frozen=True, slots=True)
class TargetRequest:
    """One platform of a schedule request, as the caller named it."""

    platform: str
    account_id: uuid.UUID
    custom_content: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleCommand:
    content: str
    targets: Sequence[TargetRequest]
    scheduled_at: datetime
    timezone: str = "UTC"
    media_asset_ids: Sequence[uuid.UUID] = ()
    idempotency_key: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class ValidTarget:
    """A target that passed the checks, in request order."""

    position: int
    platform: str
    account_id: uuid.UUID
    custom_content: str | None


def check_schedule_time(
    scheduled_at: datetime, *, settings: SchedulingSettings, field: str = "scheduledAt"
) -> None:
    now = datetime.now(UTC)
    if scheduled_at < now:
        raise InvalidRequestError("scheduled_in_past", "must be in the future", field=field)
    if scheduled_at > now + timedelta(days=settings.max_schedule_ahead_days):
        raise InvalidRequestError(
            "scheduled_too_far",
            f"must be within {settings.max_schedule_ahead_days} days",
            field=field,
        )


def normalized_platform(name: str, *, field: str) -> str:
    """The canonical platform name, or an InvalidRequestError naming `field`."""
    try:
        return normalize_platform(name)
    except ValueError:
        raise InvalidRequestError(
            "unknown_platform", f"unknown platform {name!r}", field=field
        ) from None


def normalized_platforms(names: Sequence[str], *, field: str = "platforms") -> list[str]:
    """Canonical platform names, or an InvalidRequestError naming the first unknown one."""
    return [normalized_platform(name, field=f"{field}[{i}]") for i, name in enumerate(names)]


# --------------------------------------------------------------------------- validation
async def validated_targets(
    session: AsyncSession, *, company_id: uuid.UUID, command: ScheduleCommand
) -> list[ValidTarget]:
    """Check platforms, account ownership, state and granted scopes, media, and each
    platform's text limits.

    Media are checked per platform against the media matrix (`media_support.media_problems`:
    documented kinds, types and sizes, what our adapter implements, which mixes the platform
    takes), so a post that could only fail, or go out without its media, is refused now with
    422 naming `mediaAssetIds[i]`.
    """
    accounts = await accounts_of_company(
        session, company_id=company_id, account_ids=[t.account_id for t in command.targets]
    )
    media = await _company_media(session, company_id=company_id, media_ids=command.media_asset_ids)
    media_count = len(media)
    # What the post asks of each account, for the scope check (`missing_grants`).
    kinds = {media_kind(m.mime_type) for m in media}
    needed_capabilities: list[Capability] = ["text"]
    if kinds & {"image", "gif"}:
        needed_capabilities.append("images")
    if "video" in kinds:
        needed_capabilities.append("video")
    seen: set[tuple[str, uuid.UUID]] = set()
    checked: dict[tuple[str, int | None, str], list[str]] = {}
    targets = []
    for index, target in enumerate(command.targets):
        field = f"platforms[{index}]"
        platform = normalized_platform(target.platform, field=f"{field}.platform")
        account = accounts.get(target.account_id)
        if account is None:
            raise InvalidRequestError(
                "unknown_account", "no such account for this company", field=f"{field}.accountId"
            )
        if account.platform != platform:
            raise InvalidRequestError(
                "account_platform_mismatch",
                f"account is a {account.platform} account, not {platform}",
                field=f"{field}.accountId",
            )
        if account.status != AccountStatus.ACTIVE:
            raise InvalidRequestError(
                "account_needs_reconnect",
                f"the {platform} account @{account.handle} needs reconnecting",
                field=f"{field}.accountId",
            )
        lacking = missing_grants(
            platform_spec(platform), account.granted_scopes, *needed_capabilities
        )
        if lacking:
            raise InvalidRequestError(
                "missing_scope",
                f"the {platform} account @{account.handle} was not granted {', '.join(lacking)}, "
                "which this post needs; reconnect the account",
                field=f"{field}.accountId",
            )
        if (platform, account.id) in seen:
            raise InvalidRequestError("duplicate_target", "target listed twice", field=field)
        seen.add((platform, account.id))
        media_problem = next(
            iter(media_problems(platform, [(m.mime_type, m.size_bytes) for m in media])), None
        )
        if media_problem is not None:
            raise InvalidRequestError(
                "media_unsupported",
                f"{platform}: {media_problem.message}",
                field=f"mediaAssetIds[{min(media_problem.index, len(media) - 1)}]",
            )
        text = target.custom_content if target.custom_content is not None else command.content
        # Twenty accounts of one platform share one check of the same text (it runs on the
        # event loop every company shares: 20-35 ms for 70 KB of emoji on X, bench_validation).
        check = (platform, account.max_characters, text)
        problems = checked.get(check)
        if problems is None:
            problems = checked[check] = validate_content(
                platform, text, media_count=media_count, max_characters=account.max_characters
            )
        if problems:
            content_field = (
                f"{field}.customContent" if target.custom_content is not None else "content"
            )
            raise InvalidRequestError(
                "content_invalid", f"{platform}: {problems[0]}", field=content_field
            )
        targets.append(
            ValidTarget(
                position=index,
                platform=platform,
                account_id=account.id,
                custom_content=target.custom_content,
            )
        )
    return targets


async def _company_media(
    session: AsyncSession, *, company_id: uuid.UUID, media_ids: Sequence[uuid.UUID]
) -> list[MediaAsset]:
    """The company's media assets in request order; unknown ids are refused by position."""
    if not media_ids:
        return []
    found = {
        asset.id: asset
        for asset in await session.scalars(
            select(MediaAsset).where(
                MediaAsset.company_id == company_id, MediaAsset.id.in_(media_ids)
            )
        )
    }
    for index, media_id in enumerate(media_ids):
        if media_id not in found:
            raise InvalidRequestError(
                "unknown_media_asset",
                "no such media asset for this company",
                field=f"mediaAssetIds[{index}]",
            )
    return [found[media_id] for media_id in media_ids]


def refuse_if_started(targets: Sequence[PublishTarget], *, action: str) -> None:
    started = [t.platform for t in targets if t.status in UNCANCELLABLE_TARGET_STATUSES]
    if started:
        raise ConflictError(
            "already_published",
            f"cannot {action}: already published or publishing on {', '.join(started)}",
        )


def target_row(post_id: uuid.UUID, target: ValidTarget) -> dict[str, Any]:
    return {
        "position": target.position,
        "platform": target.platform,
        "account_id": target.account_id,
        "custom_content": target.custom_content,
        "idempotency_key": target_idempotency_key(
            post_id=post_id, platform=target.platform, account_id=target.account_id
        ),
    }


def post_values(
    *, post_id: uuid.UUID, company_id: uuid.UUID, key: str, command: ScheduleCommand
) -> dict[str, Any]:
    return {
        "id": post_id,
        "company_id": company_id,
        "user_id": command.user_id,
        "content": command.content,
        "media_asset_ids": list(command.media_asset_ids),
        "scheduled_at": command.scheduled_at,
        "timezone": command.timezone,
        "idempotency_key": key,
        "platforms": [
            {
                "platform": normalize_platform(t.platform),
                "accountId": str(t.account_id),
                **({"customContent": t.custom_content} if t.custom_content is not None else {}),
            }
            for t in command.targets
        ],
    }
