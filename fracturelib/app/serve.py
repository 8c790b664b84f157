"""``fracturelib serve``: the web page (:mod:`fracturelib.app.web`, Gradio) mounted in a FastAPI app
beside a JSON API, both answered by one :class:`~fracturelib.app.service.Service`.

Routes:
    ``GET /`` the page; ``GET /healthz``; ``GET /api/models`` the served models with their cards' key
    metrics; ``POST /api/predict`` (multipart ``file``, optional ``model``) exactly what
    ``fracturelib predict IMAGE --json`` prints, with ``image`` the uploaded file's name and ``overlay``
    the overlay PNG as a ``data:image/png;base64,...`` URL (None when no overlay); errors are
    ``{"error": "..."}`` with a 4xx status (5xx for the server's own failures). The Gradio endpoint
    ``/analyse`` can be called with ``gradio_client`` as well.

Safe by default: binds 127.0.0.1; request bodies over the upload limit are refused before they are
read (413); images are decoded within ``config.DECODE_BUDGET_MB``; uploads go to private temporary
files under fixed names, removed after each request; models only from ``--models``; at most
``concurrency`` predictions at once, a bounded number waiting. Nothing reaches the internet (Gradio's
analytics are off, no share link, no server-side rendering).
"""

import json
import os
from pathlib import Path

from fracturelib.app.service import CONCURRENCY, RESEARCH_NOTE, Service, ServiceError

#: multipart framing allowed on top of the file itself before a body counts as too large
_SLACK = 64 << 10


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 (JSON) without being read
    on (by its Content-Length, or counted as it arrives)."""

    def __init__(self, app, limit: int):
        """``app``: the wrapped ASGI app; ``limit``: the largest body in bytes."""
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        """Pass the request on, or answer 413 when its body is over the limit.

        Args:
            scope, receive, send: the ASGI call.
        """
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.limit:
            return await self._refuse(send, declared)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send, size: int):
        mb = self.limit / (1 << 20)
        body = json.dumps({"error": f"upload too large ({size / (1 << 20):.1f} MB or more; the limit is "
                                    f"{mb:.0f} MB)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(models_dir: str | Path | None = None, max_upload_mb: float | None = None,
               concurrency: int = CONCURRENCY, service: Service | None = None):
    """The FastAPI app: the JSON API and the Gradio page at ``/``.

    Args:
        models_dir: the folder of models (default ``config.MODELS_DIR``); nothing else is loaded.
        max_upload_mb: the upload limit (default ``FRACTURELIB_MAX_UPLOAD_MB`` or 50).
        concurrency: predictions at once.
        service: a ready :class:`~fracturelib.app.service.Service` instead of the three above.

    Returns:
        The ASGI app (FastAPI); ``app.state.service`` is its service.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"     # before Gradio is imported: it never phones home
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gradio as gr
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.datastructures import UploadFile

    from fracturelib.app import web
    service = service or Service(models_dir, max_upload_mb=max_upload_mb, concurrency=concurrency)
    app = FastAPI(title="fracturelib", description=RESEARCH_NOTE, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, e: RequestValidationError):
        return JSONResponse({"error": "bad request: send multipart/form-data with a 'file' (and optionally "
                                      "'model')"}, status_code=400)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "models": list(service.models)}

    @app.get("/api/models")
    def models():
        return {"models": [e.describe() for e in service.models.values()], "default": service.default,
                "skipped": service.skipped, "max_upload_mb": service.max_upload / (1 << 20),
                "note": RESEARCH_NOTE}

    @app.post("/api/predict")
    async def predict(request: Request):
        form = await request.form(max_files=1, max_fields=4, max_part_size=service.max_upload + _SLACK)
        try:
            upload, model = form.get("file"), form.get("model")
            if not isinstance(upload, UploadFile):
                raise ServiceError("no file: send the image as the multipart field 'file'", 400)
            if model is not None and not isinstance(model, str):
                raise ServiceError("'model' must be a model's name (see GET /api/models)", 400)
            data = await upload.read(service.max_upload + 1)
            name = upload.filename
        finally:
            await form.close()
        result = await run_in_threadpool(service.predict_upload, data, name, model or None)
        return JSONResponse(result)

    demo = web.build(service)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])       # no web fonts fetched
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=service.max_upload, ssr_mode=False,
                              footer_links=["api"], theme=theme, css=web.CSS, mcp_server=False)
    app.state.service = service
    return _with_limit(app, service)


def _with_limit(app, service: Service):
    """``app`` with :class:`BodyLimit` in front (as FastAPI middleware, so ``app`` stays a FastAPI app)."""
    app.add_middleware(BodyLimit, limit=service.max_upload + _SLACK)
    return app


def run(models_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 7860,
        max_upload_mb: float | None = None, concurrency: int = CONCURRENCY) -> int:
    """Serve until interrupted.

    Args:
        models_dir: the folder of models (default ``config.MODELS_DIR``).
        host: the address to bind (127.0.0.1: this machine only).
        port: the port.
        max_upload_mb: the upload limit.
        concurrency: predictions at once.

    Returns:
        0 when stopped.

    Raises:
        FileNotFoundError: ``models_dir`` holds no usable model.
    """
    import uvicorn
    service = Service(models_dir, max_upload_mb=max_upload_mb, concurrency=concurrency)
    if not service.models:
        service.close()
        why = f" ({'; '.join(service.skipped)})" if service.skipped else ""
        raise FileNotFoundError(f"--models {service.models_dir}: no usable model{why}; run `make reports` first")
    app = create_app(service=service)
    print(f"fracturelib serve: {len(service.models)} models from {service.models_dir} "
          f"({', '.join(service.models)}) at http://{host}:{port}/  (API: /api/models, /api/predict, /healthz)")
    print(RESEARCH_NOTE, flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        service.close()
    return 0
