"""The REST API end to end: a real aiohttp server on 127.0.0.1, the real engine on the tiny
fixtures, and a real HTTP client walking the documented flows."""

from __future__ import annotations

import asyncio
import math
import threading
import urllib.parse
from pathlib import Path

import aiohttp
import pytest
import torch

from acestep_core.audio_io import load_audio, save_audio
from acestep_core.server import Runtime, ServerConfig
from server_harness import LiveServer, http, query, release, result_items, tiny_provider, wait_done

# Small, fast jobs: the tiny models make noise, the point is the plumbing around them.
FAST = {"inference_steps": 2, "audio_duration": 10, "batch_size": 1, "thinking": False,
        "use_cot_caption": False, "use_cot_language": False}


@pytest.fixture(scope="module")
def provider(tiny_dir):
    return tiny_provider(tiny_dir, use_lm=False)


@pytest.fixture(scope="module")
def server(provider, tmp_path_factory):
    config = ServerConfig.from_env(tmp_path_factory.mktemp("api") / "results", env={})
    with LiveServer(Runtime(provider, config)) as live:
        yield live


@pytest.fixture(scope="module")
def first_song(server):
    """health -> release_task -> poll -> result, shared by the tests that need an earlier result."""
    body = dict(FAST, prompt="bright synth pop", lyrics="[Verse]\nhello hello", batch_size=2, seed=42,
                bpm=120, key_scale="A minor", time_signature="4/4", vocal_language="en", audio_format="mp3")
    reply = release(server.url, body)
    assert reply.status == 200, reply.body
    task_id = reply.data["task_id"]
    return task_id, wait_done(server.url, task_id)


def download(base: str, file_url: str, headers=None):
    return http("GET", base + file_url, headers=headers)


def test_health_is_the_official_wrapper(server):
    reply = http("GET", server.url + "/health")
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"data", "code", "error", "timestamp", "extra"}
    assert body["data"] == {"status": "ok", "service": "ACE-Step API", "version": "1.0"}
    assert body["code"] == 200 and body["error"] is None and isinstance(body["timestamp"], int)


def test_models_lists_the_loaded_dit(server):
    data = http("GET", server.url + "/v1/models").json()  # native fields beside OpenRouter's `data` list
    assert data["models"] == [{"name": "acestep-v15-turbo-tiny", "is_default": True}]
    assert data["default_model"] == "acestep-v15-turbo-tiny"
    assert data["lm_model"] is None


def test_generate_poll_download_and_decode(server, first_song, tmp_path):
    task_id, item = first_song
    assert item["task_id"] == task_id and item["status"] == 1, item
    songs = result_items(item)
    assert len(songs) == 2
    seeds = songs[0]["seed_value"].split(",")
    assert seeds == ["42", "43"]  # one given seed seeds the batch consecutively
    for n, song in enumerate(songs, start=1):
        assert song["status"] == 1 and song["dit_model"] == "acestep-v15-turbo-tiny"
        assert song["prompt"] == "bright synth pop" and song["lyrics"] == "[Verse]\nhello hello"
        assert song["metas"]["bpm"] == 120 and song["metas"]["keyscale"] == "A minor"
        assert song["metas"]["timesignature"] == "4" and song["metas"]["duration"] == pytest.approx(10.0, abs=0.05)
        assert song["file"].startswith("/v1/audio?path=")
        path = Path(urllib.parse.unquote(song["file"].split("path=", 1)[1]))
        assert path.name == f"{task_id}_{n}.mp3"
        reply = download(server.url, song["file"])
        assert reply.status == 200 and reply.headers["Content-Type"] == "audio/mpeg"
        assert reply.body[:3] == b"ID3" or reply.body[:2] == b"\xff\xfb"
        saved = tmp_path / f"{n}.mp3"
        saved.write_bytes(reply.body)
        audio = load_audio(saved)
        assert audio.shape[0] == 2
        assert audio.shape[1] / 48000 == pytest.approx(10.0, abs=0.1)
        assert torch.isfinite(audio).all() and audio.abs().max() > 0
    # different seeds -> different audio
    a = load_audio(tmp_path / "1.mp3")
    b = load_audio(tmp_path / "2.mp3")
    n = min(a.shape[1], b.shape[1])
    assert not torch.allclose(a[:, :n], b[:, :n])


