"""The official LoRA endpoints: POST /v1/lora/load, /unload, /toggle, /scale and GET /v1/lora/status.

Adapters load from the server's LoRA folder only (ACESTEP_LORA_DIR; anything else is 403), are
checked against the model on the model thread, and then apply to every job queued afterwards.
All loaded adapters stack, each at its own scale. Messages and response fields follow the official
server, including its habit of answering a failed toggle / scale with HTTP 200 and code 400.
"""

from __future__ import annotations

import math
from pathlib import Path

from aiohttp import web

from ..adapters import check_adapter_fits, load_adapter
from ..errors import AdapterError
from .params import FieldError, to_bool, to_float
from .responses import fail, ok, wrap
from .routes import authorise, read_fields
from .runtime import Runtime


def _soft_error(message: str) -> web.Response:
    return web.json_response(wrap(None, code=400, error=message))


def _optional_name(body: dict):
    name = body.get("adapter_name")
    return name.strip() if isinstance(name, str) and name.strip() else None


class LoraHandlers:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @property
    def state(self):
        return self.runtime.adapters

    async def load(self, request: web.Request) -> web.Response:
        body = await read_fields(request)
        authorise(self.runtime, request, body)
        raw = body.get("lora_path")
        if not isinstance(raw, str) or not raw.strip():
            raise FieldError("lora_path", "is required: a PEFT LoRA folder, a ComfyUI LoRA file or a LoKr file "
                                          "inside the server's LoRA folder")
        raw = raw.strip()
        name = _optional_name(body)
        try:
            path = self.state.resolve(raw)
        except PermissionError as exc:
            return fail(403, f"Access denied: {exc}")
        effective = name or Path(raw.rstrip("/\\")).name or "default"

        def work():
            adapter = load_adapter(path, effective)
            pipe, _ = self.runtime.provider.pipeline(None)
            check_adapter_fits(pipe.dit.transformer, adapter)
            return adapter

        adapter = await self.runtime.run_blocking(work)
        self.state.add(effective, adapter)
        if adapter.kind == "lokr" and not name:
            message = f"✅ LoKr loaded from {adapter.path}"
        else:
            message = f"✅ LoRA '{effective}' loaded from {raw}"
        data = {"message": message, "lora_path": raw}
        if name:
            data["adapter_name"] = name
        return ok(data)

    async def unload(self, request: web.Request) -> web.Response:
        body = await read_fields(request)
        authorise(self.runtime, request, body)
        if not self.state.clear():
            return ok({"message": "⚠️ No LoRA adapter loaded."})
        return ok({"message": "✅ LoRA unloaded, using base model"})

    async def toggle(self, request: web.Request) -> web.Response:
        body = await read_fields(request)
        authorise(self.runtime, request, body)
        use = _required(body, "use_lora", to_bool, "true or false")
        if use and not self.state.loaded:
            return _soft_error("❌ No LoRA adapter loaded. Please load a LoRA first.")
        self.state.set_use(use)
        return ok({"message": f"✅ {self.state.label()} {'enabled' if use else 'disabled'}", "use_lora": use})

    async def scale(self, request: web.Request) -> web.Response:
        body = await read_fields(request)
        authorise(self.runtime, request, body)
        value = _required(body, "scale", to_float, "a number from 0 to 1")
        name = _optional_name(body)
        if not self.state.loaded:
            return ok({"message": "⚠️ No LoRA loaded", "scale": value})
        if not math.isfinite(value):
            return _soft_error("❌ Invalid LoRA scale: please provide a finite numeric value between 0 and 1.")
        try:
            target, applied = self.state.set_scale(value, name)
        except AdapterError as exc:
            return _soft_error(f"❌ {exc}")
        label = self.state.label(target)
        suffix = "" if self.state.use_lora else f" ({label} disabled)"
        data = {"message": f"✅ {label} scale ({target}): {applied:.2f}{suffix}", "scale": applied}
        if name:
            data["adapter_name"] = name
        return ok(data)

    async def status(self, request: web.Request) -> web.Response:
        authorise(self.runtime, request)
        return ok(self.state.status())


def lora_route_table(runtime: Runtime) -> list:
    handlers = LoraHandlers(runtime)
    return [
        ("POST", "/v1/lora/load", handlers.load),
        ("POST", "/v1/lora/unload", handlers.unload),
        ("POST", "/v1/lora/toggle", handlers.toggle),
        ("POST", "/v1/lora/scale", handlers.scale),
        ("GET", "/v1/lora/status", handlers.status),
    ]


def _required(body: dict, name: str, convert, accepts: str):
    """A field the endpoint needs, converted, or a FieldError that says what it accepts."""
    if body.get(name) is None:
        raise FieldError(name, f"is required ({accepts})")
    try:
        return convert(body[name])
    except ValueError as exc:
        raise FieldError(name, str(exc)) from None
