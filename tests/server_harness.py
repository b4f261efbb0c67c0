"""Helpers for the REST server tests: a real aiohttp server on 127.0.0.1:<ephemeral> in a thread,
and a tiny synchronous HTTP client built on aiohttp (no extra test dependency)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import aiohttp
from aiohttp import web

from acestep_core.server import LocalModelProvider, create_app

POLL_TIMEOUT_S = 900  # generous: CI machines are slow; tests never assert on time


def tiny_provider(tiny_dir: Path, use_lm: bool = False, dit: str = "acestep-v15-turbo-tiny") -> LocalModelProvider:
    return LocalModelProvider(
        dit=str(tiny_dir / dit),
        vae=str(tiny_dir / "vae-tiny"),
        text_encoder=str(tiny_dir / "Qwen3-Embedding-tiny"),
        lm=str(tiny_dir / "acestep-5Hz-lm-tiny") if use_lm else None,
        use_lm=use_lm,
        dtype="float32",  # as `serve --tiny`: stable results whatever the CPU's bf16 support
    )


class LiveServer:
    """Runs create_app(runtime) on its own event loop thread; `url` is the base URL."""

    def __init__(self, runtime, prefix: str = "", app_factory=create_app):
        self.runtime = runtime
        self.prefix = prefix
        self.app_factory = app_factory
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: Optional[web.AppRunner] = None
        self.port: Optional[int] = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start():
            self._runner = web.AppRunner(self.app_factory(self.runtime, prefix=self.prefix))
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = self._runner.addresses[0][1]

        self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def call_in_loop(self, fn):
        """Run fn() on the server's loop thread and return its result."""
        done = threading.Event()
        box = {}

        def run():
            box["value"] = fn()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        return box["value"]


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def data(self) -> Any:
        return self.json()["data"]

    @property
    def error(self) -> Optional[str]:
        return self.json()["error"]


def http(method: str, url: str, **kwargs) -> Reply:
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, **kwargs) as resp:
                return Reply(resp.status, dict(resp.headers), await resp.read())

    return asyncio.run(go())


def release(base: str, body: Optional[dict] = None, **kwargs) -> Reply:
    if body is not None:
        kwargs["json"] = body
    return http("POST", base + "/release_task", **kwargs)


def query(base: str, task_id: str, headers: Optional[dict] = None) -> dict:
    reply = http("POST", base + "/query_result", json={"task_id_list": [task_id]}, headers=headers)
    assert reply.status == 200, reply.body
    return reply.data[0]


def wait_done(base: str, task_id: str, headers: Optional[dict] = None) -> dict:
    """Poll /query_result like the skill does until status is 1 or 2; returns the data item."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        item = query(base, task_id, headers)
        if item["status"] != 0:
            return item
        time.sleep(0.25)
    raise AssertionError(f"task {task_id} still running after {POLL_TIMEOUT_S}s")


def result_items(item: dict) -> list[dict]:
    """The official `result` field is a JSON string holding a list of per-file items."""
    assert isinstance(item["result"], str)
    return json.loads(item["result"])


class ServeProcess:
    """`python -m acestep_core serve` on the tiny checkpoints in a child process (for tests that need
    real signals and restarts); `url` is the printed address, `log` its combined output so far."""

    STARTUP_LIMIT_S = 300

    def __init__(self, tiny_dir: Path, output_dir: Path, log_path: Path, env: Optional[dict] = None):
        import os
        import subprocess
        import sys

        self.log_path = log_path
        self._log = open(log_path, "a")
        self._log.write("\n===== start =====\n")
        self._log.flush()
        self._offset = log_path.stat().st_size
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", ACESTEP_MEMORY_LIMITS="off", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "acestep_core", "serve", "--host", "127.0.0.1", "--port", "0", "--no-lm",
             "--dit", str(tiny_dir / "acestep-v15-turbo-tiny"), "--vae", str(tiny_dir / "vae-tiny"),
             "--text-encoder", str(tiny_dir / "Qwen3-Embedding-tiny"), "--output-dir", str(output_dir)],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=output_dir.parent)
        self.url = self._wait_for_address()

    @property
    def log(self) -> str:
        with open(self.log_path) as fh:
            fh.seek(self._offset)
            return fh.read()

    def _wait_for_address(self) -> str:
        import re

        deadline = time.monotonic() + self.STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            match = re.search(r"ACE-Step API on (http://127\.0\.0\.1:\d+)", self.log)
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited during startup:\n{self.log[-3000:]}")
            time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError("serve did not start in time")

    def stop(self, sig=None, timeout: float = 60) -> float:
        """Send `sig` (SIGTERM) and wait; returns the seconds until the process had exited."""
        import signal as _signal

        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
        return time.monotonic() - started