def test_the_result_says_what_the_turbo_model_did_not_run(first_song):
    _, item = first_song
    for song in result_items(item):
        assert song["params"]["inference_steps"] == 8
        assert any("inference_steps 2 was not used" in note for note in song["notices"]), song["notices"]


def test_stats_count_jobs_and_time_them(server, first_song):
    data = http("GET", server.url + "/v1/stats").data
    assert data["queue_maxsize"] == 200 and data["queue_size"] == 0
    assert data["jobs"]["succeeded"] >= 1 and data["jobs"]["running"] == 0 and data["jobs"]["queued"] == 0
    assert data["jobs"]["total"] == sum(data["jobs"][k] for k in ("queued", "running", "succeeded", "failed"))
    # the measured average replaces the configured initial guess (5.0) once a job finished
    assert data["avg_job_seconds"] > 0 and data["avg_job_seconds"] != 5.0


SR = 48000
SOURCE_SECONDS = 5.0


@pytest.fixture(scope="module")
def repainted(server, tmp_path_factory):
    """A 5 s tone uploaded as multipart `src_audio` and repainted between 1.5 s and 3 s."""
    tmp = tmp_path_factory.mktemp("repaint")
    t = torch.arange(int(SOURCE_SECONDS * SR)) / SR
    tone = 0.4 * torch.sin(2 * math.pi * 220.0 * t)
    source = torch.stack([tone, tone])
    src = tmp / "source.wav"
    save_audio(src, source, SR, format="wav")

    form = aiohttp.FormData()
    for key, value in dict(FAST, task_type="repaint", repainting_start=1.5, repainting_end=3.0,
                           prompt="drum break", audio_format="wav", seed=3).items():
        form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
    form.add_field("src_audio", src.read_bytes(), filename="source.wav", content_type="audio/wav")
    reply = release(server.url, data=form)
    assert reply.status == 200, reply.body
    return wait_done(server.url, reply.data["task_id"]), source


def test_repaint_with_an_uploaded_file(server, repainted, tmp_path):
    item, source = repainted
    assert item["status"] == 1, item
    song = result_items(item)[0]
    got = download(server.url, song["file"])
    assert got.status == 200 and got.headers["Content-Type"] == "audio/wav"
    out = tmp_path / "repainted.wav"
    out.write_bytes(got.body)
    audio = load_audio(out)
    assert audio.shape[1] / SR == pytest.approx(SOURCE_SECONDS, abs=0.05)  # repaint keeps the length
    # outside the window the source survives (balanced mode splices the original back in)
    keep = slice(int(3.6 * SR), int(4.8 * SR))
    inside = slice(int(1.8 * SR), int(2.7 * SR))
    err_keep = (audio[:, keep] - source[:, keep]).abs().mean()
    err_inside = (audio[:, inside] - source[:, inside]).abs().mean()
    assert err_keep < 0.05 < err_inside
    # the upload was a temporary file of the job: gone once the job finished
    assert not any(server.runtime.upload_dir.glob("*"))


def test_continuation_from_an_earlier_result(server, repainted, tmp_path):
    item, _ = repainted
    previous = result_items(item)[0]["file"]  # a result URL is accepted as src_audio_path
    body = dict(FAST, task_type="continuation", src_audio_path=previous, repainting_end=8.0,
                prompt="keep going", audio_format="flac")
    # as an url-encoded form this time
    reply = http("POST", server.url + "/release_task",
                 data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()})
    assert reply.status == 200, reply.body
    done = wait_done(server.url, reply.data["task_id"])
    assert done["status"] == 1, done
    got = download(server.url, result_items(done)[0]["file"])
    assert got.status == 200 and got.body[:4] == b"fLaC"
    out = tmp_path / "continued.flac"
    out.write_bytes(got.body)
    assert load_audio(out).shape[1] / SR == pytest.approx(8.0, abs=0.1)  # 5 s source + 3 s


