"""In-memory job records: status, timing, result, and the numbers /v1/stats reports.

All access happens on the event loop thread except `progress`, which the worker thread writes
as a plain float (a single attribute store, safe to read without a lock).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
# Official integer codes: 0 = still queued or running, 1 = succeeded, 2 = failed.
STATUS_CODES = {QUEUED: 0, RUNNING: 0, SUCCEEDED: 1, FAILED: 2}


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


class JobStore:
    def __init__(self, avg_job_seconds: float = 5.0, avg_window: int = 50):
        self._jobs: dict[str, Job] = {}
        self._durations: deque[float] = deque(maxlen=avg_window)
        self._initial_avg = avg_job_seconds

    def create(self, request: Any) -> Job:
        job = Job(task_id=str(uuid.uuid4()), request=request)
        self._jobs[job.task_id] = job
        return job

    def get(self, task_id: str) -> Optional[Job]:
        return self._jobs.get(task_id)

    def discard(self, task_id: str) -> None:
        self._jobs.pop(task_id, None)

    def mark_running(self, job: Job) -> None:
        job.status = RUNNING
        job.stage = RUNNING
        job.started_at = time.time()

    def mark_succeeded(self, job: Job, result: dict) -> None:
        job.status = SUCCEEDED
        job.stage = SUCCEEDED
        job.progress = 1.0
        job.result = result
        self._finish(job)

    def mark_failed(self, job: Job, error: str) -> None:
        job.status = FAILED
        job.stage = FAILED
        job.error = error
        self._finish(job)

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
