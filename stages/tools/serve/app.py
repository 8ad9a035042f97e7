"""The FastAPI app: routes, the JSON error shape, and the decode -> batch -> answer path.

``create_app(backend, ...)`` builds it; ``routers`` are included as they are (the hook for
pages served by the same server, e.g. ``kiln review``'s APIRouter).
"""
from __future__ import annotations

import asyncio
import base64
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stages.common.errors import StageError
from stages.tools.serve.batcher import Batcher
from stages.tools.serve.limits import ApiError, Limits, LimitsMiddleware, check_pixels
from stages.tools.serve.schemas import BatchResponse, ClassifyResponse, ErrorResponse

ENDPOINTS = "POST /classify, POST /classify/batch, GET /health, GET /metadata, GET /docs"
HOW_TO_SEND = "send the image as a multipart form field 'img' (curl -F img=@photo.jpg URL)"
ERRORS = {code: {"model": ErrorResponse} for code in (400, 408, 413, 503)}


def upload_name(upload: UploadFile | None, fallback: str = "img") -> str:
    name = (upload.filename if upload is not None else None) or fallback
    return "".join(ch for ch in name if ch.isprintable())[:120] or fallback


class Predictor:
    """Upload bytes -> predictions: header check, decode on a thread pool, the shared batcher."""

    def __init__(self, backend, limits: Limits, batcher: Batcher, decode_threads: int):
        self.backend, self.limits, self.batcher = backend, limits, batcher
        self.decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        check_pixels(data, name, self.limits.max_pixels)
        try:   # the one preset: the view evaluate and kiln classify take (core/preset.py)
            return self.backend.preset.pixels(data, self.limits.max_pixels, name)
        except StageError as err:     # corrupt pixel data after a good header
            raise ApiError(400, str(err)) from None

    async def prepare(self, data: bytes, name: str) -> np.ndarray:
        if not data:
            raise ApiError(400, f"{name}: empty upload; {HOW_TO_SEND}")
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, self._decode, data, name)

    async def predictions(self, image: np.ndarray, topk: int) -> list[dict]:
        probs = await self.batcher.submit(image)
        order = np.argsort(-probs, kind="stable")[:topk]
        return [{"label": self.backend.classes[i], "probability": round(float(probs[i]), 6)} for i in order]

    async def cam(self, image: np.ndarray) -> dict:
        if not hasattr(self.backend, "cam_png"):
            raise ApiError(400, f"cam=true needs --backend torch (Grad-CAM needs gradients; this server "
                                f"runs --backend {self.backend.name})")
        index, png = await self.batcher.run_exclusive(self.backend.cam_png, image)
        return {"label": self.backend.classes[index], "png_base64": base64.b64encode(png).decode()}