def test_cover_of_an_earlier_result(server, repainted, tmp_path):
    item, _ = repainted
    body = dict(FAST, task_type="cover", src_audio_path=result_items(item)[0]["file"], audio_cover_strength=0.5,
                prompt="jazz cover", audio_format="wav32", thinking=True)  # thinking is skipped for cover
    reply = release(server.url, body)
    assert reply.status == 200, reply.body
    done = wait_done(server.url, reply.data["task_id"])
    assert done["status"] == 1, done
    song = result_items(done)[0]
    assert song["lm_model"] is None and song["file"].endswith(".wav")
    out = tmp_path / "cover.wav"
    out.write_bytes(http("GET", server.url + song["file"]).body)
    assert load_audio(out).shape[1] / SR == pytest.approx(SOURCE_SECONDS, abs=0.05)  # cover keeps the length


def test_lm_requests_on_a_server_without_one_are_refused_at_submit(server):
    for extra in ({"thinking": True}, {"sample_mode": True}, {"sample_query": "a calm song"}, {"use_format": True}):
        reply = release(server.url, dict(FAST, prompt="x", **extra))
        assert reply.status == 503, (extra, reply.body)
        assert f"{next(iter(extra))} needs the 5 Hz LM" in reply.error and "--lm" in reply.error
    # a cover never runs the LM (the source sets the song), so thinking there is no reason to refuse
    first = release(server.url, dict(FAST, prompt="x", audio_format="wav", seed=4))
    song = result_items(wait_done(server.url, first.data["task_id"]))[0]["file"]
    cover = release(server.url, dict(FAST, task_type="cover", thinking=True, src_audio_path=song))
    assert cover.status == 200, cover.body
    assert wait_done(server.url, cover.data["task_id"])["status"] == 1


def test_failed_job_reports_why_and_the_next_job_succeeds(server):
    # a track task needs the base model, which only the job itself finds out (this server has turbo)
    first = release(server.url, dict(FAST, prompt="x", audio_format="wav", seed=2))
    song = result_items(wait_done(server.url, first.data["task_id"]))[0]["file"]
    failing = release(server.url, dict(FAST, task_type="complete", track_classes=["drums"], src_audio_path=song))
    assert failing.status == 200
    item = wait_done(server.url, failing.data["task_id"])
    assert item["status"] == 2
    assert "base model" in item["error"]
    assert "base model" in result_items(item)[0]["error"]

    ok = release(server.url, dict(FAST, prompt="after the failure", audio_format="opus"))
    done = wait_done(server.url, ok.data["task_id"])
    assert done["status"] == 1, done
    got = download(server.url, result_items(done)[0]["file"])
    assert got.status == 200 and got.headers["Content-Type"] == "audio/ogg" and got.body[:4] == b"OggS"
    assert http("GET", server.url + "/v1/stats").data["jobs"]["failed"] >= 1


def test_unknown_task_id_is_a_failure_not_an_endless_wait(server):
    item = query(server.url, "00000000-0000-0000-0000-000000000000")
    assert item["status"] == 2 and "not found" in item["error"]
    # the official form encoding: task_id_list as a JSON string in a form field
    form = http("POST", server.url + "/query_result",
                data={"task_id_list": '["00000000-0000-0000-0000-000000000000"]'})
    assert form.status == 200 and form.data[0]["status"] == 2
    bad = http("POST", server.url + "/query_result", json={"task_id_list": {"a": 1}})
    assert bad.status == 400 and bad.error.startswith("task_id_list:")


