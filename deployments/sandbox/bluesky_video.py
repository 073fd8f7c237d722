"""Bluesky's video service (video.bsky.app) on `/bluesky-video`: the stand-in the dev stack and
the tests pass as BLUESKY_VIDEO_SERVICE_URL.

What it implements, from the lexicons of bluesky-social/atproto (lexicons/app/bsky/video/
uploadVideo.json, getJobStatus.json, getUploadLimits.json, defs.json) and the tutorial
docs.bsky.app/docs/tutorials/video (bluesky-social/bsky-docs docs/tutorials/video.mdx):

- `GET app.bsky.video.getUploadLimits`: `canUpload`, `remainingDailyVideos`,
  `remainingDailyBytes`, and when it cannot, `error` and `message`. Its service token must be
  for this service (`aud` did:web:<this host>, as did:web:video.bsky.app is Bluesky's) and bound
  to `lxm` app.bsky.video.getUploadLimits (bluesky-social/social-app src/lib/media/video/
  upload.shared.ts). "Bluesky-hosted accounts need to have verified their account email before
  uploading video, and there are limits on the number of video posts which can be posted per
  day" (the tutorial): an account whose `extra.emailConfirmed` is false answers `canUpload`
  false with `error` "unconfirmed_email" (the name Bluesky answers, as reported in
  https://github.com/marcomaroni-github/twitter-to-bluesky/pull/106); over the day's videos or
  bytes, `message` "User has exceeded daily upload videos limit" / "... bytes limit" (the
  messages social-app's src/state/queries/video/video.ts knows). The other `message` texts
  and the default daily limits are the sandbox's own.
- `POST app.bsky.video.uploadVideo?did=&name=`, body `video/mp4`: its service token must be
  minted for the account's PDS (`aud` did:web:<the host of the DID document's `#atproto_pds`>),
  bound to `lxm` com.atproto.repo.uploadBlob ("a scope allowing uploadBlob", the tutorial), and
  issued by `did`. It answers `{"jobStatus": ...}` in JOB_STATE_CREATED. The same file again
  answers 409 with the earlier job's bare status, `error` "already_exists" and, once processed,
  its `blob` (the tutorial's note: "it will return the BlobRef of the previously processed
  video"). Over the limits it answers 400 with getUploadLimits' reason.
- `GET app.bsky.video.getJobStatus?jobId=`: no auth (Bluesky's app calls it without). The job
  moves through JOB_STATE_ENCODING (with `progress`), JOB_STATE_SCANNING, JOB_STATE_UPLOADING to
  JOB_STATE_COMPLETED with `blob` over the processing time set with `POST /_sandbox/processing`
  `{"platform": "bluesky", "seconds": N}` on the sandbox clock (`/_sandbox/clock`). At completion
  the processed blob is stored on the sandbox PDS, so `app.bsky.embed.video` may reference it.
  A failure queued with `POST /_sandbox/bluesky/video/failures` makes the next job(s) end
  JOB_STATE_FAILED with its `error`, `message` and `failureCode` (defs.json knownValues); a file
  over the embed's 300,000,000 bytes ends `pds_upload_unsupported_blob_size`.

Service tokens are checked as atproto's service-auth verifier does (packages/xrpc-server/src/
auth.ts `verifyJwt`): 401 `JwtExpired` "jwt expired", `BadJwtAudience` "jwt audience does not
match service did", `BadJwtLexiconMethod` "bad jwt lexicon method ("lxm"). must match: ...";
the video service's own code is not public, so its exact answers may differ. A token the
sandbox PDS never minted answers 401 `BadJwt` "poorly formatted jwt" as an unverifiable one.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from deployments.sandbox.bluesky import (
    PLATFORM,
    VIDEO_BLOB_MAX,
    email_confirmed,
    fake_cid,
    pds_endpoint,
    service_token_claims,
    store_blob,
)
from deployments.sandbox.core import SandboxAccount, SandboxState, bearer_token, get_sandbox

BASE_PATH = "/bluesky-video"
UPLOAD_LXM = "com.atproto.repo.uploadBlob"
LIMITS_LXM = "app.bsky.video.getUploadLimits"
COMPLETED = "JOB_STATE_COMPLETED"
FAILED = "JOB_STATE_FAILED"
#: The in-progress states a job shows, and the share of the processing time each lasts.
PHASES: tuple[tuple[str, float], ...] = (
    ("JOB_STATE_ENCODING", 0.6),
    ("JOB_STATE_SCANNING", 0.8),
    ("JOB_STATE_UPLOADING", 1.0),
)
#: The sandbox's daily limits unless `/_sandbox/bluesky/video/limits` sets others.
DEFAULT_DAILY_VIDEOS = 25
DEFAULT_DAILY_BYTES = 10_000_000_000

router = APIRouter(prefix=f"{BASE_PATH}/xrpc", tags=["bluesky video service"])
control_router = APIRouter(prefix="/_sandbox/bluesky/video", tags=["sandbox control"])


def _video(state: SandboxState) -> dict[str, Any]:
    """The service's state inside the Bluesky platform's scratch space (reset with it)."""
    return state.platform_extra(PLATFORM).setdefault("video_service", {"jobs": {}, "failures": []})


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def did_web(url: str) -> str:
    """did:web:<hostname> of a URL (no port), as Bluesky's app names a service's DID."""
    return f"did:web:{urlsplit(url).hostname or ''}"


def _own_did(request: Request) -> str:
    return did_web(str(request.base_url))


def _check_token(
    state: SandboxState, request: Request, *, audience: str, lxm: str
) -> tuple[dict[str, Any] | None, JSONResponse | None]:
    """The service token's claims, or the 401 the verifier answers."""
    token = bearer_token(request)
    if not token:
        return None, _error(401, "AuthMissing", "Authentication Required")
    claims = service_token_claims(state, token)
    if claims is None:
        return None, _error(401, "BadJwt", "poorly formatted jwt")
    if state.now().timestamp() > claims["exp"]:
        return None, _error(401, "JwtExpired", "jwt expired")
    if claims["aud"] != audience:
        return None, _error(401, "BadJwtAudience", "jwt audience does not match service did")
    if claims.get("lxm") != lxm:
        message = f'bad jwt lexicon method ("lxm"). must match: {lxm}'
        return None, _error(401, "BadJwtLexiconMethod", message)
    return claims, None


