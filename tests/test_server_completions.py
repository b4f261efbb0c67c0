"""POST /v1/chat/completions (the acestep skill's default `completion` mode) end to end: a real
server on 127.0.0.1, the tiny engine, requests shaped exactly like the skill's, audio decoded back."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import threading

import pytest
import torch

from acestep_core.audio_io import load_audio, save_audio
from acestep_core.server import Runtime, ServerConfig
from server_harness import LiveServer, http, query, tiny_provider

SR = 48000


@pytest.fixture(scope="module")
def provider(tiny_dir):
    return tiny_provider(tiny_dir, use_lm=False)


@pytest.fixture(scope="module")
def server(provider, tmp_path_factory):
    config = ServerConfig.from_env(tmp_path_factory.mktemp("chat") / "results", env={})
    with LiveServer(Runtime(provider, config)) as live:
        yield live


def skill_payload(model: str, caption: str, lyrics: str = "", **extra) -> dict:
    """What acestep.sh `generate -c CAPTION -l LYRICS --duration 10 --bpm 110 --seed 7` posts in
    completion mode with generation.thinking=false in config.json."""
    content = f"<prompt>{caption}</prompt>" + (f"<lyrics>{lyrics}</lyrics>" if lyrics else "")
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": False,
            "thinking": False, "use_format": False, "sample_mode": False, "use_cot_caption": True,
            "use_cot_language": False,
            "audio_config": {"format": "mp3", "vocal_language": "en", "duration": 10, "bpm": 110},
            "seed": 7}
    body.update(extra)
    return body


def chat(base: str, body, **kwargs):
    kwargs.setdefault("headers", {"Content-Type": "application/json; charset=utf-8"})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return http("POST", base + "/v1/chat/completions", data=data, **kwargs)


def decode_data_url(url: str, tmp_path, name: str) -> torch.Tensor:
    header, b64 = url.split(",", 1)
    assert header.startswith("data:audio/") and header.endswith(";base64")
    path = tmp_path / name
    path.write_bytes(base64.b64decode(b64))
    return load_audio(path)


def test_models_answers_the_openrouter_list_and_the_native_fields(server):
    body = http("GET", server.url + "/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["acestep/acestep-v15-turbo-tiny"]  # the skill reads .data[0].id
    assert body["data"][0]["output_modalities"] == ["audio", "text"] and body["data"][0]["is_default"] is True
    assert body["models"] == [{"name": "acestep-v15-turbo-tiny", "is_default": True}]
    assert body["default_model"] == "acestep-v15-turbo-tiny" and body["lm_model"] is None
    assert body["code"] == 200 and body["error"] is None


@pytest.fixture(scope="module")
def skill_reply(server):
    model = http("GET", server.url + "/v1/models").json()["data"][0]["id"]
    reply = chat(server.url, skill_payload(model, "bright synth pop", "[Verse]\nhello hello"))
    assert reply.status == 200, reply.body
    return reply.json()


def test_skill_request_returns_the_song_inline(skill_reply, server, tmp_path):
    body = skill_reply
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "acestep/acestep-v15-turbo-tiny"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert "**Caption:** bright synth pop" in content and "**BPM:** 110" in content
    assert "## Lyrics\n[Verse]\nhello hello" in content
    audio = choice["message"]["audio"]
    assert len(audio) == 1  # completion mode makes one song unless batch_size says otherwise
    assert audio[0]["type"] == "audio_url" and audio[0]["audio_url"]["url"].startswith("data:audio/mpeg;base64,")
    wave = decode_data_url(audio[0]["audio_url"]["url"], tmp_path, "song.mp3")
    assert wave.shape[0] == 2 and wave.shape[1] / SR == pytest.approx(10.0, abs=0.1)
    assert torch.isfinite(wave).all() and wave.abs().max() > 0
    # the job behind it is an ordinary one: /query_result knows it under the completion id
    item = query(server.url, body["id"][len("chatcmpl-"):])
    assert item["status"] == 1
    song = json.loads(item["result"])[0]
    assert song["metas"]["bpm"] == 110 and song["seed_value"] == "7" and song["lyrics"] == "[Verse]\nhello hello"


def test_same_seed_same_song_and_batch_returns_every_item(server, skill_reply, tmp_path):
    again = chat(server.url, skill_payload("acestep/acestep-v15-turbo-tiny", "bright synth pop",
                                           "[Verse]\nhello hello", batch_size=2))
    assert again.status == 200, again.body
    audio = again.json()["choices"][0]["message"]["audio"]
    assert len(audio) == 2
    first = decode_data_url(skill_reply["choices"][0]["message"]["audio"][0]["audio_url"]["url"], tmp_path, "a.mp3")
    batch_first = decode_data_url(audio[0]["audio_url"]["url"], tmp_path, "b.mp3")
    batch_second = decode_data_url(audio[1]["audio_url"]["url"], tmp_path, "c.mp3")
    n = min(first.shape[1], batch_first.shape[1], batch_second.shape[1])
    same = (first[:, :n] - batch_first[:, :n]).abs().mean()
    other = (batch_first[:, :n] - batch_second[:, :n]).abs().mean()
    # seed 7 -> the same first song (up to batched arithmetic and mp3), seed 8 -> a different second one
    assert same < 0.1 * other, (float(same), float(other))


def _tone_b64(seconds: float = 4.0) -> str:
    t = torch.arange(int(seconds * SR)) / SR
    tone = 0.4 * torch.sin(2 * math.pi * 220.0 * t)
    buf = io.BytesIO()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tone.wav"
        save_audio(path, torch.stack([tone, tone]), sample_rate=SR, format="wav")
        buf.write(path.read_bytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_cover_of_input_audio_and_streaming(server, tmp_path):
    """The skill's `cover song.wav` payload (text + input_audio parts), asked for as a stream."""
    body = {"model": "acestep/acestep-v15-turbo-tiny", "stream": True, "thinking": False, "use_format": False,
            "sample_mode": False, "task_type": "cover", "audio_cover_strength": 0.5, "inference_steps": 2,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "<prompt>rock cover</prompt>"},
                {"type": "input_audio", "input_audio": {"data": _tone_b64(), "format": "wav"}}]}],
            "audio_config": {"format": "wav", "vocal_language": "en"}}
    reply = chat(server.url, body)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/event-stream")
    events = [line[6:] for line in reply.body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    audio = [a for c in chunks for a in c["choices"][0]["delta"].get("audio") or []]
    assert len(audio) == 1 and audio[0]["audio_url"]["url"].startswith("data:audio/wav;base64,")
    wave = decode_data_url(audio[0]["audio_url"]["url"], tmp_path, "cover.wav")
    assert wave.shape[1] / SR == pytest.approx(4.0, abs=0.1)  # a cover keeps the source's length
    assert not any(server.runtime.upload_dir.glob("*"))  # the decoded input was removed with the job


@pytest.mark.parametrize("body, starts", [
    ({"model": "x"}, "messages: must be a non-empty list"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages: no caption, lyrics"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "audio_config": {"bpm": 12}},
     "audio_config.bpm: must be between 30 and 300"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "audio_config": {"format": "aiff"}},
     "audio_config.format: must be one of"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "batch_size": 99},
     "batch_size: must be between 1 and 8"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "messages[0].role: must be"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "@@"}}]}]},
     "messages[0].content[0].input_audio.data: is not valid base64"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": base64.b64encode(b"not audio at all" * 10).decode()}}]}]},
     "messages[0].content[0].input_audio: could not be decoded as audio"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "task_type": "cover"},
     "messages: task_type=cover needs source audio"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "stream": "maybe"}, "stream: expected"),
    ({"messages": [{"role": "user", "content": "a song"}], "sample_mode": "maybe"},
     "sample_mode: expected true or false, got 'maybe'"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "task_type": "extract",
      "track_name": "vocals"}, "messages: task_type=extract needs source audio"),
    ({"messages": [{"role": "user", "content": "<prompt>a</prompt>"}], "task_type": "lego",
      "track_name": "kazoo"}, "track_name: unknown track 'kazoo'"),
])
def test_bad_requests_are_400_naming_the_field(server, body, starts):
    reply = chat(server.url, body)
    assert reply.status == 400, reply.body
    assert reply.json()["detail"].startswith(starts), reply.json()["detail"]  # the skill prints .detail
    assert not any(server.runtime.upload_dir.glob("*"))


