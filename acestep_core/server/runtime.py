"""The service behind the routes: a bounded job queue, one worker, result storage and expiry.

The worker takes one job at a time and runs the blocking engine call on a single dedicated thread,
so jobs (and /format_input calls, which use the same thread) never run concurrently on the shared
models. An optional `idle_gate` coroutine is awaited before each job; inside ComfyUI it waits until
ComfyUI's own prompt queue is idle so API jobs and graph runs take turns on the same models.

Every job is recorded in a SQLite file in the state folder (see jobs.py / job_db.py), so a restarted
server answers for every id it accepted. `shutdown()` (SIGTERM / SIGINT) stops accepting, cancels the
running job at its next LM token, diffusion step or VAE tile, leaves the queued jobs recorded as
queued (the next start reports them as not run) and removes their uploads. The model thread is a
daemon thread: a job that does not reach a cancel point within the grace period cannot hold the
process open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import shutil
import threading
import time
import traceback
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from ..errors import ACEStepError, CancelledError, InputError
from .config import ServerConfig
from .files import is_within, remove_quietly
from .generation import run_job
from .job_db import JobDB
from .jobs import QUEUED, RESTART_RUNNING_ERROR, SUCCEEDED, Job, JobStore
from .lora_state import AdapterState
from .models import LMUnavailableError, ModelProvider
from .params import ReleaseRequest
from .state_lock import StateLock

log = logging.getLogger(__name__)

JobRunner = Callable[..., dict]


class QueueFullError(Exception):
    """The job queue holds ACESTEP_QUEUE_MAXSIZE jobs already (HTTP 429)."""


class ShuttingDownError(Exception):
    """The server is stopping and takes no new jobs (HTTP 503)."""


class ModelThread(concurrent.futures.Executor):
    """One daemon thread running blocking model calls in order.

    Unlike ThreadPoolExecutor (whose threads the interpreter joins at exit), a call stuck past the
    shutdown grace period cannot keep the process alive.
    """

    def __init__(self, name: str = "acestep-api"):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        if self._closed:
            raise RuntimeError("the model thread is shut down")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # delivered to the awaiting coroutine
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._calls.put(None)
        if wait:
            self._thread.join()


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
        memory_decision: Any = None,
    ):
        self.provider = provider
        self.config = config
        self.idle_gate = idle_gate
        self.job_runner = job_runner
        # The memory decision (acestep_core.memory.policy.MemoryDecision) whose duration and batch
        # limits requests are clamped to; None = only the request table's own limits. A callable is
        # asked at each request (inside ComfyUI: the decision of the model loaded now).
        self._memory_decision = memory_decision
        self.store = JobStore(config.avg_job_seconds, config.avg_window)
        self.result_root = Path(config.result_dir).resolve()
        self.upload_dir = self.result_root / ".uploads"
        self.state_dir = Path(config.state_dir).resolve() if config.state_dir else self.result_root / ".state"
        self.state_lock = StateLock(self.state_dir)
        self.accepting = True
        # True once shutdown() gave up waiting for the model thread (the process must not wait for it).
        self.abandoned_work = False
        # Set at shutdown; the running job's cancel check reads it from the model thread.
        self._stopping = threading.Event()
        self._current: Optional[Job] = None
        self._current_done: Optional[asyncio.Event] = None
        self._executor: Optional[ModelThread] = None
        self._queue: Optional[asyncio.Queue] = None
        self._pending: deque[str] = deque()
        # task_id -> event set when the job finishes (for callers that wait on a job).
        self._finished: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # Adapters set through /v1/lora/*; each queued job takes a copy of them.
        self.adapters = AdapterState(config.lora_dirs)

    @property
    def memory_decision(self) -> Any:
        decision = self._memory_decision
        return decision() if callable(decision) else decision

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._queue is not None

    async def start(self) -> None:
        if self.started:
            return
        self.result_root.mkdir(parents=True, exist_ok=True)
        # Before anything is restored or deleted: a second server on this folder would fail the first
        # one's live jobs and remove its uploads (StateFolderInUseError, nothing touched).
        self.state_lock.acquire()
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.config.queue_maxsize)
        self._stopping.clear()
        self.accepting = True
        self._restore()
        self._executor = ModelThread("acestep-api")
        self._tasks = [
            asyncio.create_task(self._worker(), name="acestep-api-worker"),
            asyncio.create_task(self._cleanup_loop(), name="acestep-api-cleanup"),
        ]

    async def ensure_started(self) -> None:
        """Start on first use (inside ComfyUI there is no startup hook for custom routes)."""
        if not self.started:
            await self.start()

    def _restore(self) -> None:
        """Reload the job records; jobs the last run left queued or running are reported as not run."""
        db = JobDB(self.state_dir / "jobs.sqlite3")
        interrupted = self.store.attach(db, ReleaseRequest.from_record)
        for job in interrupted:
            self._remove_job_files(job)
        expired = self.cleanup_once()  # what aged out while the server was down
        orphans = self.remove_orphaned_uploads()
        counts = self.store.counts()
        log.info("job records: %d restored from %s (%d succeeded, %d failed; %d left unfinished by the last "
                 "run, now failed); %d expired, %d orphaned upload(s) removed", counts["total"], db.path,
                 counts["succeeded"], counts["failed"], len(interrupted), expired, orphans)

    def remove_orphaned_uploads(self) -> int:
        """Delete files in the upload folder that no queued or running job owns."""
        if not self.upload_dir.is_dir():
            return 0
        owned = {str(Path(p).resolve()) for job in self.store.jobs("queued", "running") for p in job.temp_files}
        removed = 0
        for path in self.upload_dir.iterdir():
            if path.is_file() and not path.is_symlink() and str(path.resolve()) not in owned:
                remove_quietly([path])
                removed += 1
        return removed

    def _remove_job_files(self, job: Job) -> None:
        remove_quietly(job.temp_files)
        folder = self.job_dir(job)
        if folder.parent == self.result_root and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)

    async def shutdown(self, grace_s: float = 5.0) -> dict:
        """Stop taking jobs, cancel the running one, keep the queued ones on record; returns a summary."""
        self.accepting = False
        self._stopping.set()
        # running_finished: the running job got past its last cancel point and finished in the grace
        # period (its results are kept) rather than being stopped.
        summary = {"queued": 0, "running": None, "running_finished": False, "stopped_in_time": True}
        if self._queue is None:
            return summary
        running = self._current
        if running is not None and self._current_done is not None:
            summary["running"] = running.task_id
            try:
                await asyncio.wait_for(self._current_done.wait(), grace_s)
            except asyncio.TimeoutError:
                # Still inside a step without a cancel check: record it as stopped and leave the
                # daemon thread behind (the process exits without it).
                summary["stopped_in_time"] = False
                self.abandoned_work = True
                if not running.done:
                    running.error_status = 503
                    self.store.mark_failed(running, RESTART_RUNNING_ERROR)
                    self._remove_job_files(running)
            summary["running_finished"] = running.status == SUCCEEDED
        queued = self.store.jobs(QUEUED)
        summary["queued"] = len(queued)
        for job in queued:
            remove_quietly(job.temp_files)  # they will never run in this process
        self.remove_orphaned_uploads()
        return summary

    async def close(self) -> None:
        self._stopping.set()  # a job still on the model thread stops at its next step
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
        self.store.detach()
        self.state_lock.release()

    # ------------------------------------------------------------------ jobs

    def submit(self, request: ReleaseRequest, temp_files: Optional[list[str]] = None) -> tuple[Job, int]:
        """Queue a job; returns it and its 1-based queue position, or raises QueueFullError."""
        assert self._queue is not None, "Runtime.start() was not awaited"
        if not self.accepting:
            raise ShuttingDownError("the server is shutting down and takes no new jobs; retry after it restarts")
        if self._queue.full():
            raise QueueFullError("Server busy: queue is full")
        request.adapters = self.adapters.snapshot()
        job = self.store.create(request, temp_files)
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
                if not self.accepting:
                    continue  # stopping: the job stays recorded as queued
                if job.task_id in self._pending:
                    self._pending.remove(job.task_id)
                await self._run(job)
            finally:
                self._queue.task_done()

    async def _run(self, job: Job) -> None:
        self.store.mark_running(job)
        done = asyncio.Event()
        self._current, self._current_done = job, done
        stopping = self._stopping

        def progress(step: int, total: int) -> None:
            job.progress = max(0.0, min(1.0, step / max(int(total), 1)))

        def set_stage(stage: str) -> None:
            job.stage = stage

        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                lambda: self.job_runner(job.request, self.provider, self.job_dir(job), job.task_id,
                                        progress=progress, set_stage=set_stage, cancel=stopping.is_set),
            )
        except asyncio.CancelledError:
            if not job.done:
                self.store.mark_failed(job, RESTART_RUNNING_ERROR)
            raise
        except CancelledError:
            log.warning("job %s cancelled at shutdown", job.task_id)
            job.error_status = 503
            if not job.done:
                self.store.mark_failed(job, RESTART_RUNNING_ERROR)
            shutil.rmtree(self.job_dir(job), ignore_errors=True)
        except Exception as exc:  # a failed job must never stop the worker
            log.warning("job %s failed: %s\n%s", job.task_id, exc, traceback.format_exc())
            job.error_status = 503 if isinstance(exc, LMUnavailableError) else 400 if isinstance(exc, InputError) else 500
            self.store.mark_failed(job, describe_error(exc))
            shutil.rmtree(self.job_dir(job), ignore_errors=True)
        else:
            if job.done:  # recorded as stopped by shutdown() while the thread finished anyway
                shutil.rmtree(self.job_dir(job), ignore_errors=True)
            else:
                self.store.mark_succeeded(job, result)
        finally:
            remove_quietly(job.temp_files)
            event = self._finished.pop(job.task_id, None)
            if event is not None:
                event.set()
            done.set()
            self._current = None

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
