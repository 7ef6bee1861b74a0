"""The HTTP service: ``POST /v1/predict``, ``GET /health``, ``GET /v1/models``, OpenAPI docs at ``/docs``,
and the web page at ``/``.

Why FastAPI + uvicorn: FastAPI turns typed route functions into validated endpoints, parses
multipart uploads and writes the OpenAPI schema and docs page from the same code; uvicorn is its
standard ASGI server (pure Python with h11, nothing to compile). Both are the most used Python stack
for a JSON API. The docs page comes from ``fastapi-offline`` (the same Swagger UI, shipped in a wheel)
because FastAPI's own ``/docs`` loads its scripts from a CDN and the service must work offline.

One process serves everything: uvicorn runs the event loop (uploads, limits, answers) and the model
runs in :class:`~agekit.serving.pool.InferencePool`, a thread pool sized to the cores, so a single
queue bounds the whole server (uvicorn's own multi-process ``--workers`` would give each process its
own queue and model copies). The JSON of a prediction is the record ``agekit predict --out x.json``
writes per image (:func:`agekit.inference.writers.result_record`), with the server's ``queue`` and
``total`` seconds added to its ``timings``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Any, AsyncIterator

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException  # also routing's 404/405, not only FastAPI's

from .. import __version__
from ..data.imageio import ImageLoadError
from ..inference.writers import result_record
from .config import ServeConfig
from .defaults import RETRY_AFTER_S
from .pool import InferencePool, QueueFull
from .uploads import BodyLimit, image_error_status, one_line

__all__ = ["create_app", "STATIC_DIR", "RETRY_AFTER_S"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("agekit.serve")

# the page may load only what agekit serves itself (no CDN), and run no inline code
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class ErrorOut(BaseModel):
    """Every error of the API: one line, never a traceback."""

    error: str


def _error(status: int, msg: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(msg)}, status_code=status, headers=headers)


def upload_name(filename: str | None) -> str:
    """The client's file name without any folder part (it is only echoed back), at most 200 characters."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    return name[:200] or "upload"


def _example_record() -> dict[str, Any]:
    return {"name": "astronaut.jpg", "path": None, "width": 512, "height": 512,
            "faces": [{"box": [177.95, 56.81, 273.13, 177.15],
                       "landmarks": [[204.74, 100.83], [247.26, 103.27], [223.51, 129.39], [202.55, 138.08], [244.36, 140.32]],
                       "score": 0.9995, "age": 30.05, "gender": "female", "gender_prob": 0.939, "age_low": 19.82,
                       "age_high": 40.27}],
            "error": None, "timings": {"load": 0.004, "detect": 0.037, "align": 0.0005, "preprocess": 0.0007,
                                       "infer": 0.045, "postprocess": 0.0001, "queue": 0.0002, "total": 0.09},
            "status": "ok"}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "corrupt, truncated or empty image; no `file` field", 408: "the upload did not arrive within --upload-timeout",
            413: "upload over --max-bytes, or image over --max-pixels (decompression bomb)",
            415: "not an image (or a format that cannot be read)", 503: "queue full: retry after `Retry-After` seconds",
            504: "no answer within --timeout"}
    return {c: {"model": ErrorOut, "description": what[c]} for c in codes}


def model_info(pool: InferencePool) -> dict[str, Any]:
    """The served model as ``/v1/models`` lists it (file name only: server paths are not shown)."""
    p = pool.predictors[0]
    info = p.runner.info()
    cal = p.runner.calibration
    path = Path(str(p.model_path))
    return {"id": path.stem, "file": path.name, "model_name": p.cfg.name, "backend": p.backend_name,
            "task": p.cfg.task, "input_size": list(p.cfg.input_size),
            "interval_level": None if cal is None else round(1.0 - float(cal.get("alpha", 0.1)), 4),
            "calibration": cal, "val_mae": info.get("val_mae"), "training_test_metrics": info.get("training_test_metrics"),
            "flip_tta": p.flip_tta, "min_score": p.min_score}


class SecurityHeaders:
    """``nosniff`` and no referrer everywhere; the page and its files also get a strict CSP (own origin only)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(cfg: ServeConfig, pool: InferencePool | None = None) -> FastAPI:
    """The service for ``cfg``; ``pool`` defaults to one built from ``cfg`` (the model is loaded now, so a bad
    model file fails here rather than on the first request)."""
    pool = pool or InferencePool.load(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.close()

    app = FastAPIOffline(title="agekit", version=__version__, lifespan=lifespan, redoc_url=None,
                         description="Age and gender for every face in a photo. `POST /v1/predict` with a multipart "
                                     "`file`; errors are `{\"error\": \"...\"}`. The web page is at `/`.")
    app.state.pool, app.state.cfg = pool, cfg
    app.add_middleware(BodyLimit, max_bytes=cfg.max_bytes, timeout=cfg.upload_timeout)
    if cfg.cors_origins:  # off unless asked for: a browser page from another origin cannot call the API
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], max_age=600)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "missing":
            msg = f"missing form field {where!r}: send the image as multipart/form-data, e.g. curl -F file=@photo.jpg"
        else:
            msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return _error(400, msg)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")  # the traceback stays in the server log
        return _error(500, f"internal server error ({type(exc).__name__})")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", summary="Liveness and load")
    async def health() -> dict[str, Any]:
        """``status: ok`` once the model is loaded; ``jobs`` (running or queued) out of ``capacity``."""
        return {"status": "ok", "version": __version__, "model": model_info(pool)["id"], **pool.info()}

    @app.get("/v1/models", summary="The model this server runs")
    async def models() -> dict[str, Any]:
        """The served model: name, backend, input size, calibrated interval (``interval_level``, e.g. 0.9) or null."""
        return {"models": [model_info(pool)]}

    @app.post("/v1/predict", summary="Age and gender for every face in one uploaded image",
              responses={200: {"description": "the same JSON object `agekit predict --out x.json` writes per image, "
                                              "with `queue` and `total` seconds added to `timings`",
                               "content": {"application/json": {"example": _example_record()}}},
                         **_errors(400, 408, 413, 415, 503, 504)})
    async def predict(file: UploadFile = File(..., description="one image (JPEG, PNG, WebP, BMP, TIFF, GIF, ...)")) -> JSONResponse:
        """Faces (box, 5 landmarks, score), age with its calibrated interval (`age_low`-`age_high`, when the model
        has one), gender and the probability of that gender. Only the uploaded bytes are read: no URLs, no paths."""
        t0 = time.perf_counter()
        name = upload_name(file.filename)
        data = await file.read()
        if len(data) > cfg.max_bytes:
            return _error(413, f"upload too large: {len(data)} bytes > {cfg.max_bytes} (the server's --max-bytes)")
        try:
            fut = pool.submit(data, name)
        except QueueFull as e:
            return _error(503, e, {"Retry-After": str(RETRY_AFTER_S)})
        try:
            res = await asyncio.wait_for(asyncio.wrap_future(fut), cfg.timeout)
        except asyncio.TimeoutError:
            return _error(504, f"{name}: no answer within {cfg.timeout:g} s (the server's --timeout)")
        except ImageLoadError as e:
            return _error(image_error_status(e), e)
        if res.error is not None:
            return _error(500, f"{name}: {res.status}")
        record = result_record(res)
        record["timings"]["total"] = round(time.perf_counter() - t0, 6)
        return JSONResponse(record)

    return app
