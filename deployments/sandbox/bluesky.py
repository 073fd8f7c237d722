"""A Bluesky PDS on `/bluesky`: XRPC sessions, records (caller-chosen rkeys), blobs, getPosts.

Behaviours and where they come from (repo bluesky-social/atproto unless said otherwise):
- Auth errors are 400s named by `error`: an unverifiable token answers 400 `InvalidToken`
  "Token could not be verified", an expired one 400 `ExpiredToken` "Token has expired"
  (packages/pds/src/auth-verifier.ts, InvalidRequestError); only a missing token (401
  `AuthMissing`) or a taken-down account (401 `AccountTakedown`) are 401s (AuthRequiredError).
  A revoked or spent refreshJwt answers refreshSession with 400 `ExpiredToken` "Token has been
  revoked" (packages/pds/src/api/com/atproto/server/refreshSession.ts).
- Creating a record under a key that already exists answers 500 `InternalServerError`
  (atproto#3718, indigo#873); `getRecord` needs no auth and answers 400 `RecordNotFound`
  (lexicons/com/atproto/repo/getRecord.json).
- Post records: text ≤ 300 graphemes and ≤ 3000 bytes; `facets[].index` are UTF-8 byte ranges
  (`byteStart` inclusive, `byteEnd` exclusive) with `#link`/`#mention`/`#tag` features
  (lexicons/app/bsky/feed/post.json, app/bsky/richtext/facet.json); a facet outside the text is
  refused as an invalid record.
- `com.atproto.identity.resolveHandle` answers `{did}` for a handle (compared lower-cased, as
  the PDS normalises it), or 400 `InvalidRequest` "Unable to resolve handle": the PDS throws
  `InvalidRequestError('Unable to resolve handle')` without naming the lexicon's
  `HandleNotFound` (packages/pds/src/api/com/atproto/identity/resolveHandle.ts).
- `com.atproto.server.createSession` takes `identifier` (handle or DID, lower-cased as the PDS
  does) and `password`: the app password a sandbox consent gave (`appPassword`) or the
  account's `extra["password"]`. Anything else answers 401 `AuthenticationRequired` "Invalid
  identifier or password" (AuthRequiredError, packages/pds/src/api/com/atproto/server/
  createSession.ts). The answer carries `did`, `didDoc`, `handle`, `accessJwt`, `refreshJwt`
  and `active`; the JWTs are shaped as the PDS makes them (packages/pds/src/account-manager/
  helpers/auth.ts: access `scope` com.atproto.appPass for an app password, `sub` the DID, 120
  minutes; refresh `scope` com.atproto.refresh with a `jti`, 90 days), `exp` on the sandbox
  clock, unsigned for any real verifier.
- A PLC directory stand-in on `/bluesky/plc` (`plc_router`): `GET /bluesky/plc/{did}` answers the
  DID document as web.plc.directory serves it (did-method-plc packages/server/src/routes.ts,
  `application/did+ld+json`; the document's shape per atproto.com/specs/did: `@context`, `id`,
  `alsoKnownAs` `at://<handle>`, a `Multikey` verification method `#atproto` and the
  `#atproto_pds` `AtprotoPersonalDataServer` service) whose PDS endpoint is this sandbox's
  `/bluesky` base, built from the request; an unknown DID answers 404 `{"message": "DID not
  registered: <did>"}` (routes.ts and error.ts of the same package).
- Rate limits: `ratelimit-reset` in epoch seconds (packages/xrpc-server/src/
  rate-limiter-http.ts).
- `com.atproto.server.getServiceAuth` (lexicons/com/atproto/server/getServiceAuth.json) mints a
  service token for the caller's DID: `aud` must be a DID, `exp` (epoch seconds, default 60 s
  ahead) may not be past, more than an hour ahead, or more than a minute ahead without an `lxm`
  (400 `BadExpiration`, packages/pds/src/api/com/atproto/server/getServiceAuth.ts). The token
  is a JWT shaped as createServiceJwt makes it (`iss`, `aud`, `exp`, `lxm`, `jti`), unsigned
  for any real verifier: the sandbox's video service (`bluesky_video.py`) checks it against
  what was minted here.
- `com.atproto.server.getSession` (lexicons/com/atproto/server/getSession.json) answers the
  account's `did`, `handle`, `didDoc`, `emailConfirmed` (the account's `extra.emailConfirmed`,
  default true) and `active`. An account whose `extra.pdsEndpoint` names another URL plays one
  behind the entryway: its DID document names that URL as its PDS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from deployments.sandbox import oauth
from deployments.sandbox.core import (
    Fault,
    SandboxAccount,
    SandboxState,
    bearer_token,
    fault_delay,
    get_sandbox,
    post_age_seconds,
    pseudo_count,
)
from deployments.sandbox.counting import TID_RE, bluesky_text_problem, new_tid

PLATFORM = "bluesky"
COLLECTION = "app.bsky.feed.post"
WINDOW_LIMIT = 3000
GET_POSTS_MAX = 25

router = APIRouter(prefix="/bluesky/xrpc", tags=["bluesky"])


def fake_cid(data: bytes) -> str:
    """A CIDv1-looking string (dag-cbor, sha-256) derived from the content."""
    digest = base64.b32encode(hashlib.sha256(data).digest()).decode().lower().rstrip("=")
    return f"bafyrei{digest}"


def _answer(
    state: SandboxState, status: int, body: Any, *, fault: Fault | None = None
) -> JSONResponse:
    limit, remaining, reset = state.rate_window(PLATFORM, limit=WINDOW_LIMIT, window_seconds=300)
    if fault is not None and fault.kind == "rate_limit":
        remaining, reset = 0, int(state.now().timestamp()) + fault.retry_after
    headers = {
        "ratelimit-limit": str(limit),
        "ratelimit-remaining": str(remaining),
        "ratelimit-reset": str(reset),
        "ratelimit-policy": f"{limit};w=300",
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _xrpc_error(state: SandboxState, status: int, error: str, message: str) -> JSONResponse:
    return _answer(state, status, {"error": error, "message": message})


async def _authenticate(
    state: SandboxState, request: Request, operation: str
) -> tuple[JSONResponse | None, SandboxAccount | None, Fault | None]:
    """Auth plus the shared faults; returns (early answer, account, publish-only fault)."""
    token = bearer_token(request)
    if not token:
        return _xrpc_error(state, 401, "AuthMissing", "Authentication Required"), None, None
    account = state.account_for_token(PLATFORM, token)
    if account is None:
        return _xrpc_error(state, 400, "InvalidToken", "Token could not be verified"), None, None
    async with state.lock:
        fault = state.faults.take(PLATFORM, operation)
        if fault is not None and fault.kind == "revoked_token":
            state.revoke_account(PLATFORM, account.external_id)
    if fault is None:
        return None, account, None
    if fault.kind == "expired_token":
        return _xrpc_error(state, 400, "ExpiredToken", "Token has expired"), None, None
    if fault.kind == "revoked_token":
        message = "Token could not be verified"
        return _xrpc_error(state, 400, "InvalidToken", message), None, None
    if fault.kind == "rate_limit":
        body = {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
        return _answer(state, 429, body, fault=fault), None, None
    if fault.kind == "server_error":
        return _xrpc_error(state, 502, "UpstreamFailure", "Upstream Failure"), None, None
    if fault.kind == "invalid_content":
        message = "Invalid app.bsky.feed.post record: Record/text is not allowed"
        return _xrpc_error(state, 400, "InvalidRequest", message), None, None
    if fault.kind == "timeout_before_accept":
        await fault_delay(fault)
        return _xrpc_error(state, 504, "UpstreamTimeout", "Upstream Timeout"), None, None
    return None, account, fault


FACET_FEATURES = {
    "app.bsky.richtext.facet#link": "uri",
    "app.bsky.richtext.facet#mention": "did",
    "app.bsky.richtext.facet#tag": "tag",
}


def _facet_problem(text: str, facets: Any) -> str | None:
    """Why `facets` is not a valid list for `text` (byte ranges, feature shapes), or None."""
    if facets is None:
        return None
    if not isinstance(facets, list):
        return "Record/facets must be an array"
    size = len(text.encode())
    for number, facet in enumerate(facets):
        index = facet.get("index") if isinstance(facet, dict) else None
        start = index.get("byteStart") if isinstance(index, dict) else None
        end = index.get("byteEnd") if isinstance(index, dict) else None
        if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end <= size:
            return f"Record/facets/{number}/index must be a byte range within the text"
        for feature in facet.get("features") or []:
            field = FACET_FEATURES.get(str(feature.get("$type")))
            if field is None or not feature.get(field):
                return f"Record/facets/{number}/features has an invalid feature"
    return None


#: Embed blobs as the lexicons define them (bluesky-social/atproto lexicons/app/bsky/embed/
#: images.json: up to 4 images, blob accept image/*, maxSize 2000000; embed/video.json: one
#: `video` blob, accept video/mp4, maxSize 300000000). A record may reference only a blob the
#: repo holds: one it uploaded (uploadBlob stores it "untethered" until a record references it:
#: atproto packages/pds repo/blobs.ts `addUntetheredBlob`), or the processed video the video
#: service stored for it (`bluesky_video.py`); the error text for an unknown blob here is the
#: sandbox's own (not verified against a live PDS).
IMAGE_BLOB_MAX = 2_000_000
VIDEO_BLOB_MAX = 300_000_000
EMBED_IMAGES_MAX = 4


def _blob_problem(state: SandboxState, blob: Any, *, where: str, accept: str, most: int) -> str:
    if not isinstance(blob, dict) or blob.get("$type") != "blob":
        return f"{where} should be a blob ref"
    stored = (
        state.platform_extra(PLATFORM).get("blobs", {}).get((blob.get("ref") or {}).get("$link"))
    )
    if stored is None:
        return f"Could not find blob: {(blob.get('ref') or {}).get('$link')}"
    mime = str(stored["mimeType"])
    if not (mime.startswith(accept[:-1]) if accept.endswith("*") else mime == accept):
        return f"{where} has the wrong mime type {mime}, accepts {accept}"
    if int(stored["size"]) > most:
        return f"{where} is too big ({stored['size']} > {most} bytes)"
    return ""


def _embed_problem(state: SandboxState, embed: Any) -> str | None:
    if embed is None:
        return None
    kind = embed.get("$type") if isinstance(embed, dict) else None
    if kind == "app.bsky.embed.images":
        images = embed.get("images") or []
        if not 1 <= len(images) <= EMBED_IMAGES_MAX:
            return f"Record/embed/images must have 1 to {EMBED_IMAGES_MAX} items"
        for number, image in enumerate(images):
            if "alt" not in image:
                return f'Record/embed/images/{number} must have the property "alt"'
            where = f"Record/embed/images/{number}/image"
            problem = _blob_problem(
                state, image.get("image"), where=where, accept="image/*", most=IMAGE_BLOB_MAX
            )
            if problem:
                return problem
        return None
    if kind == "app.bsky.embed.video":
        problem = _blob_problem(
            state,
            embed.get("video"),
            where="Record/embed/video",
            accept="video/mp4",
            most=VIDEO_BLOB_MAX,
        )
        return problem or None
    return f"Record/embed has an unsupported type {kind}"


def facet_texts(post: dict[str, Any]) -> list[tuple[str, str]]:
    """(feature type, the text it covers) of a stored post: slices by UTF-8 byte offsets."""
    data = str(post["text"]).encode()
    found = []
    for facet in post["record"].get("facets") or []:
        index = facet["index"]
        covered = data[index["byteStart"] : index["byteEnd"]].decode()
        for feature in facet["features"]:
            found.append((feature["$type"].rsplit("#", 1)[-1], covered))
    return found


def _uri(did: str, rkey: str) -> str:
    return f"at://{did}/{COLLECTION}/{rkey}"


def _find(state: SandboxState, did: str, rkey: str) -> dict[str, Any] | None:
    posts = state.find_posts(PLATFORM, account=did, rkey=rkey)
    return posts[0] if posts else None


@router.post("/com.atproto.repo.createRecord")
async def create_record(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, fault = await _authenticate(state, request, "publish")
    if early is not None:
        return early
    assert account is not None
    body = await request.json()
    repo, record = body.get("repo"), body.get("record") or {}
    if repo not in (account.external_id, account.handle):
        return _xrpc_error(state, 401, "AuthRequired", "Input/repo must be the authenticated user")
    if body.get("collection") != COLLECTION:
        return _xrpc_error(state, 400, "InvalidRequest", "sandbox only stores app.bsky.feed.post")
    text = str(record.get("text", ""))
    problem = bluesky_text_problem(text)
    if problem is not None:
        return _xrpc_error(state, 400, "InvalidRequest", f"Invalid {COLLECTION} record: {problem}")
    problem = _facet_problem(text, record.get("facets"))
    if problem is not None:
        return _xrpc_error(state, 400, "InvalidRequest", f"Invalid {COLLECTION} record: {problem}")
    if "createdAt" not in record:
        message = f'Invalid {COLLECTION} record: Record must have the property "createdAt"'
        return _xrpc_error(state, 400, "InvalidRequest", message)
    problem = _embed_problem(state, record.get("embed"))
    if problem is not None:
        return _xrpc_error(state, 400, "InvalidRequest", f"Invalid {COLLECTION} record: {problem}")
    rkey = body.get("rkey")
    if rkey is not None and not TID_RE.match(str(rkey)):
        return _xrpc_error(state, 400, "InvalidRequest", f"Invalid record key: {rkey}")
    if fault is not None and fault.kind == "duplicate":
        return _xrpc_error(state, 500, "InternalServerError", "Internal Server Error")
    async with state.lock:
        rkey = str(rkey or new_tid())
        if _find(state, account.external_id, rkey) is not None:
            return _xrpc_error(state, 500, "InternalServerError", "Internal Server Error")
        uri = _uri(account.external_id, rkey)
        cid = fake_cid(repr(sorted(record.items())).encode() + uri.encode())
        state.record_post(
            PLATFORM,
            {
                "id": uri,
                "uri": uri,
                "cid": cid,
                "rkey": rkey,
                "text": text,
                "record": record,
                "account": account.external_id,
                "handle": account.handle,
                "url": f"https://bsky.app/profile/{account.handle}/post/{rkey}",
            },
        )
    if fault is not None and fault.kind == "timeout_after_accept":
        await fault_delay(fault)
    commit = {"cid": fake_cid(cid.encode()), "rev": new_tid()}
    return _answer(
        state, 200, {"uri": uri, "cid": cid, "commit": commit, "validationStatus": "valid"}
    )


@router.get("/com.atproto.repo.getRecord")
async def get_record(
    repo: str, collection: str, rkey: str, state: SandboxState = Depends(get_sandbox)
) -> Any:
    async with state.lock:
        fault = state.faults.take(PLATFORM, "lookup")
    if fault is not None and fault.kind == "server_error":
        return _xrpc_error(state, 502, "UpstreamFailure", "Upstream Failure")
    if fault is not None and fault.kind == "rate_limit":
        body = {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
        return _answer(state, 429, body, fault=fault)
    did = repo
    for account in state.accounts.get(PLATFORM, {}).values():
        if repo == account.handle:
            did = account.external_id
    post = _find(state, did, rkey) if collection == COLLECTION else None
    if post is None:
        message = f"Could not locate record: {_uri(did, rkey)}"
        return _xrpc_error(state, 400, "RecordNotFound", message)
    return _answer(state, 200, {"uri": post["uri"], "cid": post["cid"], "value": post["record"]})


@router.post("/com.atproto.repo.uploadBlob")
async def upload_blob(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, _, _ = await _authenticate(state, request, "media")
    if early is not None:
        return early
    data = await request.body()
    mime = request.headers.get("content-type", "application/octet-stream")
    blob = {"$type": "blob", "ref": {"$link": fake_cid(data)}, "mimeType": mime, "size": len(data)}
    async with state.lock:
        store_blob(state, blob)
    return _answer(state, 200, {"blob": blob})


@router.get("/app.bsky.feed.getPosts")
async def get_posts(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    async with state.lock:
        fault = state.faults.take(PLATFORM, "metrics")
    if fault is not None and fault.kind == "rate_limit":
        body = {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
        return _answer(state, 429, body, fault=fault)
    uris = request.query_params.getlist("uris")
    if len(uris) > GET_POSTS_MAX:
        message = f"Error: uris must not have more than {GET_POSTS_MAX} elements"
        return _xrpc_error(state, 400, "InvalidRequest", message)
    by_uri = {p["uri"]: p for p in state.posts.get(PLATFORM, [])}
    posts = []
    for uri in uris:
        post = by_uri.get(uri)
        if post is None:
            continue
        age = post_age_seconds(state, post)
        posts.append(
            {
                "uri": uri,
                "cid": post["cid"],
                "author": {"did": post["account"], "handle": post["handle"]},
                "record": post["record"],
                "indexedAt": post["created_at"],
                **{
                    name: pseudo_count(uri, name, age_seconds=age)
                    for name in ("likeCount", "repostCount", "replyCount", "quoteCount")
                },
            }
        )
    return _answer(state, 200, {"posts": posts})


@router.post("/com.atproto.server.refreshSession")
async def refresh_session(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Bearer refreshJwt → a new pair; the old refreshJwt is revoked (rotation)."""
    async with state.lock:
        fault = state.faults.take(PLATFORM, "refresh")
        if fault is not None and fault.kind == "server_error":
            return _xrpc_error(state, 502, "UpstreamFailure", "Upstream Failure")
        issued = state.refresh(PLATFORM, bearer_token(request), rotate=True)
    if issued is None:
        return _xrpc_error(state, 400, "ExpiredToken", "Token has been revoked")
    account, access, refresh = issued
    body = {
        "accessJwt": access,
        "refreshJwt": refresh,
        "handle": account.handle,
        "did": account.external_id,
        "active": True,
    }
    return _answer(state, 200, body)


