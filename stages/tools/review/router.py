"""The review's HTTP routes, all under /review, as a FastAPI ``APIRouter`` that any app mounts.

    GET  /review                  the page (static/index.html, review.js, review.css: no external assets)
    GET  /review/api/state        filter, folder, next step, counts per class, held-out scores
    GET  /review/api/queue/{cls}  the class's crawled images, least sure first
    GET  /review/api/image/{id}   one crawled image (id: its sha256)
    POST /review/api/decisions    {"id": sha256, "decision": "keep" | "reject" | "none"}

Every refusal is a 4xx JSON ``{"detail": "<what was wrong>"}``. Routes are plain ``def``:
FastAPI runs them on its worker threads, so scoring or copying never blocks the event loop.
"""
from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from stages.tools.review.decisions import ReviewError
from stages.tools.review.session import ReviewSession

STATIC = Path(__file__).parent / "static"
ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}
MAX_BODY = 4096     # a decision is ~100 bytes of JSON


def refused(err: ReviewError) -> HTTPException:
    return HTTPException(status_code=err.status, detail=str(err))


def review_router(repo_root: str | Path, params_path: str | Path = "params.yaml", **options) -> APIRouter:
    """Routes for reviewing the crawl in ``repo_root``; ``options`` as ``ReviewSession`` takes them
    (filter_name, folder, raw_manifest, models, metrics, rejected, device)."""
    return routes_for(ReviewSession(repo_root, params_path, **options))


def routes_for(session: ReviewSession) -> APIRouter:
    router = APIRouter(prefix="/review", tags=["review"])

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(), headers={"Cache-Control": "no-cache"})

    @router.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:    # a fixed list: no path from the request reaches the disk
            raise HTTPException(status_code=404, detail=f"no asset {name[:80]!r}")
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    @router.get("/api/state")
    def state() -> dict:
        return session.state()

    @router.get("/api/queue/{cls}")
    def queue(cls: str) -> dict:
        try:
            return session.queue(cls)
        except ReviewError as err:
            raise refused(err) from None

    @router.get("/api/image/{item_id}")
    def image(item_id: str) -> Response:
        try:
            data, suffix = session.image(item_id)   # a pack member: bytes, not a file to send
        except ReviewError as err:
            raise refused(err) from None
        return Response(data, media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=3600"})

    @router.post("/api/decisions")
    async def decide(request: Request) -> dict:
        body = await decision_body(request)
        try:
            return await run_in_threadpool(session.decide, body.get("id"), body.get("decision"))
        except ReviewError as err:
            raise refused(err) from None

    return router


async def decision_body(request: Request) -> dict:
    """The JSON object of a decision request, or a 4xx saying what is wrong with it."""
    raw = b""
    async for chunk in request.stream():    # read no more than MAX_BODY, whatever Content-Length says
        raw += chunk
        if len(raw) > MAX_BODY:
            raise HTTPException(status_code=413, detail=f"a decision is a small JSON object (over {MAX_BODY} bytes)")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(status_code=400,
                            detail='body must be JSON: {"id": "<sha256>", "decision": "keep"}') from None
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail='body must be a JSON object: {"id": ..., "decision": ...}')
    return body

