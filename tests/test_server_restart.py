"""A real `serve` process with finished, running and queued jobs gets SIGTERM, then SIGKILL, and is
started again on the same output folder: every id it accepted still answers, finished ones with
files that download and decode, and nothing is left half-written or orphaned."""

from __future__ import annotations

import io
import signal
import sqlite3
import time
import wave

import aiohttp
import pytest

from acestep_core.audio_io import load_audio
from server_harness import ServeProcess, http, query, release, result_items, wait_done

pytestmark = pytest.mark.slow

FAST = {"inference_steps": 2, "audio_duration": 10, "batch_size": 1, "thinking": False,
        "use_cot_caption": False, "use_cot_language": False, "audio_format": "wav"}
# Twenty custom turbo steps (the most it takes) on a 60 s song: the job is still denoising when
# the signal arrives, and each step ends well within the grace period.
LONG = dict(FAST, audio_duration=60, prompt="a long one",
            timesteps=",".join(f"{1 - i / 20:.2f}" for i in range(20)))
GRACE_S = 5.0
# The grace period, the 1 s the server gives open connections, and process start-up / teardown.
EXIT_LIMIT_S = GRACE_S + 1.0 + 10.0


def wav_bytes(seconds: float, rate: int = 48000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x01\x00" * int(seconds * rate))
    return buffer.getvalue()


def cover_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in dict(FAST, task_type="cover").items():
        form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
    form.add_field("src_audio", wav_bytes(3.0), filename="source.wav", content_type="audio/wav")
    return form


def wait_running(base: str, task_id: str, limit_s: float = 300) -> dict:
    """Poll until the job is denoising (its stage says so) and has made progress."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        item = query(base, task_id)
        assert item["status"] == 0, item
        if item["progress_text"] == "generating" and result_items(item)[0]["progress"] > 0:
            return item
        time.sleep(0.2)
    raise AssertionError(f"job {task_id} never started denoising")


def no_partial_files(root) -> list:
    return [p for p in root.rglob("*") if ".partial." in p.name]


def test_jobs_survive_sigterm_and_sigkill(tiny_dir, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    log_path = tmp_path / "server.log"
    env = {"ACESTEP_SHUTDOWN_GRACE": str(GRACE_S)}

    server = ServeProcess(tiny_dir, out, log_path, env)
    try:
        finished = release(server.url, dict(FAST, prompt="finished before the stop", seed=5)).data["task_id"]
        assert wait_done(server.url, finished)["status"] == 1
        running = release(server.url, LONG).data["task_id"]
        queued = [release(server.url, dict(FAST, prompt=f"queued {i}")).data["task_id"] for i in range(2)]
        upload = release(server.url, data=cover_form())
        assert upload.status == 200, upload.body
        queued.append(upload.data["task_id"])
        assert len(list((out / ".uploads").iterdir())) == 1  # the queued cover job owns its upload
        wait_running(server.url, running)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    took = server.stop(signal.SIGTERM, timeout=EXIT_LIMIT_S + 30)
    assert server.proc.returncode == 0, server.log[-3000:]
    assert took < EXIT_LIMIT_S, f"exit took {took:.1f} s:\n{server.log[-3000:]}"
    log = server.log
    assert "SIGTERM received" in log
    assert f"job {running} stopped at its next step" in log
    assert "3 queued job(s) kept on record" in log

    # On disk after the stop: no orphaned upload, no half-written file, no folder of the stopped job,
    # and a job database that passes SQLite's own check.
    assert list((out / ".uploads").iterdir()) == []
    assert no_partial_files(out) == []
    assert not (out / running).exists()
    db = sqlite3.connect(out / ".state" / "jobs.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    statuses = dict(db.execute("SELECT task_id, status FROM jobs").fetchall())
    db.close()
    assert statuses == {finished: "succeeded", running: "failed", **{q: "queued" for q in queued}}

    server = ServeProcess(tiny_dir, out, log_path, env)
    try:
        assert "5 restored" in server.log and "3 left unfinished by the last run" in server.log
        item = query(server.url, finished)
        assert item["status"] == 1
        files = result_items(item)
        assert len(files) == 1 and files[0]["metas"]["duration"] == 10.0
        download = http("GET", server.url + files[0]["file"])
        assert download.status == 200
        audio = load_audio(download.body)
        assert audio.shape[0] == 2 and abs(audio.shape[1] / 48000 - 10.0) < 0.05
        for task_id in [running] + queued:
            item = query(server.url, task_id)
            assert item["status"] == 2, item
            assert item["error"].startswith("server restarted before this job ran"), item
        assert "not found" in query(server.url, "00000000-0000-0000-0000-000000000000")["error"]
        stats = http("GET", server.url + "/v1/stats").data
        assert stats["jobs"]["total"] == 5 and stats["jobs"]["succeeded"] == 1 and stats["jobs"]["failed"] == 4

        # The restarted server runs new work; a SIGKILL in the middle of a job loses nothing either.
        again = release(server.url, dict(FAST, prompt="after the restart")).data["task_id"]
        assert wait_done(server.url, again)["status"] == 1
        killed = release(server.url, LONG).data["task_id"]
        wait_running(server.url, killed)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    server.stop(signal.SIGKILL)

    server = ServeProcess(tiny_dir, out, log_path, env)
    try:
        item = query(server.url, killed)
        assert item["status"] == 2 and "server restarted before this job ran" in item["error"]
        assert not (out / killed).exists()
        assert query(server.url, again)["status"] == 1 and query(server.url, finished)["status"] == 1
        assert no_partial_files(out) == []
        assert list((out / ".uploads").iterdir()) == []
    finally:
        server.stop(signal.SIGTERM)
    assert server.proc.returncode == 0
