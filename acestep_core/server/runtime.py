"""The service behind the routes: a bounded job queue, one worker, result storage and expiry.

The worker takes one job at a time and runs the blocking engine call on a single dedicated thread,
so jobs (and /format_input calls, which use the same thread) never run concurrently on the shared
models. An optional `idle_gate` coroutine is awaited before each job; inside ComfyUI it waits until
ComfyUI's own prompt queue is idle so API jobs and graph runs take turns on the same models.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from ..errors import ACEStepError, InputError
from .config import ServerConfig
from .files import is_within, remove_quietly
from .generation import run_job
from .jobs import Job, JobStore
from .lora_state import AdapterState
from .models import LMUnavailableError, ModelProvider
from .params import ReleaseRequest

log = logging.getLogger(__name__)

JobRunner = Callable[..., dict]


class QueueFullError(Exception):
    """The job queue holds ACESTEP_QUEUE_MAXSIZE jobs already (HTTP 429)."""


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed job: user-fixable errors as is, others with their type."""
    if isinstance(exc, ACEStepError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Runtime:
    def __init__(
        self,
        provider: ModelProvider,
        config: ServerConfig,
        *,
        idle_gate: Optional[Callable[[], Awaitable[None]]] = None,
        job_runner: JobRunner = run_job,
    ):
        self.provider = provider
        self.config = config
        self.idle_gate = idle_gate
        self.job_runner = job_runner
        self.store = JobStore(config.avg_job_seconds, config.avg_window)
        self.result_root = Path(config.result_dir).resolve()
        self.upload_dir = self.result_root / ".uploads"
        self._executor: Optional[ThreadPoolExecutor] = None
        self._queue: Optional[asyncio.Queue] = None
        self._pending: deque[str] = deque()
        # task_id -> event set when the job finishes (for callers that wait on a job).
        self._finished: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # Adapters set through /v1/lora/*; each queued job takes a copy of them.
        self.adapters = AdapterState(config.lora_dir)

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._queue is not None

    async def start(self) -> None:
        if self.started:
            return
        self.result_root.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.config.queue_maxsize)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acestep-api")
        self._tasks = [
            asyncio.create_task(self._worker(), name="acestep-api-worker"),
            asyncio.create_task(self._cleanup_loop(), name="acestep-api-cleanup"),
        ]

    async def ensure_started(self) -> None:
        """Start on first use (inside ComfyUI there is no startup hook for custom routes)."""
        if not self.started:
            await self.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._queue = None

    # ------------------------------------------------------------------ jobs

    def submit(self, request: ReleaseRequest, temp_files: Optional[list[str]] = None) -> tuple[Job, int]:
        """Queue a job; returns it and its 1-based queue position, or raises QueueFullError."""
        assert self._queue is not None, "Runtime.start() was not awaited"
        if self._queue.full():
            raise QueueFullError("Server busy: queue is full")
        request.adapters = self.adapters.snapshot()
        job = self.store.create(request)
        job.temp_files = list(temp_files or [])
        self._queue.put_nowait(job)
        self._pending.append(job.task_id)
        return job, len(self._pending)

    async def wait_for(self, job: Job, timeout_s: float) -> Job:
        """Wait until the job has succeeded or failed; raises asyncio.TimeoutError after timeout_s."""
        if not job.done:
            event = self._finished.setdefault(job.task_id, asyncio.Event())
            await asyncio.wait_for(event.wait(), timeout_s)
        return job

    def queue_position(self, task_id: str) -> int:
        try:
            return self._pending.index(task_id) + 1
        except ValueError:
            return 0

    @property
    def queue_size(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def job_dir(self, job: Job) -> Path:
        return self.result_root / job.task_id

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn on the model thread (serialised with jobs)."""
        await self.ensure_started()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            # Wait for the host to be idle both before taking a job (so a held worker leaves the
            # queue to fill up to its limit) and after (the host may have become busy meanwhile).
            if self.idle_gate is not None:
                await self.idle_gate()
            job: Job = await self._queue.get()
            try:
                if self.idle_gate is not None:
                    await self.idle_gate()
                if job.task_id in self._pending:
                    self._pending.remove(job.task_id)
                await self._run(job)
            finally:
                self._queue.task_done()

    async def _run(self, job: Job) -> None:
        self.store.mark_running(job)

        def progress(step: int, total: int) -> None:
            job.progress = max(0.0, min(1.0, step / max(int(total), 1)))

        def set_stage(stage: str) -> None:
            job.stage = stage

        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                lambda: self.job_runner(job.request, self.provider, self.job_dir(job), job.task_id,
                                        progress=progress, set_stage=set_stage),
            )
        except asyncio.CancelledError:
            self.store.mark_failed(job, "the server shut down while the job was running")
            raise
        except Exception as exc:  # a failed job must never stop the worker
            log.warning("job %s failed: %s\n%s", job.task_id, exc, traceback.format_exc())
            job.error_status = 503 if isinstance(exc, LMUnavailableError) else 400 if isinstance(exc, InputError) else 500
            self.store.mark_failed(job, describe_error(exc))
            shutil.rmtree(self.job_dir(job), ignore_errors=True)
        else:
            self.store.mark_succeeded(job, result)
        finally:
            remove_quietly(job.temp_files)
            event = self._finished.pop(job.task_id, None)
            if event is not None:
                event.set()

    # ------------------------------------------------------------------ expiry

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval_s)
            try:
                self.cleanup_once()
            except Exception as exc:  # keep the loop alive; the next round retries
                log.warning("result cleanup failed: %s", exc)

    def cleanup_once(self, now: Optional[float] = None) -> int:
        """Forget finished jobs older than the max age and delete their folders; returns how many."""
        expired = self.store.expired(self.config.result_max_age_s, now)
        for job in expired:
            folder = self.job_dir(job)
            # Only ever delete a folder this runtime created, directly under its own result root.
            if folder.parent == self.result_root and is_within(folder.resolve(), self.result_root):
                shutil.rmtree(folder, ignore_errors=True)
            remove_quietly(job.temp_files)
            self.store.discard(job.task_id)
        return len(expired) + self._remove_stale_folders(now)

    def _remove_stale_folders(self, now: Optional[float]) -> int:
        """Result folders left by an earlier server run (no job record) once they are old enough."""
        now = time.time() if now is None else now
        removed = 0
        if not self.result_root.is_dir():
            return 0
        for folder in self.result_root.iterdir():
            if not _is_task_folder(folder) or self.store.get(folder.name) is not None:
                continue
            if now - folder.stat().st_mtime > self.config.result_max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


def _is_task_folder(folder: Path) -> bool:
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        return str(uuid.UUID(folder.name)) == folder.name
    except ValueError:
        return False
