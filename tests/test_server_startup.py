"""Starting a server: one server per state folder (a second one touches nothing of the first's), and
every start-up mistake (busy port, bad port, foreign host, output folder that is a file) is one line
and a non-zero exit, checked before any job record is restored."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time

import pytest

from acestep_core.cli import main
from acestep_core.server import Runtime, ServerConfig, create_app
from acestep_core.server.job_db import JobDB
from acestep_core.server.state_lock import StateFolderInUseError, StateLock
from server_harness import LiveServer, http

TASK = "22222222-2222-2222-2222-222222222222"


def live_job(out):
    """A queued job of a running server: its record and its upload."""
    upload = out / ".uploads" / "src_audio-live.wav"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"RIFF")
    db = JobDB(out / ".state" / "jobs.sqlite3")
    db.insert(TASK, "queued", time.time(), {"values": {"prompt": "live"}}, [str(upload)])
    db.close()
    return upload


def status_of(out) -> str:
    conn = sqlite3.connect(out / ".state" / "jobs.sqlite3")
    try:
        return conn.execute("SELECT status FROM jobs WHERE task_id = ?", (TASK,)).fetchone()[0]
    finally:
        conn.close()


def test_a_second_runtime_on_the_same_folder_answers_503_and_touches_nothing(tmp_path):
    out = tmp_path / "res"
    upload = live_job(out)
    holder = StateLock(out / ".state")  # the first server
    holder.acquire()
    try:
        second = Runtime(provider=None, config=ServerConfig.from_env(out, env={}))
        with pytest.raises(StateFolderInUseError, match="another ACE-Step server is using the state folder"):
            asyncio.run(second.start())
        assert status_of(out) == "queued" and upload.exists()

        # Inside ComfyUI the runtime starts on the first request: the client gets the reason as a 503.
        factory = lambda rt, prefix: create_app(rt, prefix=prefix, start_runtime=False)  # noqa: E731
        with LiveServer(second, app_factory=factory) as live:
            reply = http("GET", live.url + "/health")
            assert reply.status == 503, reply.body
            assert "another ACE-Step server is using this server's state folder" in reply.error
            assert str(tmp_path) not in reply.error
            assert status_of(out) == "queued" and upload.exists()
            holder.release()  # the first server stopped: the next request starts this one
            assert http("GET", live.url + "/health").status == 200
        assert status_of(out) == "failed"  # now restored by its own server, as after a restart
    finally:
        holder.release()


def serve(tmp_path, capsys, *flags) -> tuple[int, str]:
    try:
        rc = main(["serve", "--tiny", "--output-dir", str(tmp_path / "res"), *flags])
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err.strip().splitlines()[-1]


def test_serve_refuses_a_state_folder_another_server_holds(tmp_path, capsys):
    upload = live_job(tmp_path / "res")
    holder = StateLock(tmp_path / "res" / ".state")
    holder.acquire()
    try:
        rc, line = serve(tmp_path, capsys, "--port", "0")
    finally:
        holder.release()
    assert rc == 1 and line.startswith("error: another ACE-Step server is using the state folder")
    assert status_of(tmp_path / "res") == "queued" and upload.exists()


def test_serve_on_a_busy_port_names_it_and_restores_nothing(tmp_path, capsys):
    upload = live_job(tmp_path / "res")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, line = serve(tmp_path, capsys, "--port", str(port))
    assert rc == 1 and line == (f"error: 127.0.0.1:{port} is already in use (another server?); stop it or "
                                "give another --port (0 picks a free one)")
    assert status_of(tmp_path / "res") == "queued" and upload.exists()


@pytest.mark.parametrize("flags, code, says", [
    (("--port", "99999"), 2, "argument --port: '99999' is not a port: give 0-65535"),
    (("--port", "0", "--host", "192.0.2.1"), 1, "--host 192.0.2.1 is not an address of this machine"),
])
def test_serve_flag_mistakes_are_one_line(tmp_path, capsys, flags, code, says):
    rc, line = serve(tmp_path, capsys, *flags)
    assert rc == code and says in line


def test_serve_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "res").write_text("not a folder")
    rc, line = serve(tmp_path, capsys, "--port", "0")
    assert rc == 2 and line.startswith(f"error: --output-dir {tmp_path / 'res'}: a file (not a folder)")
