"""The job store on its own: records survive a restart of the Runtime, expire together with their
files, and a record that cannot be read back still answers by id."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from acestep_core.server import ReleaseRequest, Runtime, ServerConfig
from acestep_core.server.job_db import JobDB
from acestep_core.server.jobs import RESTART_ERROR


def started(config) -> Runtime:
    runtime = Runtime(provider=None, config=config)
    asyncio.run(runtime.start())  # opens and restores the store; the loop ends, the records stay
    return runtime


def stopped(runtime: Runtime) -> None:
    """What close() does to the records once the loop is gone: the store and the state folder let go."""
    runtime.store.detach()
    runtime.state_lock.release()


def test_records_survive_restart_and_expire_with_their_files(tmp_path):
    config = ServerConfig.from_env(tmp_path / "res", env={}, result_max_age_s=60.0)
    first = started(config)
    request = ReleaseRequest(values={"prompt": "kept", "batch_size": 1}, notices=["clamped"], max_duration_s=360.0)
    done = first.store.create(request)
    first.store.mark_running(done)
    folder = first.job_dir(done)
    folder.mkdir()
    (folder / f"{done.task_id}_1.wav").write_bytes(b"RIFF")
    first.store.mark_succeeded(done, {"audio_urls": ["/v1/audio?path=x"], "notices": ["clamped"]})
    waiting = first.store.create(ReleaseRequest(values={"prompt": "never ran"}))
    stopped(first)

    second = started(config)
    again = second.store.get(done.task_id)
    assert again.status == "succeeded" and again.result["notices"] == ["clamped"]
    assert again.request.prompt == "kept" and again.request.notices == ["clamped"]
    assert again.request.max_duration_s == 360.0
    lost = second.store.get(waiting.task_id)
    assert lost.status == "failed" and lost.error == RESTART_ERROR
    assert second.cleanup_once(now=time.time() + 120) == 2  # both finished records are old now
    assert second.store.get(done.task_id) is None and not folder.exists()
    stopped(second)
    rows = sqlite3.connect(tmp_path / "res" / ".state" / "jobs.sqlite3").execute("SELECT COUNT(*) FROM jobs")
    assert rows.fetchone()[0] == 0  # records and files went together


def test_an_unreadable_request_record_still_answers(tmp_path):
    config = ServerConfig.from_env(tmp_path / "res", env={})
    db = JobDB(tmp_path / "res" / ".state" / "jobs.sqlite3")
    db.insert("11111111-1111-1111-1111-111111111111", "succeeded", time.time(), {"values": 5}, [])
    db.close()
    runtime = started(config)
    job = runtime.store.get("11111111-1111-1111-1111-111111111111")
    assert job is not None and job.status == "succeeded" and job.request is None
    stopped(runtime)
