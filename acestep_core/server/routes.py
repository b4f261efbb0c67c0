"""HTTP layer: the official ACE-Step 1.5 REST endpoints as aiohttp handlers.

`add_routes(target, prefix, runtime)` mounts them on an aiohttp Application / router (headless
server) or on a RouteTableDef such as ComfyUI's `PromptServer.instance.routes` (with prefix
"/acestep"). Handlers only parse, authorise and format; the Runtime does the work.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
import urllib.parse
from functools import wraps
from typing import Any, Awaitable, Callable, Optional

from aiohttp import web

from ..errors import ACEStepError, InputError
from . import completions, examples, limits
from .files import (
    UploadTooLarge,
    new_upload_path,
    remove_quietly,
    resolve_request_audio,
    resolve_served_file,
    stream_part_to_file,
    AUDIO_MEDIA_TYPES,
)
from .analysis import LM_MODES, SOURCE_MODES, mode_of, query_result_item
from .models import LMUnavailableError
from .params import (OFFICIAL_UNUSED, FieldError, ignored_fields, load_json, parse_fields, parse_json_object,
                     parse_release_request, to_bool)
from .responses import fail, ok, wrap
from .runtime import QueueFullError, Runtime, ShuttingDownError
from .state_lock import StateFolderInUseError

log = logging.getLogger(__name__)

# Multipart file fields -> the request field they fill (official names and aliases).
FILE_FIELDS = {"src_audio": "src_audio", "ctx_audio": "src_audio",
               "reference_audio": "reference_audio", "ref_audio": "reference_audio"}
MAX_TEXT_FIELD_BYTES = 1024 * 1024
SOURCE_TASKS = ("cover", "repaint", "continuation", "extract", "lego", "complete")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# Request helpers


def _bearer(request: web.Request) -> Optional[str]:
    header = request.headers.get("Authorization")
    if not header:
        return None
    return header[7:].strip() if header.lower().startswith("bearer ") else header.strip()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _is_loopback(remote: Optional[str]) -> bool:
    try:
        return ipaddress.ip_address((remote or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def authorise(runtime: Runtime, request: web.Request, body: Optional[dict] = None) -> None:
    """Official rules: `ai_token` in the body wins, else `Authorization: Bearer <key>`."""
    key = runtime.config.api_key
    if not key:
        if runtime.config.loopback_only and not _is_loopback(request.remote):
            raise HTTPError(403, "remote access to the ACE-Step API needs ACESTEP_API_KEY to be set on the server")
        return
    token = (body or {}).get("ai_token")
    if token:
        if not _same(str(token), key):
            raise HTTPError(401, "Invalid ai_token")
        return
    header = _bearer(request)
    if header is None:
        raise HTTPError(401, "Missing ai_token or Authorization header")
    if not _same(header, key):
        raise HTTPError(401, "Invalid API key")


JSON_HINT = ("send the body as JSON with the header 'Content-Type: application/json' (curl: -H "
             "'Content-Type: application/json' -d '{...}'), or as multipart/form-data")


class Body(dict):
    """Request fields, plus what the server noticed about how they were sent."""

    notices: list[str]
    # A JSON-typed request with no body at all (not even {}): a client mistake where a job would follow.
    empty_json: bool

    def __init__(self, *args, notices: Optional[list[str]] = None, empty_json: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.notices = list(notices or [])
        self.empty_json = empty_json


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it passes `limit` bytes, without reading the rest."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise HTTPError(413, f"body: {declared} bytes is more than this endpoint accepts ({limit} bytes); "
                             "upload audio as multipart/form-data and keep text fields within their limits")
    data = bytearray()
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise HTTPError(413, f"body: more than this endpoint accepts ({limit} bytes)")
    return bytes(data)


def _parse_json(raw: bytes) -> dict:
    try:
        body = load_json(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise HTTPError(400, "body: not UTF-8 text; send JSON encoded as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HTTPError(400, f"body: invalid JSON ({exc})") from None
    except RecursionError:
        raise HTTPError(400, "body: JSON nested too deeply; send a flat object of fields") from None
    if not isinstance(body, dict):
        raise HTTPError(400, f"body: JSON payload must be an object, got {type(body).__name__}")
    return body


def _looks_like_json(raw: bytes) -> bool:
    return raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


async def read_fields(request: web.Request, limit: Optional[int] = None) -> Body:
    """JSON, url-encoded form or (text-only) multipart body as a dict; empty body -> {}.

    A JSON object sent without a Content-Type, or as a url-encoded form (what `curl -d` does), is read
    as JSON and a notice says which header to send. A key=value body without a usable type is read as
    a form, as the official server does; any other body without a usable type is a 415.
    """
    ctype = request.content_type.lower()
    has_type = "Content-Type" in request.headers
    if ctype.startswith("multipart/"):
        fields, _ = await read_multipart(request, runtime=None)
        return Body(fields)
    raw = await read_body(request, limit if limit is not None else request.client_max_size)
    is_json = ctype == "application/json" or ctype.endswith("+json")
    if not raw.strip():
        return Body(empty_json=is_json)
    if is_json:
        return Body(_parse_json(raw))
    if _looks_like_json(raw):
        sent = f"as {ctype}" if has_type else "without a Content-Type header"
        return Body(_parse_json(raw), notices=[f"the body is JSON but was sent {sent}; it was read as JSON. "
                                               "Send 'Content-Type: application/json'."])
    is_form = ctype == "application/x-www-form-urlencoded"
    if is_form or b"=" in raw:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "body: form data is not UTF-8") from None
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
        if is_form:
            return Body(pairs)
        if pairs:
            sent = f"as {ctype}" if has_type else "without a Content-Type header"
            return Body(pairs, notices=[f"the body is key=value form data but was sent {sent}; it was read as a "
                                        "form. Send 'Content-Type: application/x-www-form-urlencoded'."])
    raise HTTPError(415, f"Unsupported Content-Type: {ctype if has_type else '(missing)'}; {JSON_HINT}")


async def read_multipart(request: web.Request, runtime: Optional[Runtime]) -> tuple[dict, dict]:
    """Text fields and saved uploads of a multipart body. Files are refused when runtime is None."""
    fields: dict[str, Any] = {}
    uploads: dict[str, str] = {}
    text_limit = runtime.config.max_json_body_bytes if runtime is not None else MAX_TEXT_FIELD_BYTES
    text_bytes = 0
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise HTTPError(400, f"body: malformed multipart/form-data ({exc or type(exc).__name__}); "
                             "let the HTTP client build the body (curl -F name=value)") from None
    try:
        while True:
            try:
                part = await reader.next()
            except (ValueError, AssertionError, KeyError, aiohttp_client_errors()) as exc:
                raise HTTPError(400, f"body: malformed multipart/form-data ({exc or type(exc).__name__}); "
                                     "let the HTTP client build the body (curl -F name=value)") from None
            if part is None:
                break
            name = part.name or ""
            if part.filename is not None or name in FILE_FIELDS:
                target = FILE_FIELDS.get(name)
                if runtime is None or target is None:
                    raise HTTPError(400, f"{name or 'file'}: unexpected file upload")
                if target in uploads:
                    raise HTTPError(400, f"{name}: only one file per field")
                dest = new_upload_path(runtime.upload_dir, target, part.filename)
                size = await stream_part_to_file(part, dest, runtime.config.max_upload_bytes, name)
                uploads[target] = str(dest)
                if size == 0:
                    raise HTTPError(400, f"{name}: the uploaded file is empty")
                continue
            data = bytearray()
            while True:
                chunk = await part.read_chunk(64 * 1024)
                if not chunk:
                    break
                data += chunk
                text_bytes += len(chunk)
                if len(data) > MAX_TEXT_FIELD_BYTES:
                    raise HTTPError(413, f"{name}: form field larger than 1 MiB")
                if text_bytes > text_limit:
                    raise HTTPError(413, f"body: form fields larger than {text_limit} bytes in total")
            try:
                fields[name] = data.decode(part.get_charset("utf-8"))
            except (UnicodeDecodeError, LookupError):
                raise HTTPError(400, f"{name}: form field is not valid {part.get_charset('utf-8')} text") from None
    except BaseException:
        remove_quietly(uploads.values())
        raise
    return fields, uploads


def aiohttp_client_errors() -> type:
    from aiohttp import ClientPayloadError

    return ClientPayloadError


def check_audio(path: str, field_name: str, limit_s: float) -> float:
    """Refuse now (400) audio the job could not use: undecodable, empty, or longer than `limit_s`.

    The length comes from the header when it says too much, else from counting decoded samples up to
    the limit, so an hour-long upload is refused in milliseconds."""
    from ..audio_probe import audio_seconds

    return audio_seconds(path, limit_s, what=field_name)


def check_request(req, runtime: Runtime, labels: dict[str, str]) -> None:
    """Everything that can be checked before the job is queued (runs on a worker thread): the audio
    files, then the engine request's own validation, so the job fails only for what needs the models."""
    from .generation import engine_request

    src = req.uploads.get("src_audio") or req.src_audio_path
    if src:
        check_audio(src, labels.get("src_audio", "src_audio"),
                    limits.source_limit_s(runtime.config, runtime.memory_decision))
    ref = req.uploads.get("reference_audio") or req.reference_audio_path
    if ref:
        check_audio(ref, labels.get("reference_audio", "reference_audio"), limits.reference_limit_s(runtime.config))
    gen = engine_request(req)  # validated
    # The engine's own source checks (finite samples, repaint window against the source's length),
    # on files already known to be within the length limit.
    try:
        gen.check_sources()
    except InputError as exc:
        # The engine names the file; the client knows it by its field (and the upload's name, or the
        # resolved path, is the server's own business).
        message = str(exc)
        for key, path in (("src_audio", src), ("reference_audio", ref)):
            if path:
                message = message.replace(str(path), labels.get(key, key))
        raise InputError(message) from None


