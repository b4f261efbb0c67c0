"""The public planner API on the tiny LM: plans, seeds, progress / cancel, loading, CLI."""

import json

import pytest
import torch
from safetensors.torch import load_file

from acestep_core.errors import CancelledError, CheckpointError, InputError
from acestep_core.lm import LMPlanner, LMSampling, find_lm
from acestep_core.lm.constants import VALID_LANGUAGES
from acestep_core.plan import Plan

CAPTION = "upbeat electronic dance track with bright synth leads and punchy drums"
LYRICS = "[Verse]\nTiny weights are dancing in the light\n[Chorus]\nFloat thirty-two, we sing all night"


@pytest.fixture(scope="module")
def planner(tiny_dir):
    return LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny")


def test_think_with_all_metas_skips_phase1_and_gives_duration_x5_codes(planner):
    plan = planner.think(CAPTION, LYRICS, bpm=96, keyscale="D minor", timesignature="3", duration=7,
                         sampling=LMSampling(temperature=0.0, cfg_scale=1.0, top_p=1.0, seed=5))
    assert isinstance(plan, Plan)
    assert plan.cot_text == ""  # phase 1 skipped
    assert len(plan.audio_codes) == 35 and all(0 <= c < 64000 for c in plan.audio_codes)
    assert (plan.bpm, plan.keyscale, plan.timesignature, plan.duration) == (96, "D minor", "3", 7.0)
    assert plan.caption == CAPTION and plan.lyrics == LYRICS and plan.lm_seed == 5
    # Greedy reproduces the reference's codes for this request (lm_user_metas_codes).
    assert plan.audio_codes == [8224] * 35


def test_think_sampled_with_cfg_is_seeded(planner):
    sampling = LMSampling(temperature=0.9, cfg_scale=2.0, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=1234)
    kwargs = dict(bpm=120, keyscale="C major", timesignature="4", duration=3.2, sampling=sampling)
    a = planner.think(CAPTION, LYRICS, **kwargs)
    b = planner.think(CAPTION, LYRICS, **kwargs)
    assert a.audio_codes == b.audio_codes and len(a.audio_codes) == 16 and a.lm_seed == 1234


def test_random_seed_is_drawn_and_recorded(planner):
    plan = planner.think(CAPTION, LYRICS, bpm=120, keyscale="C major", timesignature="4", duration=2,
                         sampling=LMSampling(seed=-1))
    assert isinstance(plan.lm_seed, int) and 0 <= plan.lm_seed < 2**32
    again = planner.think(CAPTION, LYRICS, bpm=120, keyscale="C major", timesignature="4", duration=2,
                          sampling=LMSampling(seed=plan.lm_seed))
    assert again.audio_codes == plan.audio_codes


def test_think_runs_the_cot_and_fills_missing_metas(planner):
    plan = planner.think(CAPTION, LYRICS, bpm=140, duration=4, use_cot_caption=False,
                         sampling=LMSampling(temperature=0.0, cfg_scale=2.0, top_p=1.0, seed=0))
    assert plan.cot_text.startswith("<think>\nbpm: 140\nduration: 4\nkeyscale:")
    assert plan.keyscale == "Fb major" and plan.timesignature == "3" and plan.language in VALID_LANGUAGES
    assert plan.caption == CAPTION and len(plan.audio_codes) == 20