def test_bodies_the_official_server_reads_best_effort(server):
    # key=value without a Content-Type (Python's http.client with a string body) is read as a form
    form = http("POST", server.url + "/release_task", data=b"prompt=x&audio_duration=10&batch_size=1&inference_steps=2",
                skip_auto_headers=("Content-Type",))
    assert form.status == 200, form.body
    assert "read as a form" in form.json()["extra"]["notices"][0]
    assert wait_done(server.url, form.data["task_id"])["status"] == 1
    # no task list at all: an empty answer
    assert http("POST", server.url + "/query_result", json={}).data == []
    # but an empty JSON body would queue a two-minute song of defaults: refused
    empty = http("POST", server.url + "/release_task", data=b"", headers={"Content-Type": "application/json"})
    assert empty.status == 400 and empty.error.startswith("body: is empty")


def test_official_fields_without_effect_are_named_as_such(server):
    reply = release(server.url, dict(FAST, prompt="x", constrained_decoding_debug=True, use_tiled_decode=False,
                                     audio_duraton=12))
    assert reply.status == 200, reply.body
    notices = reply.json()["extra"]["notices"]
    assert notices[0] == "ignored unknown field(s): audio_duraton (did you mean 'audio_duration'?)"
    assert notices[1].startswith("official field(s) that do not apply to this server")
    assert "constrained_decoding_debug" in notices[1] and "use_tiled_decode" in notices[1]
    assert reply.json()["extra"]["did_you_mean"] == {"audio_duraton": "audio_duration"}


def test_short_key_names_are_read_as_keys(server):
    reply = release(server.url, dict(FAST, prompt="x", key_scale="Am", bpm=100, time_signature="4"))
    assert reply.status == 200, reply.body
    song = result_items(wait_done(server.url, reply.data["task_id"]))[0]
    assert song["metas"]["keyscale"] == "A minor"


def test_random_sample_returns_bundled_examples(server):
    simple = http("POST", server.url + "/create_random_sample", json={"sample_type": "simple_mode"}).data
    assert set(simple) == {"description", "instrumental", "vocal_language"}
    custom = http("POST", server.url + "/create_random_sample", json={"sample_type": "custom_mode"}).data
    assert {"caption", "lyrics", "bpm", "duration", "keyscale", "language", "timesignature"} <= set(custom)
    assert http("POST", server.url + "/create_random_sample").data.keys() == simple.keys()  # default type
    # the official server answers any other type with a custom example; this one also says so
    other = http("POST", server.url + "/create_random_sample", json={"sample_type": "jazz"})
    assert other.status == 200 and other.data.keys() == custom.keys()
    assert "'jazz' is neither simple_mode nor custom_mode" in other.json()["extra"]["notices"][0]
    # a bundled custom example is a valid release_task body as is (except the LM flags)
    from acestep_core.server.params import parse_release_request

    parse_release_request(custom)


def test_format_input_without_lm_is_a_clear_503_and_bad_fields_are_400(server):
    reply = http("POST", server.url + "/format_input", json={"prompt": "pop", "lyrics": "la"})
    assert reply.status == 503 and "5 Hz LM" in reply.error
    bad = http("POST", server.url + "/format_input", json={"prompt": "pop", "temperature": "hot"})
    assert bad.status == 400 and bad.error.startswith("temperature:")
    bad = http("POST", server.url + "/format_input", json={"param_obj": "{oops"})
    assert bad.status == 400 and bad.error.startswith("param_obj:")


@pytest.mark.parametrize("kwargs, status, starts", [
    ({"json": {"bpm": "fast"}}, 400, "bpm:"),
    ({"json": {"audio_format": "wma"}}, 400, "audio_format:"),
    ({"json": {"task_type": "repaint"}}, 400, "src_audio:"),
    ({"json": {"task_type": "cover", "src_audio_path": "/etc/passwd"}}, 400, "src_audio_path:"),
    ({"json": [1, 2]}, 400, "body:"),
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "body:"),
    ({"data": b"\x00\x01", "headers": {"Content-Type": "application/octet-stream"}}, 415, "Unsupported"),
])
def test_bad_requests_name_the_problem(server, kwargs, status, starts):
    reply = release(server.url, **kwargs)
    assert reply.status == status, reply.body
    assert reply.json()["code"] == status and reply.error.startswith(starts)


