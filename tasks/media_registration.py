"""Registering a company's media URLs, which posts then name by id.

A URL is parsed as strictly as the media fetcher (`tasks/media.py`) will parse it at publish
time, so what can never be fetched is refused when it is registered; each company registers at
most `MAX_MEDIA_ASSETS_PER_COMPANY_PER_DAY` in any 24 hours.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import lock_company_for_reference
from models.database import unit_of_work
from models.quotas import recent_media
from models.settings import SchedulingSettings
from models.tables import MediaAsset
from tasks.egress import MediaPolicy, MediaUrlError, parse_media_url
from tasks.errors import InvalidRequestError, QuotaExceededError


class MediaRegistration:
    """Stores media assets under the fetcher's URL policy and the company's daily quota."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        settings: SchedulingSettings,
        media_policy: MediaPolicy,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.media_policy = media_policy

    async def register(
        self, *, company_id: uuid.UUID, url: str, mime_type: str, size_bytes: int | None
    ) -> MediaAsset:
        """Register a media URL; a URL the fetcher would refuse is refused now, naming `url`."""
        try:
            url = parse_media_url(url, policy=self.media_policy)
        except MediaUrlError as exc:
            raise InvalidRequestError(exc.code, exc.message, field="url") from None
        asset = MediaAsset(
            company_id=company_id, url=url, mime_type=mime_type, size_bytes=size_bytes
        )
        async with unit_of_work(self.sessions) as session:
            # The company's row lock makes concurrent registrations take turns on the quota.
            await lock_company_for_reference(session, company_id)
            quota = self.settings.max_media_assets_per_company_per_day
            registered, room_at = await recent_media(session, company_id=company_id, up_to=quota)
            if registered >= quota:
                raise QuotaExceededError(
                    "quota_exceeded",
                    f"this company registered {quota} media assets in the last 24 hours, its "
                    "quota (MAX_MEDIA_ASSETS_PER_COMPANY_PER_DAY)",
                    retry_at=room_at,
                )
            session.add(asset)
        return asset