@router.get("/com.atproto.identity.resolveHandle")
async def resolve_handle(handle: str, state: SandboxState = Depends(get_sandbox)) -> Any:
    wanted = handle.strip().lower()
    for account in state.accounts.get(PLATFORM, {}).values():
        if account.handle.lower() == wanted:
            return _answer(state, 200, {"did": account.external_id})
    for known, did in (state.platform_extra(PLATFORM).get("handles") or {}).items():
        if known.lower() == wanted:
            return _answer(state, 200, {"did": did})
    return _xrpc_error(state, 400, "InvalidRequest", "Unable to resolve handle")


#: Session JWT lifetimes of the PDS (account-manager/helpers/auth.ts: '120mins', '90days').
ACCESS_JWT_LIFETIME = timedelta(minutes=120)
REFRESH_JWT_LIFETIME = timedelta(days=90)


def _b64url(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _session_jwt(state: SandboxState, did: str, *, scope: str, lifetime: timedelta) -> str:
    """A JWT shaped as the PDS signs it (HS256 with its secret), with a random signature: only
    the sandbox's own token table makes it valid."""
    now = state.now()
    claims: dict[str, Any] = {
        "scope": scope,
        "sub": did,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    if scope == "com.atproto.refresh":
        claims["jti"] = secrets.token_urlsafe(32)
    header = {"typ": "JWT", "alg": "HS256"}
    return f"{_b64url(header)}.{_b64url(claims)}.{_b64url(secrets.token_bytes(32))}"


def pds_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/bluesky"


def pds_endpoint(request: Request, account: SandboxAccount) -> str:
    """The PDS the account's DID document names: this sandbox, unless `extra.pdsEndpoint`."""
    named = account.extra.get("pdsEndpoint")
    return str(named) if isinstance(named, str) and named else pds_base(request)


def did_document(request: Request, account: SandboxAccount) -> dict[str, Any]:
    """The account's DID document (atproto.com/specs/did), naming this sandbox as its PDS."""
    did = account.external_id
    key = hashlib.sha256(did.encode()).hexdigest()[:44]
    return {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
            "https://w3id.org/security/suites/secp256k1-2019/v1",
        ],
        "id": did,
        "alsoKnownAs": [f"at://{account.handle}"],
        "verificationMethod": [
            {
                "id": f"{did}#atproto",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": f"zQ3sh{key}",
            }
        ],
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": pds_endpoint(request, account),
            }
        ],
    }


