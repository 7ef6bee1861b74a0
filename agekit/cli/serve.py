"""`agekit serve`: the HTTP API, its docs and the web page (``agekit.serving``), run by uvicorn."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..serving import defaults as D


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    host: str = typer.Option(D.HOST, "--host", help="Address to listen on (loopback only unless told, e.g. 0.0.0.0)."),
    port: int = typer.Option(D.PORT, "--port", "-p", min=0, max=65535, help="TCP port."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model file (.safetensors, .ckpt, .onnx, .tflite); default: the bundled model."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="torch, onnx or tflite; default: as agekit predict picks."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="Inference workers (threads, each with its own model); default: one per core."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per worker; default: cores / workers."),
    max_bytes: int = typer.Option(D.MAX_BYTES, "--max-bytes", min=1024, help="Largest upload in bytes (413 above)."),
    max_pixels: int = typer.Option(D.MAX_PIXELS, "--max-pixels", min=1, help="Largest image in pixels, checked before decoding (413 above)."),
    timeout: float = typer.Option(D.TIMEOUT_S, "--timeout", min=0.001, help="Seconds for the answer once the upload is in (504 after)."),
    upload_timeout: float = typer.Option(D.UPLOAD_TIMEOUT_S, "--upload-timeout", min=0.001, help="Seconds for the upload to arrive (408 after)."),
    max_queue: int = typer.Option(D.MAX_QUEUE, "--max-queue", min=0, help="Requests that may wait for a worker; more get 503 + Retry-After."),
    cors_origin: Optional[List[str]] = typer.Option(None, "--cors-origin", help="Allow browser pages from this origin (repeatable; '*' = any). Default: CORS off."),
    min_score: float = typer.Option(0.8, "--min-score", min=0.0, max=1.0, help="Ignore detections with a lower face score."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Average each face with its mirror image."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical, error, warning, info, debug."),
) -> None:
    """Serve age and gender estimation over HTTP: POST /v1/predict, GET /health, GET /v1/models, docs at /docs, a web page at /."""
    from pydantic import ValidationError

    from ..config.base import format_validation_error
    from ..export.formats import runner_formats
    from ..runtime import ModelFileError
    from .main import console, fail

    if backend is not None and backend not in runner_formats():
        fail(f"unknown backend {backend!r}; choose one of {', '.join(runner_formats())}")
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        fail(f"--log-level must be critical, error, warning, info or debug, not {log_level!r}")
    from ..serving.config import ServeConfig

    options = dict(host=host, port=port, model=model, backend=backend, workers=workers, threads=threads,
                   max_bytes=max_bytes, max_pixels=max_pixels, timeout=timeout, upload_timeout=upload_timeout, max_queue=max_queue, cors_origins=list(cors_origin or []),
                   min_score=min_score, tta=tta)
    try:
        cfg = ServeConfig(**options)
    except ValidationError as e:
        fail(format_validation_error(e, "serve: ").replace("config key", "option"))
    import uvicorn

    from ..serving.app import create_app

    try:
        with console.status(f"loading {cfg.n_workers} worker(s) ..."):
            api = create_app(cfg)
    except (ModelFileError, ValueError) as e:
        fail(str(e))
    import gc

    gc.freeze()  # the loaded models live until exit: keep them out of every garbage collection (also the slow one at exit)
    info = api.state.pool.predictors[0]
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    console.print(f"agekit serve: {info.cfg.name} ({info.backend_name}), {cfg.n_workers} worker(s) x {cfg.threads_per_worker} "
                  f"thread(s), queue {cfg.max_queue}; page http://{shown}:{cfg.port}/ , API docs http://{shown}:{cfg.port}/docs",
                  highlight=False, soft_wrap=True)
    uvicorn.run(api, host=cfg.host, port=cfg.port, log_level=log_level, timeout_keep_alive=5, server_header=False)
