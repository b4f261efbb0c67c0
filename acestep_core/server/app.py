"""The headless server: an aiohttp Application carrying the API routes and the Runtime."""

from __future__ import annotations

from aiohttp import web

from .responses import fail
from .routes import add_routes
from .runtime import Runtime

RUNTIME_KEY = web.AppKey("acestep_runtime", Runtime)
# JSON bodies (long lyrics) stay far below this; uploads are streamed with their own cap.
MAX_BODY_BYTES = 8 * 1024 * 1024


def max_body_bytes(runtime: Runtime) -> int:
    """/v1/chat/completions carries input audio as base64 inside JSON: room for two uploads."""
    return max(MAX_BODY_BYTES, 2 * (runtime.config.max_upload_bytes * 4 // 3 + 4) + 1024 * 1024)


@web.middleware
async def wrapped_router_errors(request: web.Request, handler):
    """An unknown path or a wrong method answers in the API's JSON wrapper, as every other error does
    (aiohttp's own answer is plain text, which a client reading JSON cannot parse)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return fail(405, f"{request.method} is not allowed on {request.path}; use {allowed}")
    except web.HTTPNotFound:
        return fail(404, f"no such endpoint: {request.method} {request.path} (see /health, /release_task, "
                         "/query_result, /v1/models, /v1/audio)")


def create_app(runtime: Runtime, prefix: str = "", start_runtime: bool = True) -> web.Application:
    """start_runtime=False: the caller starts the runtime itself (`serve` binds the port first, so a
    busy port fails before any job record is touched)."""
    app = web.Application(client_max_size=max_body_bytes(runtime), middlewares=[wrapped_router_errors])
    app[RUNTIME_KEY] = runtime
    add_routes(app, prefix=prefix, runtime=runtime)

    async def start(_app: web.Application) -> None:
        await runtime.start()

    async def stop(_app: web.Application) -> None:
        await runtime.close()

    if start_runtime:
        app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
