"""/release_task's analysis modes (extract_codes_only, full_analysis_only, analysis_only): answers from
the DiT's audio tokenizer and the LM in the official result shape, without audio files."""

from __future__ import annotations

import aiohttp
import pytest

from acestep_core.audio_io import save_audio
from acestep_core.codes import parse_audio_codes
from acestep_core.lm.planner import LMPlanner
from acestep_core.server import Runtime, ServerConfig
from conftest import load_golden
from server_harness import LiveServer, http, release, result_items, tiny_provider, wait_done

SR = 48000
LM_BUDGET_SECONDS = 10  # the random tiny LM runs to its token budget: keep it the smallest


@pytest.fixture(scope="module")
def short_lm(tmp_path_factory):
    """Cap the free-running LM calls (think / understand) at the planner's smallest budget."""
    patch = pytest.MonkeyPatch()
    for name in ("think", "understand"):
        original = getattr(LMPlanner, name)

        def capped(self, *args, _original=original, **kwargs):
            kwargs["max_duration"] = LM_BUDGET_SECONDS
            return _original(self, *args, **kwargs)

        patch.setattr(LMPlanner, name, capped)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "song.wav"
    save_audio(path, load_golden("source_audio")["src_a"], SR, "wav", quality=32)
    return path


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory, short_lm):
    provider = tiny_provider(tiny_dir, use_lm=True)
    config = ServerConfig.from_env(tmp_path_factory.mktemp("api") / "results", env={})
    with LiveServer(Runtime(provider, config)) as live:
        yield live


def _upload(song, **fields) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, str(value).lower() if isinstance(value, bool) else str(value))
    form.add_field("ctx_audio", song.read_bytes(), filename="song.wav")
    return form


def _run(server, **kwargs) -> dict:
    reply = release(server.url, **kwargs)
    assert reply.status == 200, reply.body
    item = wait_done(server.url, reply.data["task_id"])
    assert item["status"] == 1, item
    (answer,) = result_items(item)
    return answer


def test_extract_codes_only_gives_the_songs_codes(server, song):
    answer = _run(server, data=_upload(song, extract_codes_only=True))
    assert answer["status_message"] == "Audio Codes Extraction Success" and answer["audio_paths"] == []
    codes = parse_audio_codes(answer["audio_codes"])
    pipe, _ = server.runtime.provider.pipeline(None)
    assert codes == pipe.audio_to_codes(str(song), seed=0)  # what the CLI and the Describe Audio node read
    assert len(codes) == -(-round(5.2 * 25) // 5)  # one code per 5 latent frames of the 5.2 s song


def test_full_analysis_describes_the_audio_and_is_reproducible(server, song):
    first = _run(server, data=_upload(song, full_analysis_only=True, lm_seed=7))
    assert first["status_message"] == "Full Hardware Analysis Success"
    assert set(first) >= {"bpm", "keyscale", "timesignature", "duration", "genre", "prompt", "lyrics", "language",
                          "metas", "audio_codes", "audio_paths"}
    assert first["audio_paths"] == [] and first["lm_model"] == "acestep-5Hz-lm-tiny" and first["lm_seed"] == 7
    assert first["prompt"] == first["metas"]["caption"] and first["lyrics"] == first["metas"]["lyrics"]
    assert parse_audio_codes(first["audio_codes"])  # the codes the LM read come back too
    again = _run(server, data=_upload(song, fullAnalysisOnly=True, lm_seed=7))  # camelCase, as the official
    assert {k: again[k] for k in ("prompt", "lyrics", "bpm", "metas")} == \
        {k: first[k] for k in ("prompt", "lyrics", "bpm", "metas")}


def test_analysis_only_answers_metadata_without_a_file(server):
    answer = _run(server, json={"prompt": "calm piano", "lyrics": "[Instrumental]", "analysis_only": True,
                                "lm_seed": 3, "use_cot_caption": False})
    assert answer["status_message"] == "Success" and answer["generation_info"] == "Analysis Only Mode Complete"
    assert answer["file"] == "" and answer["dit_model"] == "None (Analysis Only)"
    assert answer["prompt"] == "calm piano" and answer["lyrics"] == "[Instrumental]"  # caption CoT off: kept
    assert set(answer["metas"]) == {"bpm", "duration", "genres", "keyscale", "timesignature"}
    assert not list(server.runtime.result_root.rglob("*.mp3"))  # nothing was generated


def test_a_song_keeps_the_clients_caption_and_key_spelling_when_the_lm_plans(server):
    # The official docs write keys as "C Major" and "Am"; the LM is told them in its own spelling.
    # The chain of thought rewrites the caption for the DiT; the result reports the client's caption.
    for sent, spelled in (("C Major", "C major"), ("Am", "A minor")):
        song = _run(server, json={"prompt": "calm piano", "key_scale": sent, "audio_duration": 10, "batch_size": 1,
                                  "inference_steps": 2, "lm_seed": 5, "audio_format": "wav"})
        assert song["metas"]["keyscale"] == spelled
        assert song["prompt"] == "calm piano" and song["metas"]["prompt"] == "calm piano"
        assert song["lm_model"] == "acestep-5Hz-lm-tiny"


def test_an_analysis_of_audio_without_audio_is_refused_at_submit(server):
    for mode in ("full_analysis_only", "extract_codes_only"):
        reply = release(server.url, {"prompt": "x", mode: True})
        assert reply.status == 400
        assert reply.error == f"src_audio: {mode} analyses source audio: upload it as multipart field " \
                              "'src_audio' (or 'ctx_audio') or give src_audio_path"


def test_lm_analyses_on_a_server_without_an_lm_are_refused_but_codes_still_work(tiny_dir, tmp_path, song):
    config = ServerConfig.from_env(tmp_path / "results", env={})
    with LiveServer(Runtime(tiny_provider(tiny_dir, use_lm=False), config)) as live:
        reply = release(live.url, {"prompt": "x", "analysis_only": True})
        assert reply.status == 503 and "analysis_only needs the 5 Hz LM" in reply.error
        reply = release(live.url, data=_upload(song, full_analysis_only=True))
        assert reply.status == 503 and "full_analysis_only needs the 5 Hz LM" in reply.error
        answer = _run(live, data=_upload(song, extract_codes_only=True))
        assert answer["status_message"] == "Audio Codes Extraction Success"
        assert http("GET", live.url + "/health").status == 200