NO_LM_FIX = "start it with an LM (--lm, or an acestep-5Hz-lm-* folder beside the checkpoints)"


def check_needs(req, has_source: bool, provider) -> None:
    """What a request needs and the server lacks, refused at submit: an analysis mode's source audio,
    and the LM for the modes and options only it can do (thinking, simple mode, format)."""
    from .generation import plan_options

    mode = mode_of(req)
    if mode in SOURCE_MODES and not has_source:
        raise FieldError("src_audio", f"{mode} analyses source audio: upload it as multipart field 'src_audio' "
                                      "(or 'ctx_audio') or give src_audio_path")
    if provider.lm_name() is not None:
        return
    if mode in LM_MODES:
        raise LMUnavailableError(f"{mode} needs the 5 Hz LM, and this server runs without one; {NO_LM_FIX}")
    if mode is None and plan_options(req).wants_lm(req.task_type):
        asked = [name for name in ("thinking", "sample_mode", "sample_query", "use_format") if req.values.get(name)]
        raise LMUnavailableError(f"{', '.join(asked)} needs the 5 Hz LM, and this server runs without one; "
                                 f"send the request without it, or {NO_LM_FIX}")


def note_unknown_model(req, provider) -> None:
    """A `model` this server does not have runs on the default DiT, as on the official server; say so."""
    models = provider.models()
    if req.model and models and req.model not in {m.name for m in models}:
        default = next((m.name for m in models if m.is_default), models[0].name)
        req.notices.append(f"model {req.model!r} is not on this server; {default} runs it (GET /v1/models lists "
                           "the models)")