@pytest.mark.parametrize("word, on", [("true", True), ("yes", True), ("1", True), ("off", False), (0, False)])
def test_sample_mode_takes_the_yes_no_words_of_release_task(word, on):
    from acestep_core.server.completions import release_fields

    fields, chat = release_fields({"messages": [{"role": "user", "content": "<prompt>a song</prompt>"}],
                                   "sample_mode": word})
    assert fields["sample_mode"] is on
    assert (fields["sample_query"], fields["prompt"]) == (("a song", "") if on else ("", "a song"))


def test_track_task_routes_the_input_audio_as_source(server):
    """extract with input audio: the audio is the source (so the job runs), and this turbo server
    answers 400 (a request this model cannot serve) with the engine's reason naming the base model."""
    body = {"model": "acestep/acestep-v15-turbo-tiny", "task_type": "extract", "track_name": "vocals",
            "inference_steps": 2, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "<prompt>a song</prompt>"},
                {"type": "input_audio", "input_audio": {"data": _tone_b64(), "format": "wav"}}]}]}
    reply = chat(server.url, body)
    assert reply.status == 400, reply.body
    assert "needs the ACE-Step 1.5 base model" in reply.json()["detail"]
    assert not any(server.runtime.upload_dir.glob("*"))


def test_invalid_json_is_400(server):
    reply = chat(server.url, b"{not json")
    assert reply.status == 400 and reply.json()["detail"].startswith("body: invalid JSON")


def test_jobs_needing_the_lm_fail_with_503_and_say_why(server):
    # untagged words are a simple-mode description: the LM writes the song, and there is none here
    reply = chat(server.url, {"model": "acestep/acestep-v15-turbo-tiny",
                              "messages": [{"role": "user", "content": "a cheerful song about spring"}]})
    assert reply.status == 503
    assert "needs the 5 Hz LM" in reply.json()["detail"]


def test_api_key_and_full_queue(provider, tmp_path):
    open_gate = threading.Event()

    async def gate():  # holds the worker, so queued jobs stay queued
        while not open_gate.is_set():
            await asyncio.sleep(0.02)

    config = ServerConfig.from_env(tmp_path / "results", env={"ACESTEP_API_KEY": "s3cret",
                                                               "ACESTEP_QUEUE_MAXSIZE": "1"})
    with LiveServer(Runtime(provider, config, idle_gate=gate)) as live:
        body = skill_payload("acestep/x", "pop")
        assert chat(live.url, body).status == 401
        assert http("GET", live.url + "/v1/models").status == 401
        wrong = chat(live.url, body, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401 and wrong.json()["detail"] == "Invalid API key"
        good = {"Authorization": "Bearer s3cret"}
        # one job fills the queue; the chat request behind it is turned away at once
        first = http("POST", live.url + "/release_task", json={"prompt": "one", "ai_token": "s3cret"})
        assert first.status == 200
        busy = chat(live.url, body, headers=dict(good, **{"Content-Type": "application/json"}))
        assert busy.status == 429 and busy.json()["detail"] == "Server busy: queue is full"
