"""Reading a company's posts: one post with its targets, or a page of them, newest first.

Reads only: the routes that show posts and the scheduling commands (which answer with the post
as stored) share them. Another company's post is not found.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.posts import company_post, company_posts_page, post_targets, targets_of_posts
from models.tables import PublishTarget, ScheduledPost
from tasks.errors import NotFoundError
from tasks.post_validation import normalized_platform


@dataclass(frozen=True, slots=True)
class PostSnapshot:
    """A post and its targets (in request order), read in one session."""

    post: ScheduledPost
    targets: list[PublishTarget]


@dataclass(frozen=True, slots=True)
class PostPage:
    items: list[PostSnapshot]
    #: (created_at, id) of the last item when there are more, else None.
    next_before: tuple[datetime, uuid.UUID] | None


class PostReads:
    """The company's posts as the API shows them."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def load(self, *, company_id: uuid.UUID, post_id: uuid.UUID) -> PostSnapshot:
        async with self.sessions() as session:
            post = await company_post(session, company_id=company_id, post_id=post_id)
            if post is None:
                raise NotFoundError("not_found", "scheduled post not found")
            return PostSnapshot(post=post, targets=await post_targets(session, post.id))

    async def page(
        self,
        *,
        company_id: uuid.UUID,
        status: str | None,
        platform: str | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> PostPage:
        """Newest first; one more row than asked tells whether another page exists."""
        wanted = normalized_platform(platform, field="platform") if platform else None
        async with self.sessions() as session:
            posts = list(
                await session.scalars(
                    company_posts_page(
                        company_id=company_id,
                        status=status,
                        platform=wanted,
                        before=before,
                        limit=limit + 1,
                    )
                )
            )
            page = posts[:limit]
            targets = await targets_of_posts(session, [p.id for p in page])
        more = len(posts) > limit
        return PostPage(
            items=[PostSnapshot(post=p, targets=targets[p.id]) for p in page],
            next_before=(page[-1].created_at, page[-1].id) if more else None,
        )
