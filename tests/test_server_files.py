"""Which files the server serves and reads: result folder only, no '..', no symlinks, no uploads."""

import os
import time

import pytest

from acestep_core.server.config import ServerConfig
from acestep_core.server.files import audio_url, resolve_request_audio, resolve_served_file
from acestep_core.server.params import FieldError


@pytest.fixture()
def layout(tmp_path):
    root = tmp_path / "results"
    (root / "job").mkdir(parents=True)
    (root / ".uploads").mkdir()
    good = root / "job" / "song_1.mp3"
    good.write_bytes(b"ID3fake")
    (root / ".uploads" / "src_audio_x.mp3").write_bytes(b"upload")
    (root / "job" / "notes.json").write_text("{}")
    outside = tmp_path / "secret.mp3"
    outside.write_bytes(b"secret")
    return root, good, outside


def serve(raw, root):
    return resolve_served_file(raw, root, root / ".uploads")


def test_serves_result_files_by_absolute_and_relative_path(layout):
    root, good, _ = layout
    assert serve(str(good), root) == good.resolve()
    assert serve("job/song_1.mp3", root) == good.resolve()


@pytest.mark.parametrize("make_raw", [
    lambda root, good, outside: str(outside),
    lambda root, good, outside: str(root / "job" / ".." / ".." / "secret.mp3"),
    lambda root, good, outside: str(root / "job" / ".." / "job" / "song_1.mp3"),
    lambda root, good, outside: "../secret.mp3",
    lambda root, good, outside: str(root / ".uploads" / "src_audio_x.mp3"),
    lambda root, good, outside: str(root / "job" / "notes.json"),
    lambda root, good, outside: "/etc/passwd",
    lambda root, good, outside: "",
])
def test_refuses_everything_else(layout, make_raw):
    root, good, outside = layout
    with pytest.raises(PermissionError):
        serve(make_raw(root, good, outside), root)


def test_refuses_symlinks_even_to_files_inside(layout):
    root, good, outside = layout
    (root / "job" / "link_out.mp3").symlink_to(outside)
    (root / "job" / "link_in.mp3").symlink_to(good)
    (root / "linkdir").symlink_to(root / "job", target_is_directory=True)
    for name in ("job/link_out.mp3", "job/link_in.mp3", "linkdir/song_1.mp3"):
        with pytest.raises(PermissionError):
            serve(str(root / name), root)


def test_missing_file_inside_is_404(layout):
    root, _, _ = layout
    with pytest.raises(FileNotFoundError):
        serve(str(root / "job" / "gone.mp3"), root)


def test_request_audio_accepts_result_urls_and_input_dirs(layout, tmp_path):
    root, good, outside = layout
    assert resolve_request_audio("src_audio_path", audio_url(good), root, []) == good.resolve()
    assert resolve_request_audio("src_audio_path", "http://h:1/acestep" + audio_url(good), root, []) == good.resolve()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.wav").write_bytes(b"x")
    assert resolve_request_audio("src_audio_path", "a.wav", root, [inputs]) == (inputs / "a.wav").resolve()
    for raw in (str(outside), "../secret.mp3", str(root / "job" / "none.mp3")):
        with pytest.raises(FieldError) as info:
            resolve_request_audio("src_audio_path", raw, root, [inputs])
        assert info.value.field == "src_audio_path"


def test_config_reads_the_official_environment(tmp_path):
    cfg = ServerConfig.from_env(tmp_path, env={"ACESTEP_QUEUE_MAXSIZE": "3", "ACESTEP_API_KEY": " k ",
                                               "ACESTEP_AVG_JOB_SECONDS": "2.5", "ACESTEP_MAX_UPLOAD_MB": "1"})
    assert cfg.queue_maxsize == 3 and cfg.api_key == "k" and cfg.avg_job_seconds == 2.5
    assert cfg.max_upload_bytes == 1024 * 1024
    with pytest.raises(ValueError, match="ACESTEP_QUEUE_MAXSIZE"):
        ServerConfig.from_env(tmp_path, env={"ACESTEP_QUEUE_MAXSIZE": "many"})
    with pytest.raises(ValueError, match="at least 1"):
        ServerConfig.from_env(tmp_path, env={"ACESTEP_QUEUE_MAXSIZE": "0"})


def test_cleanup_expires_old_jobs_and_stale_folders(tmp_path):
    import uuid

    from acestep_core.server.runtime import Runtime

    cfg = ServerConfig.from_env(tmp_path / "res", env={}, result_max_age_s=60.0)
    rt = Runtime(provider=None, config=cfg)
    rt.result_root.mkdir(parents=True)
    job = rt.store.create(request=None)
    rt.store.mark_running(job)
    rt.store.mark_succeeded(job, {"audio_urls": []})
    rt.job_dir(job).mkdir()
    (rt.job_dir(job) / "a.mp3").write_bytes(b"x")
    stale = rt.result_root / str(uuid.uuid4())
    stale.mkdir()
    old = time.time() - 3600
    os.utime(stale, (old, old))
    keep = rt.result_root / "not-a-task-folder"
    keep.mkdir()
    os.utime(keep, (old, old))

    assert rt.cleanup_once(now=time.time()) == 1  # only the stale folder: the job is fresh
    assert rt.job_dir(job).exists() and not stale.exists() and keep.exists()
    assert rt.cleanup_once(now=time.time() + 120) == 1
    assert rt.store.get(job.task_id) is None and not rt.job_dir(job).exists()
    assert keep.exists()