def _limits(state: SandboxState, account: SandboxAccount) -> dict[str, Any]:
    """getUploadLimits' answer for the account today (UTC day of the sandbox clock)."""
    video = _video(state)
    today = state.now().date()
    used = [
        job
        for job in video["jobs"].values()
        if job["did"] == account.external_id and job["created_at"].date() == today
    ]
    remaining_videos = video.get("daily_videos", DEFAULT_DAILY_VIDEOS) - len(used)
    remaining_bytes = video.get("daily_bytes", DEFAULT_DAILY_BYTES) - sum(j["size"] for j in used)
    answer: dict[str, Any] = {
        "canUpload": True,
        "remainingDailyVideos": max(remaining_videos, 0),
        "remainingDailyBytes": max(remaining_bytes, 0),
    }
    if not email_confirmed(account):
        answer |= {
            "canUpload": False,
            "error": "unconfirmed_email",
            "message": "Email must be verified to upload videos",
        }
    elif remaining_videos <= 0:
        answer |= {"canUpload": False, "message": "User has exceeded daily upload videos limit"}
    elif remaining_bytes <= 0:
        answer |= {"canUpload": False, "message": "User has exceeded daily upload bytes limit"}
    return answer


@router.get("/app.bsky.video.getUploadLimits")
async def get_upload_limits(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    claims, refused = _check_token(state, request, audience=_own_did(request), lxm=LIMITS_LXM)
    if refused is not None:
        return refused
    assert claims is not None
    account = state.account(PLATFORM, claims["iss"])
    if account is None:
        body = {"error": "profile_not_found", "message": "Profile not found", "canUpload": False}
        return JSONResponse(body, status_code=401)
    async with state.lock:
        return JSONResponse(_limits(state, account))


def _status(state: SandboxState, job: dict[str, Any]) -> dict[str, Any]:
    """The job's `#jobStatus` now; completing it stores the processed blob on the PDS."""
    status: dict[str, Any] = {"jobId": job["jobId"], "did": job["did"]}
    elapsed = (state.now() - job["created_at"]).total_seconds()
    seconds = float(state.platform_extra(PLATFORM).get("processing_seconds", 0.0))
    if not job["polled"]:
        # The answer to uploadVideo itself: the job has just been created.
        return status | {"state": "JOB_STATE_CREATED", "progress": 0}
    if elapsed < seconds:
        share = elapsed / seconds
        for phase, until in PHASES:
            if share < until:
                start = _start(phase)
                progress = int(100 * (share - start) / (until - start))
                return status | {"state": phase, "progress": max(0, min(progress, 99))}
    failure = job.get("failure")
    if failure is not None:
        return status | {"state": FAILED, **failure}
    if job.get("blob") is None:
        blob = {
            "$type": "blob",
            "ref": {"$link": fake_cid(b"processed:" + job["cid"].encode())},
            "mimeType": "video/mp4",
            "size": job["size"],
        }
        store_blob(state, blob)
        job["blob"] = blob
    return status | {"state": COMPLETED, "progress": 100, "blob": job["blob"]}


def _start(phase: str) -> float:
    """Where `phase` starts, as a share of the processing time."""
    previous = 0.0
    for name, until in PHASES:
        if name == phase:
            return previous
        previous = until
    return previous


@router.post("/app.bsky.video.uploadVideo")
async def upload_video(
    request: Request, did: str, name: str = "", state: SandboxState = Depends(get_sandbox)
) -> Any:
    account = state.account(PLATFORM, did)
    if account is None:
        return _error(400, "InvalidRequest", f"Unknown account: {did}")
    audience = did_web(pds_endpoint(request, account))
    claims, refused = _check_token(state, request, audience=audience, lxm=UPLOAD_LXM)
    if refused is not None:
        return refused
    assert claims is not None
    if claims["iss"] != did:
        return _error(401, "BadJwtIss", "jwt iss does not match did")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "video/mp4":
        return _error(400, "InvalidRequest", f"Wrong request encoding: {media_type or 'none'}")
    data = await request.body()
    cid = fake_cid(data)
    async with state.lock:
        video = _video(state)
        for job in video["jobs"].values():
            if job["did"] == did and job["cid"] == cid and job.get("failure") is None:
                # The same file again: the earlier job, bare, as the service answers it.
                job["polled"] = True
                body = _status(state, job) | {
                    "error": "already_exists",
                    "message": "Video already processed",
                }
                return JSONResponse(body, status_code=409)
        limits = _limits(state, account)
        if not limits["canUpload"]:
            reason = limits.get("message") or "cannot upload"
            return _error(400, limits.get("error") or "InvalidRequest", reason)
        failure = video["failures"].pop(0) if video["failures"] else None
        if failure is None and len(data) > VIDEO_BLOB_MAX:
            failure = {
                "error": "pds_upload_unsupported_blob_size",
                "failureCode": "pds_upload_unsupported_blob_size",
                "message": f"Video is larger than {VIDEO_BLOB_MAX} bytes",
            }
        job = {
            "jobId": secrets.token_hex(8),
            "did": did,
            "name": name,
            "cid": cid,
            "size": len(data),
            "created_at": state.now(),
            "polled": False,
            "failure": failure,
            "blob": None,
        }
        video["jobs"][job["jobId"]] = job
        status = _status(state, job)
        job["polled"] = True
    return JSONResponse({"jobStatus": status})


@router.get("/app.bsky.video.getJobStatus")
async def get_job_status(
    job_id: str = Query(alias="jobId"), state: SandboxState = Depends(get_sandbox)
) -> Any:
    async with state.lock:
        job = _video(state)["jobs"].get(job_id)
        if job is None:
            return _error(404, "NotFound", f"Job not found: {job_id}")
        return JSONResponse({"jobStatus": _status(state, job)})


# --------------------------------------------------------------------------- control
class _CamelModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class LimitsRequest(_CamelModel):
    daily_videos: int | None = Field(default=None, alias="dailyVideos", ge=0)
    daily_bytes: int | None = Field(default=None, alias="dailyBytes", ge=0)


class FailureRequest(_CamelModel):
    error: str = "encoding_failure"
    message: str = "Video encoding failed"
    failure_code: str = Field(default="encoding_failure", alias="failureCode")
    count: int = Field(default=1, ge=1)


@control_router.post("/limits")
async def set_limits(
    body: LimitsRequest, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The daily video count and bytes per account (reset with everything else)."""
    async with state.lock:
        video = _video(state)
        if body.daily_videos is not None:
            video["daily_videos"] = body.daily_videos
        if body.daily_bytes is not None:
            video["daily_bytes"] = body.daily_bytes
        return {
            "dailyVideos": video.get("daily_videos", DEFAULT_DAILY_VIDEOS),
            "dailyBytes": video.get("daily_bytes", DEFAULT_DAILY_BYTES),
        }


@control_router.post("/failures", status_code=201)
async def add_failure(
    body: FailureRequest, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The next `count` jobs end JOB_STATE_FAILED with this `error`, `message`, `failureCode`."""
    failure = {"error": body.error, "message": body.message, "failureCode": body.failure_code}
    async with state.lock:
        failures = _video(state)["failures"]
        failures.extend(dict(failure) for _ in range(body.count))
        return {"pending": len(failures)}


@control_router.get("/jobs")
async def list_jobs(state: SandboxState = Depends(get_sandbox)) -> dict[str, Any]:
    """Every job the service took (an upload each), oldest first."""
    async with state.lock:
        jobs = list(_video(state)["jobs"].values())
        return {
            "jobs": [
                {
                    "jobId": job["jobId"],
                    "did": job["did"],
                    "name": job["name"],
                    "size": job["size"],
                    "createdAt": _iso(job["created_at"]),
                    "failed": job.get("failure") is not None,
                }
                for job in jobs
            ]
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
