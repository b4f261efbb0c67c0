"""The official response wrapper `{data, code, error, timestamp, extra}` for every JSON endpoint."""

from __future__ import annotations

import time
from typing import Any, Optional

from aiohttp import web


def wrap(data: Any, code: int = 200, error: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    return {"data": data, "code": code, "error": error, "timestamp": int(time.time() * 1000), "extra": extra}


def ok(data: Any, extra: Optional[dict] = None) -> web.Response:
    """Success; `extra` carries what the server noticed (ignored fields, clamps), else null."""
    return web.json_response(wrap(data, extra=extra))


def fail(status: int, message: str) -> web.Response:
    """An HTTP error in the same wrapper; `detail` is kept for clients written against FastAPI."""
    body = wrap(None, code=status, error=message)
    body["detail"] = message
    return web.json_response(body, status=status)