def test_uploads_are_decoded_and_size_limited(provider, tmp_path):
    config = ServerConfig.from_env(tmp_path / "results", env={"ACESTEP_MAX_UPLOAD_MB": "0.01"})
    with LiveServer(Runtime(provider, config)) as live:
        form = aiohttp.FormData()
        form.add_field("task_type", "cover")
        form.add_field("src_audio", b"this is not audio" * 10, filename="x.mp3", content_type="audio/mpeg")
        reply = release(live.url, data=form)
        assert reply.status == 400 and reply.error.startswith("src_audio:") and "decoded" in reply.error

        form = aiohttp.FormData()
        form.add_field("task_type", "cover")
        form.add_field("ctx_audio", b"\0" * 20000, filename="big.wav", content_type="audio/wav")
        reply = release(live.url, data=form)
        assert reply.status == 413 and "limit" in reply.error
        assert not any(live.runtime.upload_dir.glob("*"))  # rejected uploads are deleted


def test_audio_path_escapes_are_403(server, first_song, tmp_path):
    _, item = first_song
    good = Path(urllib.parse.unquote(result_items(item)[0]["file"].split("path=", 1)[1]))
    secret = tmp_path / "secret.mp3"
    secret.write_bytes(b"ID3secret")
    link = good.parent / "link.mp3"
    link.symlink_to(secret)
    try:
        for raw in (str(secret), str(good.parent / ".." / ".." / secret.name), "../../etc/passwd",
                    "/etc/passwd", str(link), str(good.parent / "x.json")):
            reply = http("GET", server.url + "/v1/audio", params={"path": raw})
            assert reply.status == 403, (raw, reply.body)
            assert b"secret" not in reply.body
    finally:
        link.unlink()
    assert http("GET", server.url + "/v1/audio", params={"path": str(good.parent / "gone.mp3")}).status == 404
    assert http("GET", server.url + "/v1/audio").status == 400


def test_full_queue_is_429(provider, tmp_path):
    open_gate = threading.Event()

    async def gate():  # holds the worker, so queued jobs stay queued
        while not open_gate.is_set():
            await asyncio.sleep(0.02)

    config = ServerConfig.from_env(tmp_path / "results", env={"ACESTEP_QUEUE_MAXSIZE": "2"})
    with LiveServer(Runtime(provider, config, idle_gate=gate)) as live:
        first = release(live.url, dict(FAST, prompt="one"))
        second = release(live.url, dict(FAST, prompt="two"))
        assert (first.status, second.status) == (200, 200)
        assert (first.data["queue_position"], second.data["queue_position"]) == (1, 2)
        third = release(live.url, dict(FAST, prompt="three"))
        assert third.status == 429 and third.error == "Server busy: queue is full"
        stats = http("GET", live.url + "/v1/stats").data
        assert stats["queue_size"] == 2 and stats["queue_maxsize"] == 2 and stats["jobs"]["queued"] == 2
        item = query(live.url, second.data["task_id"])
        assert item["status"] == 0 and result_items(item)[0]["queue_position"] == 2
        # the worker is never started on these: closing the server drops them


