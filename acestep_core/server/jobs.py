"""Job records: status, timing, result, and the numbers /v1/stats reports.

Records live in memory and, once a `JobDB` is attached, every change is also written to it, so a
restarted server still answers for every job it accepted. Jobs that were queued or running when the
server stopped are not resumed: on restart they answer status 2 with RESTART_ERROR (their uploads
are gone, and a client that still wants the song submits it again).

All access happens on the event loop thread except `progress`, which the worker thread writes
as a plain float (a single attribute store, safe to read without a lock).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .job_db import JobDB, JobRow

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
# Official integer codes: 0 = still queued or running, 1 = succeeded, 2 = failed.
STATUS_CODES = {QUEUED: 0, RUNNING: 0, SUCCEEDED: 1, FAILED: 2}
RESTART_ERROR = "server restarted before this job ran; submit it again"
RESTART_RUNNING_ERROR = ("server restarted before this job ran to the end (it was stopped at shutdown); "
                         "submit it again")


@dataclass
class Job:
    task_id: str
    request: Any
    created_at: float = field(default_factory=time.time)
    status: str = QUEUED
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    progress: float = 0.0
    stage: str = QUEUED
    result: Optional[dict] = None
    error: Optional[str] = None
    # HTTP status a synchronous caller (/v1/chat/completions) reports for a failed job.
    error_status: int = 500
    # Files the job owns besides its result folder (uploads), removed when the job expires.
    temp_files: list[str] = field(default_factory=list)

    @property
    def status_code(self) -> int:
        return STATUS_CODES[self.status]

    @property
    def done(self) -> bool:
        return self.status in (SUCCEEDED, FAILED)


def _request_record(job: Job) -> dict:
    to_record = getattr(job.request, "to_record", None)
    return to_record() if callable(to_record) else {}


class JobStore:
    def __init__(self, avg_job_seconds: float = 5.0, avg_window: int = 50):
        self._jobs: dict[str, Job] = {}
        self._durations: deque[float] = deque(maxlen=avg_window)
        self._initial_avg = avg_job_seconds
        self._db: Optional[JobDB] = None

    # ------------------------------------------------------------------ persistence

    def attach(self, db: JobDB, restore_request: Callable[[dict], Any] = lambda record: record) -> list[Job]:
        """Load every stored job and write from now on; returns the jobs that were queued or running
        (now failed with RESTART_ERROR), whose uploads and partial folders the caller removes."""
        self._db = db
        interrupted = []
        for row in db.rows():
            if row.task_id in self._jobs:
                continue
            job = _job_from_row(row, restore_request)
            self._jobs[job.task_id] = job
            if row.status in (QUEUED, RUNNING):
                job.status = job.stage = FAILED
                job.error = RESTART_ERROR if row.status == QUEUED else RESTART_RUNNING_ERROR
                job.finished_at = time.time()
                self._save(job, status=FAILED, error=job.error, finished_at=job.finished_at)
                interrupted.append(job)
            elif job.started_at is not None and job.finished_at is not None:
                self._durations.append(job.finished_at - job.started_at)
        return interrupted

    def detach(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _save(self, job: Job, **values: Any) -> None:
        if self._db is not None:
            self._db.update(job.task_id, **values)

    # ------------------------------------------------------------------ lifecycle

    def create(self, request: Any, temp_files: Optional[list[str]] = None) -> Job:
        job = Job(task_id=str(uuid.uuid4()), request=request, temp_files=list(temp_files or []))
        if self._db is not None:
            self._db.insert(job.task_id, QUEUED, job.created_at, _request_record(job), job.temp_files)
        self._jobs[job.task_id] = job
        return job

    def get(self, task_id: str) -> Optional[Job]:
        return self._jobs.get(task_id)

    def discard(self, task_id: str) -> None:
        self._jobs.pop(task_id, None)
        if self._db is not None:
            self._db.delete(task_id)

    def jobs(self, *statuses: str) -> list[Job]:
        return [j for j in self._jobs.values() if not statuses or j.status in statuses]

    def mark_running(self, job: Job) -> None:
        job.status = RUNNING
        job.stage = RUNNING
        job.started_at = time.time()
        self._save(job, status=RUNNING, started_at=job.started_at)

    def mark_succeeded(self, job: Job, result: dict) -> None:
        job.status = SUCCEEDED
        job.stage = SUCCEEDED
        job.progress = 1.0
        job.result = result
        self._finish(job)
        self._save(job, status=SUCCEEDED, result=result, finished_at=job.finished_at)

    def mark_failed(self, job: Job, error: str) -> None:
        job.status = FAILED
        job.stage = FAILED
        job.error = error
        self._finish(job)
        self._save(job, status=FAILED, error=error, error_status=job.error_status, finished_at=job.finished_at)

    def _finish(self, job: Job) -> None:
        job.finished_at = time.time()
        if job.started_at is not None:
            self._durations.append(job.finished_at - job.started_at)

    @property
    def avg_job_seconds(self) -> float:
        if not self._durations:
            return self._initial_avg
        return sum(self._durations) / len(self._durations)

    def counts(self) -> dict[str, int]:
        counts = {"total": len(self._jobs), QUEUED: 0, RUNNING: 0, SUCCEEDED: 0, FAILED: 0}
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    def expired(self, max_age_s: float, now: Optional[float] = None) -> list[Job]:
        """Finished jobs older than max_age_s (queued and running jobs never expire)."""
        now = time.time() if now is None else now
        return [j for j in self._jobs.values() if j.done and now - (j.finished_at or j.created_at) > max_age_s]


def _job_from_row(row: JobRow, restore_request: Callable[[dict], Any]) -> Job:
    try:
        request = restore_request(row.request)
    except Exception:  # an unreadable old record still answers by id
        request = None
    return Job(task_id=row.task_id, request=request, created_at=row.created_at, status=row.status,
               started_at=row.started_at, finished_at=row.finished_at,
               progress=1.0 if row.status == SUCCEEDED else 0.0, stage=row.status, result=row.result,
               error=row.error, error_status=row.error_status, temp_files=list(row.temp_files))