def create_app(backend, limits: Limits = Limits(), *, max_batch: int = 32, max_wait_ms: float = 2.0,
               decode_threads: int | None = None, routers=()) -> FastAPI:
    """The server's app. ``routers``: APIRouters included as they are (e.g. the review page)."""
    threads = decode_threads or len(os.sched_getaffinity(0))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(backend.probabilities, max_batch, max_wait_ms / 1000)
        batcher.start()
        app.state.predictor = Predictor(backend, limits, batcher, threads)
        yield
        await batcher.stop()
        app.state.predictor.decode_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="kiln serve", lifespan=lifespan, version="1",
                  description="Classify images with a trained kiln classifier. " + HOW_TO_SEND + ".")
    app.state.info = {**backend.info, "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
                      "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                                 "max_files": limits.max_files, "read_timeout_s": limits.read_timeout,
                                 "body_timeout_s": limits.body_timeout}}
    add_routes(app, limits)
    add_error_handlers(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(LimitsMiddleware, limits=limits)
    return app


def add_routes(app: FastAPI, limits: Limits) -> None:
    @app.post("/classify", response_model=ClassifyResponse, response_model_exclude_none=True,
              responses=ERRORS)
    async def classify(request: Request, img: UploadFile | None = File(None, description="the image"),
                       topk: int = Query(3, ge=1, description="how many classes to answer, most probable first"),
                       cam: bool = Query(False, description="add a Grad-CAM overlay (base64 PNG)")):
        """One image: a multipart field ``img`` (the decathlon API), or the raw body with an image Content-Type."""
        clf: Predictor = request.app.state.predictor
        data, name = await _image_bytes(request, img)
        image = await clf.prepare(data, name)
        answer = {"success": True, "predictions": await clf.predictions(image, topk)}
        if cam:
            answer["cam"] = await clf.cam(image)
        return answer

    @app.post("/classify/batch", response_model=BatchResponse, response_model_exclude_none=True,
               responses=ERRORS)
    async def classify_batch(request: Request, img: list[UploadFile] = File(..., description="the images"),
                             topk: int = Query(3, ge=1)):
        """Several ``img`` fields: one result per file, in order; a bad file gets its own error entry."""
        if len(img) > limits.max_files:
            raise ApiError(413, f"{len(img)} files in one request; at most {limits.max_files} (--max-files)")
        clf: Predictor = request.app.state.predictor
        results = await asyncio.gather(*(_one_of_batch(clf, upload, topk) for upload in img))
        return {"success": True, "results": results}

    @app.get("/health")
    async def health(request: Request):
        """Liveness, the classes, and how many images each forward pass served on average."""
        batcher = request.app.state.predictor.batcher
        return {"success": True, "status": "ok", "backend": request.app.state.info["backend"],
                "classes": request.app.state.info["classes"], "forward_passes": batcher.batches,
                "images": batcher.images, "images_per_pass": round(batcher.images / max(batcher.batches, 1), 2)}

    @app.get("/metadata")
    async def metadata(request: Request):
        """Classes, architecture, input size, preprocessing, the checkpoint's training run, the limits."""
        return {"success": True, **request.app.state.info}


async def _image_bytes(request: Request, img: UploadFile | None) -> tuple[bytes, str]:
    if img is not None:
        return await img.read(), upload_name(img)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        raise ApiError(400, f"the form has no field 'img'; {HOW_TO_SEND}")
    if not (content_type.startswith("image/") or content_type.startswith("application/octet-stream")):
        raise ApiError(400, f"no image: {HOW_TO_SEND}, or as the raw body with Content-Type image/*")
    return await request.body(), "body"


async def _one_of_batch(clf: Predictor, upload: UploadFile, topk: int) -> dict:
    name = upload_name(upload)
    try:
        image = await clf.prepare(await upload.read(), name)
        return {"filename": name, "success": True, "predictions": await clf.predictions(image, topk)}
    except ApiError as err:
        return {"filename": name, "success": False, "status": err.status_code, "error": err.detail}


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"success": False, "error": _http_message(request, exc)},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"success": False, "error": "; ".join(map(_field_message, exc.errors()))},
                            status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):   # the traceback goes to the server log only
        return JSONResponse({"success": False, "error": "internal server error (logged on the server)"},
                            status_code=500)


def _http_message(request: Request, exc: StarletteHTTPException) -> str:
    if isinstance(exc, ApiError):
        return exc.detail
    path = request.url.path
    if exc.status_code == 404:
        return f"no such path: {path} (endpoints: {ENDPOINTS})"
    if exc.status_code == 405:
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "another method")
        return f"method {request.method} not allowed on {path} (use {allowed})"
    if exc.status_code == 400 and "parsing the body" in str(exc.detail):
        return f"the request body is not a readable multipart form; {HOW_TO_SEND}"
    return str(exc.detail)


def _field_message(error: dict) -> str:
    where, field = (list(error.get("loc", ())) + ["", ""])[:2]
    if where == "body" and error.get("type") == "missing":
        return f"the form has no field '{field}'; {HOW_TO_SEND}"
    if where == "body":
        return f"form field '{field}' must be a file upload; {HOW_TO_SEND}"
    return f"{where} parameter '{field}': {error.get('msg', 'invalid')}"