def submit_extra(notices: list[str], ignored: list[str], suggestions: dict[str, str]) -> Optional[dict]:
    """The wrapper's `extra` for a submit: ignored fields (with near-miss hints) and server notices."""
    if not (notices or ignored):
        return None
    extra: dict[str, Any] = {}
    if ignored:
        extra["ignored_fields"] = ignored
        extra["did_you_mean"] = suggestions
        official = [name for name in ignored if name.rsplit(".", 1)[-1] in OFFICIAL_UNUSED]
        unknown = [f"{name} (did you mean {suggestions[name]!r}?)" if name in suggestions else name
                   for name in ignored if name not in official]
        said = []
        if unknown:
            said.append(f"ignored unknown field(s): {', '.join(unknown)}")
        if official:
            said.append(f"official field(s) that do not apply to this server (read, not acted on): "
                        f"{', '.join(official)}")
        notices = said + list(notices)
    extra["notices"] = notices
    return extra


# ---------------------------------------------------------------------------------------------
# Handlers


class ApiHandlers:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def health(self, request: web.Request) -> web.Response:
        if self.runtime.config.loopback_only and not self.runtime.config.api_key:
            authorise(self.runtime, request)
        return ok({"status": "ok", "service": "ACE-Step API", "version": "1.0"})

    async def release_task(self, request: web.Request) -> web.Response:
        rt = self.runtime
        uploads: dict[str, str] = {}
        try:
            if request.content_type.lower().startswith("multipart/"):
                # Refuse a wrong header before accepting any upload bytes.
                if rt.config.api_key and _bearer(request) is not None:
                    authorise(rt, request)
                fields, uploads = await read_multipart(request, rt)
                fields = Body(fields)
            else:
                fields = await read_fields(request, rt.config.max_json_body_bytes)
            authorise(rt, request, fields)
            if getattr(fields, "empty_json", False):
                raise FieldError("body", "is empty; send the request as a JSON object ({} asks for every default)")
            req = parse_release_request(fields, default_batch_size=rt.config.default_batch_size,
                                        max_batch_size=rt.config.max_batch_size)
            ignored, suggestions = ignored_fields(fields)
            for name in ("src_audio_path", "reference_audio_path"):
                upload_key = name[: -len("_path")]
                raw_path = req.values.get(name)
                if raw_path and upload_key not in uploads:
                    req.values[name] = str(resolve_request_audio(name, raw_path, rt.result_root, rt.config.input_dirs))
            has_source = "src_audio" in uploads or bool(req.src_audio_path)
            if req.task_type in SOURCE_TASKS and not has_source:
                raise FieldError("src_audio", f"task_type={req.task_type} needs source audio: upload it as "
                                              "multipart field 'src_audio' or give src_audio_path")
            check_needs(req, has_source, rt.provider)
            note_unknown_model(req, rt.provider)
            req.uploads.update(uploads)
            labels = {k: (k if k in uploads else f"{k}_path") for k in ("src_audio", "reference_audio")}
            await self._prepare(req, labels)
        except BaseException:
            remove_quietly(uploads.values())
            raise
        job, position = self._submit(req, uploads)
        return ok({"task_id": job.task_id, "status": "queued", "queue_position": position},
                  extra=submit_extra(fields.notices + req.notices, ignored, suggestions))

    async def _prepare(self, req, labels: dict[str, str]) -> None:
        """Clamp to the memory decision, then check the audio and the whole engine request."""
        rt = self.runtime
        limits.clamp_to_decision(req, rt.config, rt.memory_decision)
        await asyncio.get_running_loop().run_in_executor(None, check_request, req, rt, labels)

    async def query_result(self, request: web.Request) -> web.Response:
        body = await read_fields(request, self.runtime.config.max_json_body_bytes)
        authorise(self.runtime, request, body)
        raw = body.get("task_id_list", body.get("task_ids"))
        if raw is None:
            # No list at all answers an empty one, as the official server does.
            raw = [body["task_id"]] if body.get("task_id") else []
        if isinstance(raw, str):
            try:
                raw = load_json(raw) if raw.strip().startswith("[") else [raw]
            except json.JSONDecodeError:
                raise FieldError("task_id_list", "is not a valid JSON list") from None
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            raise FieldError("task_id_list", "must be a list of task id strings")
        return ok([self._describe(task_id) for task_id in raw])

    def _describe(self, task_id: str) -> dict:
        rt = self.runtime
        job = rt.store.get(task_id)
        if job is None:
            error = "task not found (unknown id, or its result expired)"
            return {"task_id": task_id, "status": 2, "error": error,
                    "result": json.dumps([{"file": "", "wave": "", "status": 2, "error": error}])}
        base = {"wave": "", "status": job.status_code, "create_time": int(job.created_at),
                "env": rt.config.env_name}
        if job.status == "succeeded" and "analysis" in (job.result or {}):
            items = [query_result_item(job.result, base)]
        elif job.status == "succeeded":
            r = job.result or {}
            items = [dict(base, file=url, prompt=r["prompt"], lyrics=r["lyrics"], metas=r["metas"],
                          generation_info=r["generation_info"], seed_value=r["seed_value"],
                          lm_model=r["lm_model"], dit_model=r["dit_model"], lm_seed=r.get("lm_seed"),
                          vocal_language=r.get("vocal_language"), progress=1.0, stage="succeeded",
                          notices=r.get("notices", []), params=r.get("params", {}))
                     for url in r.get("audio_urls", [])]
        elif job.status == "failed":
            items = [dict(base, file="", prompt="", lyrics="", metas={}, progress=job.progress,
                          stage="failed", error=job.error)]
        else:
            items = [dict(base, file="", prompt="", lyrics="", metas={}, progress=round(job.progress, 4),
                          stage=job.stage, queue_position=rt.queue_position(task_id))]
        out = {"task_id": task_id, "status": job.status_code,
               "result": json.dumps(items, ensure_ascii=False, default=str), "progress_text": job.stage}
        if job.error:
            out["error"] = job.error
        return out

    async def models(self, request: web.Request) -> web.Response:
        """Both shapes at once: OpenRouter's `{"object": "list", "data": [{"id": "acestep/<name>"}]}`
        (what the official server answers here, and what the skill's completion mode reads) plus the
        native `models` / `default_model` / `lm_model` and the wrapper's code / error / timestamp."""
        authorise(self.runtime, request)
        provider = self.runtime.provider
        models = [{"name": m.name, "is_default": m.is_default} for m in provider.models()]
        default = next((m["name"] for m in models if m["is_default"]), models[0]["name"] if models else None)
        created = int(time.time()) - 30 * 86400
        listed = [dict(completions.openrouter_model(m["name"], created), is_default=m["is_default"])
                  for m in models]
        body = wrap(listed)
        body.update({"object": "list", "models": models, "default_model": default,
                     "lm_model": provider.lm_name()})
        return web.json_response(body)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """OpenRouter-style generation: queue the job like /release_task, wait, answer with the audio."""
        rt = self.runtime
        body = await read_fields(request)
        authorise(rt, request, body)
        req, chat = completions.parse_chat_request(body, max_batch_size=rt.config.max_batch_size)
        try:
            stream = to_bool(body.get("stream", False) or False)
        except ValueError as exc:
            raise FieldError("stream", str(exc)) from None
        slots = completions.route_audio(chat, req.task_type)
        if req.task_type in SOURCE_TASKS and "src_audio" not in slots:
            raise FieldError("messages", f"task_type={req.task_type} needs source audio: add a user content "
                                         'part {"type": "input_audio", "input_audio": {"data": "<base64>", '
                                         '"format": "mp3"}}')
        job = await self._submit_with_audio(req, slots)
        model = str(body.get("model") or "").strip() or completions.model_id(self._default_model_name())
        completion_id = "chatcmpl-" + job.task_id
        if stream:
            return await self._stream_completion(request, job, completion_id, model)
        try:
            await rt.wait_for(job, rt.config.generation_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError(504, f"Generation timeout: task {job.task_id} is still running; "
                                 "POST /query_result with its id to collect it later") from None
        if job.status != "succeeded":
            raise HTTPError(job.error_status, f"generation failed: {job.error}")
        reply = await asyncio.get_running_loop().run_in_executor(
            None, completions.completion_body, completion_id, model, job.result)
        return web.json_response(reply)

    def _default_model_name(self) -> str:
        models = self.runtime.provider.models()
        default = next((m for m in models if m.is_default), models[0] if models else None)
        return default.name if default else "acestep-v15-turbo"

    async def _submit_with_audio(self, req, slots: dict):
        """Write decoded input audio to the upload folder, check it decodes, then queue the job."""
        rt = self.runtime
        loop = asyncio.get_running_loop()
        uploads: dict[str, str] = {}
        try:
            for target, (where, raw, fmt) in slots.items():
                if len(raw) > rt.config.max_upload_bytes:
                    raise UploadTooLarge(where, rt.config.max_upload_bytes)
                dest = new_upload_path(rt.upload_dir, target, f"input.{fmt}")
                await loop.run_in_executor(None, dest.write_bytes, raw)
                uploads[target] = str(dest)
            req.uploads.update(uploads)
            await self._prepare(req, {target: where for target, (where, _, _) in slots.items()})
        except BaseException:
            remove_quietly(uploads.values())
            raise
        job, _ = self._submit(req, uploads)
        return job

    def _submit(self, req, uploads: dict):
        """Queue a job that owns `uploads`; a full queue is a 429 and the uploads are removed."""
        try:
            return self.runtime.submit(req, temp_files=list(uploads.values()))
        except QueueFullError as exc:
            remove_quietly(uploads.values())
            raise HTTPError(429, str(exc)) from None
        except ShuttingDownError as exc:
            remove_quietly(uploads.values())
            raise HTTPError(503, str(exc)) from None
        except BaseException:
            remove_quietly(uploads.values())
            raise

    async def _stream_completion(self, request: web.Request, job, completion_id: str,
                                 model: str) -> web.StreamResponse:
        """Server-sent events: a role chunk, keep-alive comments while the job runs, then the text,
        the audio, the finish reason and `[DONE]`."""
        rt = self.runtime
        created = int(time.time())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(delta: dict, finish: str | None = None) -> None:
            payload = completions.chunk(completion_id, model, created, delta, finish)
            await response.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode("utf-8"))

        await send({"role": "assistant", "content": ""})
        deadline = time.monotonic() + rt.config.generation_timeout_s
        while not job.done and time.monotonic() < deadline:
            try:
                await rt.wait_for(job, min(2.0, max(0.01, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                await response.write(b": generating\n\n")
        if job.status == "succeeded":
            result = job.result or {}
            await send({"content": completions.song_text(result)})
            parts = await asyncio.get_running_loop().run_in_executor(None, completions.audio_parts, result)
            await send({"audio": parts})
            await send({}, "stop")
        else:
            reason = job.error if job.done else f"generation timeout: task {job.task_id} is still running"
            await send({"content": f"Error: {reason}"})
            await send({}, "error")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def stats(self, request: web.Request) -> web.Response:
        authorise(self.runtime, request)
        rt = self.runtime
        return ok({"jobs": rt.store.counts(), "queue_size": rt.queue_size,
                   "queue_maxsize": rt.config.queue_maxsize,
                   "avg_job_seconds": round(rt.store.avg_job_seconds, 3),
                   "limits": limits.describe(rt.config, rt.memory_decision),
                   "memory_decision": limits.decision_block(rt.memory_decision)})

    async def audio(self, request: web.Request) -> web.StreamResponse:
        authorise(self.runtime, request)
        raw = request.query.get("path")
        if not raw:
            raise FieldError("path", "is required")
        try:
            path = resolve_served_file(raw, self.runtime.result_root, self.runtime.upload_dir)
        except PermissionError as exc:
            raise HTTPError(403, f"Access denied: {exc}") from None
        except FileNotFoundError as exc:
            raise HTTPError(404, str(exc)) from None
        return web.FileResponse(path, headers={"Content-Type": AUDIO_MEDIA_TYPES[path.suffix.lower()]})

    async def create_random_sample(self, request: web.Request) -> web.Response:
        body = await read_fields(request, self.runtime.config.max_json_body_bytes)
        authorise(self.runtime, request, body)
        sample_type = str(body.get("sample_type") or body.get("sampleType") or "simple_mode").strip()
        if sample_type not in examples.SAMPLE_TYPES:
            # The official server answers anything but simple_mode with a custom_mode example.
            notice = f"sample_type {sample_type!r} is neither simple_mode nor custom_mode; a custom_mode example follows"
            return ok(examples.random_example("custom_mode"), extra={"notices": [notice]})
        return ok(examples.random_example(sample_type))

    async def format_input(self, request: web.Request) -> web.Response:
        """The LM rewrites caption and lyrics: the planning step's `use_format` stage, fields from the table."""
        body = await read_fields(request, self.runtime.config.max_json_body_bytes)
        authorise(self.runtime, request, body)
        text = parse_fields([body], ("prompt", "lyrics"))
        temperature = parse_fields([body], ("lm_temperature",), rename={"lm_temperature": "temperature"})
        metas = parse_fields([parse_json_object(body.get("param_obj"), "param_obj"), body],
                             ("audio_duration", "bpm", "key_scale", "time_signature", "vocal_language"))
        if not (text.get("prompt") or text.get("lyrics")):
            raise FieldError("prompt", "give a prompt or lyrics to format")

        def work():
            from ..planning import PlanOptions, plan_request
            from ..request import GenerationRequest

            song = GenerationRequest(caption=text.get("prompt", ""), lyrics=text.get("lyrics", ""), **metas)
            song.validate()
            options = PlanOptions(use_format=True, **temperature)
            return plan_request(song, options, self.runtime.provider.planner, typed=set(metas))[0]

        song = await self.runtime.run_blocking(work)
        return ok({
            "caption": song.caption,
            "lyrics": song.lyrics,
            "bpm": song.bpm,
            "key_scale": song.key_scale,
            "time_signature": song.time_signature,
            "duration": song.audio_duration,
            "vocal_language": song.vocal_language or "unknown",
        })


def guarded(runtime: Runtime, handler: Handler) -> Handler:
    """Start the runtime on first use and turn every error into the wrapper with its status."""

    @wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            await runtime.ensure_started()
            return await handler(request)
        except HTTPError as exc:
            return fail(exc.status, str(exc))
        except FieldError as exc:
            return fail(400, str(exc))
        except UploadTooLarge as exc:
            return fail(413, str(exc))
        except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip
            reason = str(exc).strip().splitlines()[-1].strip()  # aiohttp prefixes "400, message:"
            return fail(400, f"body: could not be read ({reason}); send it uncompressed, or compressed as its "
                             "Content-Encoding header says")
        except web.HTTPRequestEntityTooLarge as exc:
            return fail(413, f"body: request larger than the server accepts ({exc.reason})")
        except StateFolderInUseError as exc:
            return fail(503, exc.public)
        except LMUnavailableError as exc:
            return fail(503, str(exc))
        except InputError as exc:
            return fail(400, str(exc))
        except ACEStepError as exc:
            return fail(500, str(exc))
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("unhandled error in %s", request.path)
            return fail(500, f"internal error: {type(exc).__name__}: {exc}")

    return run


def route_table(handlers: ApiHandlers) -> list[tuple[str, str, Handler]]:
    return [
        ("GET", "/health", handlers.health),
        ("POST", "/release_task", handlers.release_task),
        ("POST", "/query_result", handlers.query_result),
        ("GET", "/v1/models", handlers.models),
        ("POST", "/v1/chat/completions", handlers.chat_completions),
        ("GET", "/v1/stats", handlers.stats),
        ("GET", "/v1/audio", handlers.audio),
        ("POST", "/create_random_sample", handlers.create_random_sample),
        ("POST", "/format_input", handlers.format_input),
    ]


def add_routes(target, prefix: str = "", runtime: Runtime | None = None) -> list[str]:
    """Mount the API on an Application, a UrlDispatcher or a RouteTableDef; returns the paths."""
    if runtime is None:
        raise ValueError("add_routes needs a Runtime")
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    from .lora_routes import lora_route_table

    handlers = ApiHandlers(runtime)
    paths = []
    for method, path, fn in route_table(handlers) + lora_route_table(runtime):
        full = prefix + path
        wrapped = guarded(runtime, fn)
        # GET routes answer HEAD too (a download's size and type, curl -I), as aiohttp's add_get does.
        if isinstance(target, web.RouteTableDef):
            (target.get(full) if method == "GET" else target.route(method, full))(wrapped)
        else:
            router = target.router if isinstance(target, web.Application) else target
            if method == "GET":
                router.add_get(full, wrapped)
            else:
                router.add_route(method, full, wrapped)
        paths.append(f"{method} {full}")
    return paths
