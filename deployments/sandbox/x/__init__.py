"""X API v2 on `/x`: tweets, the user timeline used to reconcile, metrics, media upload and
OAuth 2.0, one module each (`tweets`, `media`, `oauth2`) over the answers they share
(`answers`: problem bodies, rate-limit headers, scopes, faults)."""

from fastapi import APIRouter

from deployments.sandbox.x import media, oauth2, tweets

router = APIRouter(prefix="/x", tags=["x"])
for _part in (tweets, media, oauth2):
    router.include_router(_part.router)