def test_api_key(provider, tmp_path):
    config = ServerConfig.from_env(tmp_path / "results", env={"ACESTEP_API_KEY": "s3cret"})
    with LiveServer(Runtime(provider, config)) as live:
        good = {"Authorization": "Bearer s3cret"}
        assert http("GET", live.url + "/health").status == 200  # health stays open
        for method, path in (("GET", "/v1/models"), ("GET", "/v1/stats"), ("GET", "/v1/audio?path=x.mp3")):
            assert http(method, live.url + path).status == 401
            assert http(method, live.url + path, headers={"Authorization": "Bearer nope"}).status == 401
        assert http("GET", live.url + "/v1/stats", headers=good).status == 200
        assert http("GET", live.url + "/v1/stats", headers={"Authorization": "s3cret"}).status == 200

        body = {"task_id_list": ["00000000-0000-0000-0000-000000000000"]}
        assert http("POST", live.url + "/query_result", json=body).status == 401
        denied = http("POST", live.url + "/query_result", json=dict(body, ai_token="wrong"), headers=good)
        assert denied.status == 401 and denied.error == "Invalid ai_token"  # the body token wins
        assert http("POST", live.url + "/query_result", json=dict(body, ai_token="s3cret")).status == 200
        assert http("POST", live.url + "/query_result", json=body, headers=good).status == 200

        assert release(live.url, dict(FAST)).status == 401
        form = aiohttp.FormData()
        form.add_field("src_audio", b"ID3" + b"\0" * 100, filename="a.mp3")
        assert release(live.url, data=form, headers={"Authorization": "Bearer nope"}).status == 401
        assert not any(live.runtime.upload_dir.glob("*"))
        assert http("POST", live.url + "/create_random_sample", json={}).status == 401
        assert http("POST", live.url + "/format_input", json={"ai_token": "bad"}).status == 401


@pytest.mark.slow
def test_thinking_runs_the_lm_plan_through_the_dit(tiny_dir, tmp_path):
    """thinking=true with every metadata field given: the LM skips its chain of thought and writes
    exactly duration x 5 audio codes, which the DiT then follows (kept short: CPU, random weights)."""
    provider = tiny_provider(tiny_dir, use_lm=True)
    config = ServerConfig.from_env(tmp_path / "results", env={})
    with LiveServer(Runtime(provider, config)) as live:
        assert http("GET", live.url + "/v1/models").json()["lm_model"] == "acestep-5Hz-lm-tiny"
        body = dict(FAST, prompt="calm piano", thinking=True, bpm=90, key_scale="D minor", time_signature="3",
                    audio_duration=10, lm_cfg_scale=1.0, lm_seed=5, seed=1)
        reply = release(live.url, body)
        assert reply.status == 200, reply.body
        item = wait_done(live.url, reply.data["task_id"])
        assert item["status"] == 1, item
        song = result_items(item)[0]
        assert song["lm_model"] == "acestep-5Hz-lm-tiny" and song["lm_seed"] == 5
        assert "audio_codes=50" in song["generation_info"] and "lm_think_s" in song["generation_info"]
        assert song["metas"]["bpm"] == 90 and song["metas"]["keyscale"] == "D minor"
        got = http("GET", live.url + song["file"])
        out = tmp_path / "thought.mp3"
        out.write_bytes(got.body)
        assert load_audio(out).shape[1] / SR == pytest.approx(10.0, abs=0.1)


def test_extract_and_lego_on_a_base_model_server(tiny_dir, tmp_path):
    """The base model's track tasks over HTTP: an uploaded mix in, a file of the same length out."""
    provider = tiny_provider(tiny_dir)
    provider_base = type(provider)(dit=str(tiny_dir / "acestep-v15-base-tiny"), vae=str(tiny_dir / "vae-tiny"),
                                   text_encoder=str(tiny_dir / "Qwen3-Embedding-tiny"), lm=None, use_lm=False)
    source = torch.sin(torch.linspace(0, 2000, int(4.0 * SR))).expand(2, -1) * 0.3
    src = tmp_path / "mix.wav"
    save_audio(src, source, SR, format="wav")
    config = ServerConfig.from_env(tmp_path / "results", env={})
    with LiveServer(Runtime(provider_base, config)) as live:
        form = aiohttp.FormData()
        for key, value in dict(FAST, task_type="extract", track_name="vocals", audio_format="wav", seed=3).items():
            form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
        form.add_field("src_audio", src.read_bytes(), filename="mix.wav", content_type="audio/wav")
        reply = release(live.url, data=form)
        assert reply.status == 200, reply.body
        done = wait_done(live.url, reply.data["task_id"])
        assert done["status"] == 1, done
        out = tmp_path / "vocals.wav"
        out.write_bytes(download(live.url, result_items(done)[0]["file"]).body)
        assert load_audio(out).shape[1] / SR == pytest.approx(4.0, abs=0.05)  # locked to the source

        lego = release(live.url, dict(FAST, task_type="lego", track_name="drums", src_audio_path=str(src),
                                      repainting_start=1.0, repainting_end=3.0, audio_format="flac"))
        assert lego.status == 400 and lego.error.startswith("src_audio_path:")  # outside the allowed folders
        lego = release(live.url, dict(FAST, task_type="lego", track_name="drums",
                                      src_audio_path=result_items(done)[0]["file"], repainting_start=1.0,
                                      repainting_end=3.0, audio_format="flac"))
        assert lego.status == 200, lego.body
        added = wait_done(live.url, lego.data["task_id"])
        assert added["status"] == 1, added
        assert result_items(added)[0]["file"].endswith(".flac")