def test_progress_and_cancel(planner):
    seen = []
    planner.think(CAPTION, LYRICS, bpm=120, keyscale="C major", timesignature="4", duration=2,
                  sampling=LMSampling(seed=1), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (11, 11) and len(seen) >= 10
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(CancelledError):
        planner.think(CAPTION, LYRICS, bpm=120, keyscale="C major", timesignature="4", duration=10,
                      sampling=LMSampling(seed=1), cancel=cancel)


def test_bad_user_fields_raise_input_error(planner):
    with pytest.raises(InputError, match="bpm"):
        planner.think(CAPTION, LYRICS, bpm=20)
    with pytest.raises(InputError, match="key"):
        planner.think(CAPTION, LYRICS, keyscale="C dorian")
    with pytest.raises(InputError, match="language"):
        planner.create_sample("a song", language="xx")
    with pytest.raises(InputError, match="temperature"):
        planner.think(CAPTION, LYRICS, sampling=LMSampling(temperature=-1))


def test_understand_and_create_sample_return_plans(planner):
    plan = planner.understand([5, 63999, 123], sampling=LMSampling(temperature=0.0, cfg_scale=1.0, top_p=1.0),
                              max_duration=10)
    assert plan.audio_codes == [5, 63999, 123] and plan.cot_text.startswith("<think>\nbpm:")
    with pytest.raises(InputError):
        planner.understand([64000])


def test_comfyui_lm_file_needs_a_tokenizer_and_matches_the_folder(planner, tiny_dir, comfy_tiny_dir):
    path = comfy_tiny_dir / "text_encoders" / "qwen_1.7b_ace15.safetensors"
    with pytest.raises(CheckpointError, match="tokenizer"):
        LMPlanner.from_pretrained(path)
    comfy = LMPlanner.from_pretrained(path, tokenizer_path=tiny_dir / "acestep-5Hz-lm-tiny")
    kwargs = dict(bpm=96, keyscale="D minor", timesignature="3", duration=3,
                  sampling=LMSampling(temperature=0.0, cfg_scale=2.0, top_p=1.0, seed=0))
    assert comfy.think(CAPTION, LYRICS, **kwargs).audio_codes == planner.think(CAPTION, LYRICS, **kwargs).audio_codes
    with pytest.raises(CheckpointError, match="text encoder"):
        LMPlanner.from_pretrained(comfy_tiny_dir / "text_encoders" / "qwen_0.6b_ace15.safetensors",
                                  tokenizer_path=tiny_dir / "acestep-5Hz-lm-tiny")


def test_find_lm(tiny_dir, tmp_path):
    assert find_lm(tiny_dir, "acestep-5Hz-lm-tiny") == (tiny_dir / "acestep-5Hz-lm-tiny").resolve()
    (tmp_path / "acestep-5Hz-lm-0.6B").mkdir()
    assert find_lm(tmp_path, "0.6B").name == "acestep-5Hz-lm-0.6B"
    with pytest.raises(CheckpointError, match="not found"):
        find_lm(tmp_path, "4B")


def test_cli_think_json(tiny_dir, capsys):
    from acestep_core.cli import main

    rc = main(["think", "--lm-model", str(tiny_dir / "acestep-5Hz-lm-tiny"), "--caption", CAPTION,
               "--lyrics", LYRICS, "--bpm", "96", "--keyscale", "D minor", "--timesignature", "3",
               "--duration", "7", "--lm-temperature", "0", "--lm-cfg-scale", "1", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["audio_codes"] == [8224] * 35 and data["bpm"] == 96 and data["timesignature"] == "3"
    assert set(data) >= {"caption", "lyrics", "bpm", "keyscale", "timesignature", "duration", "language",
                         "audio_codes", "cot_text"}
    rc = main(["think", "--lm-model", str(tiny_dir / "acestep-5Hz-lm-tiny"), "--bpm", "999"])
    assert rc == 2


def test_cli_understand_from_codes_and_from_audio(tiny_dir, tmp_path, capsys):
    """`understand` describes given codes, or encodes a song (VAE + the DiT's tokenizer) into them first."""
    from acestep_core.audio_io import load_audio, save_audio
    from acestep_core.cli import main
    from acestep_core.codes import latents_to_codes
    from acestep_core.pipeline import ACEStepPipeline

    lm = ["--lm-model", str(tiny_dir / "acestep-5Hz-lm-tiny"), "--lm-max-duration", "10", "--json"]
    assert main(["understand", "--audio-codes", "7, 99,63999", *lm]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["audio_codes"] == [7, 99, 63999] and data["cot_text"].startswith("<think>")

    song = load_file(str(tiny_dir / "goldens" / "source_audio.safetensors"))["src_a"]
    path = save_audio(tmp_path / "song.wav", song, 48000, "wav", quality=32)
    models = ["--dit", str(tiny_dir / "acestep-v15-turbo-tiny"), "--vae", str(tiny_dir / "vae-tiny"),
              "--text-encoder", str(tiny_dir / "Qwen3-Embedding-tiny"), "--dtype", "float32", "--seed", "4"]
    assert main(["understand", "--src-audio", str(path), *models, *lm]) == 0
    codes = json.loads(capsys.readouterr().out)["audio_codes"]
    pipe = ACEStepPipeline.from_pretrained(dit=tiny_dir / "acestep-v15-turbo-tiny", vae=tiny_dir / "vae-tiny",
                                           text_encoder=tiny_dir / "Qwen3-Embedding-tiny", dtype="float32")
    latents = pipe.encode_audio(load_audio(path), torch.Generator().manual_seed(4))
    assert latents.shape[1] == 130 and len(codes) == 26  # 5 latent frames per code
    assert codes == latents_to_codes(pipe.dit, latents)[1].reshape(-1).tolist()
    assert pipe.audio_to_codes(path, seed=4) == codes  # seeded: the same song gives the same codes

    assert main(["understand", "--src-audio", str(path), *lm]) == 2
    assert "--src-audio needs the DiT and VAE" in capsys.readouterr().err