def _password_matches(state: SandboxState, account: SandboxAccount, password: str) -> bool:
    candidates = (
        account.extra.get("password"),
        oauth.app_password(state, PLATFORM, account.external_id),
    )
    return any(
        isinstance(known, str) and known and secrets.compare_digest(known, password)
        for known in candidates
    )


@router.post("/com.atproto.server.createSession")
async def create_session(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Login with a handle or DID and an app password (consent `appPassword` or the account's
    `extra.password`)."""
    body = await request.json()
    identifier = str(body.get("identifier") or "").strip().lower()
    password = str(body.get("password") or "")
    async with state.lock:
        for account in state.accounts.get(PLATFORM, {}).values():
            if identifier not in (account.handle.lower(), account.external_id.lower()):
                continue
            if not password or not _password_matches(state, account, password):
                break
            did = account.external_id
            access = _session_jwt(
                state, did, scope="com.atproto.appPass", lifetime=ACCESS_JWT_LIFETIME
            )
            refresh = _session_jwt(
                state, did, scope="com.atproto.refresh", lifetime=REFRESH_JWT_LIFETIME
            )
            state.access_tokens.setdefault(PLATFORM, {})[access] = did
            state.refresh_tokens.setdefault(PLATFORM, {})[refresh] = did
            session = {
                "did": did,
                "didDoc": did_document(request, account),
                "handle": account.handle,
                "accessJwt": access,
                "refreshJwt": refresh,
                "active": True,
            }
            return _answer(state, 200, session)
    return _xrpc_error(state, 401, "AuthenticationRequired", "Invalid identifier or password")


@router.get("/com.atproto.server.getSession")
async def get_session(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, _ = await _authenticate(state, request, "session")
    if early is not None:
        return early
    assert account is not None
    body = {
        "did": account.external_id,
        "handle": account.handle,
        "didDoc": did_document(request, account),
        "emailConfirmed": email_confirmed(account),
        "active": True,
    }
    return _answer(state, 200, body)


def email_confirmed(account: SandboxAccount) -> bool:
    return account.extra.get("emailConfirmed", True) is not False


#: getServiceAuth's bounds on `exp` (packages/pds/src/api/com/atproto/server/getServiceAuth.ts).
SERVICE_TOKEN_DEFAULT = timedelta(seconds=60)
SERVICE_TOKEN_MAX = timedelta(hours=1)
SERVICE_TOKEN_MAX_WITHOUT_LXM = timedelta(minutes=1)


@router.get("/com.atproto.server.getServiceAuth")
async def get_service_auth(
    request: Request,
    aud: str,
    exp: int | None = None,
    lxm: str | None = None,
    state: SandboxState = Depends(get_sandbox),
) -> Any:
    early, account, _ = await _authenticate(state, request, "service_auth")
    if early is not None:
        return early
    assert account is not None
    if not aud.startswith(("did:plc:", "did:web:")):
        message = "aud must be a valid atproto DID or did#serviceId reference"
        return _xrpc_error(state, 400, "InvalidRequest", message)
    now = state.now()
    if exp is not None:
        ahead = timedelta(seconds=exp - now.timestamp())
        problem = None
        if ahead < timedelta():
            problem = "expiration is in past"
        elif ahead > SERVICE_TOKEN_MAX:
            problem = "cannot request a token with an expiration more than an hour in the future"
        elif not lxm and ahead > SERVICE_TOKEN_MAX_WITHOUT_LXM:
            problem = (
                "cannot request a method-less token with an expiration more than a minute in "
                "the future"
            )
        if problem is not None:
            return _xrpc_error(state, 400, "BadExpiration", problem)
    expires = exp if exp is not None else int((now + SERVICE_TOKEN_DEFAULT).timestamp())
    claims: dict[str, Any] = {
        "iat": int(now.timestamp()),
        "iss": account.external_id,
        "aud": aud,
        "exp": expires,
        "jti": secrets.token_hex(16),
    }
    if lxm:
        claims["lxm"] = lxm
    header = {"typ": "JWT", "alg": "ES256K"}
    token = f"{_b64url(header)}.{_b64url(claims)}.{_b64url(secrets.token_bytes(64))}"
    async with state.lock:
        state.platform_extra(PLATFORM).setdefault("service_tokens", {})[token] = claims
    return _answer(state, 200, {"token": token})


def service_token_claims(state: SandboxState, token: str | None) -> dict[str, Any] | None:
    """The claims of a service token this PDS minted, or None."""
    if not token:
        return None
    claims = state.platform_extra(PLATFORM).get("service_tokens", {}).get(token)
    return dict(claims) if claims is not None else None


def store_blob(state: SandboxState, blob: dict[str, Any]) -> None:
    """Keep a blob in the repo's store (call under the state lock)."""
    state.platform_extra(PLATFORM).setdefault("blobs", {})[blob["ref"]["$link"]] = blob


plc_router = APIRouter(prefix="/bluesky/plc", tags=["bluesky plc directory"])
extra_routers: tuple[APIRouter, ...] = (plc_router,)


@plc_router.get("/{did}")
async def plc_document(
    did: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    """web.plc.directory's `GET /:did`: the DID document, or 404 for a DID it never saw."""
    account = state.account(PLATFORM, did)
    if account is None:
        return JSONResponse({"message": f"DID not registered: {did}"}, status_code=404)
    return JSONResponse(did_document(request, account), media_type="application/did+ld+json")