def test_track_task_on_a_turbo_server_fails_with_the_fix(server):
    source_less = release(server.url, dict(FAST, task_type="extract", track_name="vocals"))
    assert source_less.status == 400 and source_less.error.startswith("src_audio:")
    first = release(server.url, dict(FAST, prompt="x", audio_format="wav", seed=1))
    song = result_items(wait_done(server.url, first.data["task_id"]))[0]["file"]
    reply = release(server.url, dict(FAST, task_type="complete", track_classes=["drums", "bass"], src_audio_path=song))
    assert reply.status == 200, reply.body
    item = wait_done(server.url, reply.data["task_id"])
    assert item["status"] == 2
    assert "needs the ACE-Step 1.5 base model" in item["error"] and "acestep-v15-base" in item["error"]


def test_aac_results_download_as_audio_aac(server, tmp_path):
    reply = release(server.url, dict(FAST, prompt="aac please", audio_format="aac", seed=3))
    assert reply.status == 200, reply.body
    (song,) = result_items(wait_done(server.url, reply.data["task_id"]))
    assert song["file"].endswith(".aac")
    got = download(server.url, song["file"])
    assert got.status == 200 and got.headers["Content-Type"] == "audio/aac"
    saved = tmp_path / "song.aac"
    saved.write_bytes(got.body)
    assert load_audio(saved).shape[1] / 48000 == pytest.approx(10.0, abs=0.1)


def test_use_adg_is_accepted_and_reported(server):
    reply = release(server.url, dict(FAST, prompt="adg", use_adg=True, seed=4))
    assert reply.status == 200, reply.body
    (song,) = result_items(wait_done(server.url, reply.data["task_id"]))
    assert song["params"]["use_adg"] is True
    assert any("use_adg was not used" in note for note in song["notices"])  # this server's DiT is turbo


def test_an_unknown_model_runs_on_the_default_and_says_so(server):
    reply = release(server.url, dict(FAST, prompt="x", model="acestep-v15-nonexistent"))
    assert reply.status == 200, reply.body
    notices = reply.json()["extra"]["notices"]
    assert any("model 'acestep-v15-nonexistent' is not on this server; acestep-v15-turbo-tiny runs it" in n
               for n in notices), notices
    (song,) = result_items(wait_done(server.url, reply.data["task_id"]))
    assert song["dit_model"] == "acestep-v15-turbo-tiny"


def test_unknown_paths_and_wrong_methods_answer_in_the_json_wrapper(server):
    missing = http("GET", server.url + "/v1/nothing-here")
    assert missing.status == 404 and missing.json()["code"] == 404
    assert missing.error.startswith("no such endpoint: GET /v1/nothing-here")
    wrong = http("GET", server.url + "/release_task")
    assert wrong.status == 405 and wrong.error == "GET is not allowed on /release_task; use POST"
    assert http("GET", server.url + "/health").status == 200  # still serving


def test_head_on_a_result_gives_its_size_and_type(server, first_song):
    _, item = first_song
    url = result_items(item)[0]["file"]
    head, full = http("HEAD", server.url + url), download(server.url, url)
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Type"] == "audio/mpeg"
    assert int(head.headers["Content-Length"]) == len(full.body)
