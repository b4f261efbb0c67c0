"""Every generation golden of the official implementation, through the public pipeline API."""

import pytest
import torch

from conftest import load_golden
from engine_helpers import GENERATION_CASES, request_for_case, tiny_pipeline

LATENT_TOL = 1e-4
AUDIO_TOL = 2e-3


@pytest.fixture(scope="module")
def results(manifest):
    out = {}
    for name in GENERATION_CASES:
        case = manifest["cases"][name]
        golden = load_golden(name)
        pipe = tiny_pipeline(case["model"])
        steps_seen = []
        result = pipe.generate(request_for_case(case, golden), latents=golden["in.noise"],
                               progress=lambda i, n: steps_seen.append((i, n)))
        out[name] = (case, golden, result, steps_seen)
    return out


@pytest.mark.parametrize("name", GENERATION_CASES)
def test_final_latents_match_reference(results, name):
    case, golden, result, _ = results[name]
    expected = golden["out.pred_latents"]
    assert result.latents.shape == expected.shape
    assert (result.latents - expected).abs().max().item() <= LATENT_TOL


@pytest.mark.parametrize("name", GENERATION_CASES)
def test_schedule_matches_reference(results, name):
    case, golden, result, steps_seen = results[name]
    expected = golden["mid.timesteps"].tolist()
    assert result.params["timesteps"] == pytest.approx(expected, abs=1e-6)
    assert steps_seen[-1] == (len(expected), len(expected))


@pytest.mark.parametrize("name", GENERATION_CASES)
def test_prompts_and_metas_match_reference(results, name):
    case, golden, result, _ = results[name]
    caption_text = case["tokenizer_calls"][0]["text"]
    assert result.params["instruction"] in caption_text
    assert result.params["metas"] in caption_text


def test_repaint_audio_matches_reference(results):
    _, golden, result, _ = results["repaint_explicit_balanced"]
    assert result.audio.shape == golden["out.audio"].shape
    assert (result.audio - golden["out.audio"]).abs().max().item() <= AUDIO_TOL


@pytest.mark.parametrize("name", GENERATION_CASES)
def test_decoded_audio_peak_handling(results, name):
    _, golden, result, _ = results[name]
    peak = result.audio.abs().max().item()
    assert peak <= 1.0 + 1e-6
    if golden["out.decode_peak"].item() > 1.0 and name != "repaint_explicit_balanced":
        assert peak == pytest.approx(1.0, abs=1e-5)


def test_text_encoder_matches_reference(manifest):
    pipe = tiny_pipeline()
    golden = load_golden("t2m_turbo")
    case = manifest["cases"]["t2m_turbo"]
    te = pipe.text_encoder
    ids, mask = te.tokenize([case["tokenizer_calls"][0]["text"]], 256)
    assert torch.equal(ids, golden["in.caption_token_ids"])
    lyric_ids, _ = te.tokenize([case["tokenizer_calls"][1]["text"]], 2048)
    assert torch.equal(lyric_ids, golden["in.lyrics_token_ids"])
    hidden = te.model(input_ids=ids).last_hidden_state
    assert (hidden - golden["out.text_hidden_states"]).abs().max().item() <= 1e-5
    assert (te.model.embed_tokens(lyric_ids) - golden["out.lyric_embeddings"]).abs().max().item() <= 1e-5
