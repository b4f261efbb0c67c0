"""The VAE encode of a source or timbre reference reports its tiles and stops on cancel, inside a
tile too, in the engine and through the REST job; the encoded latents and the step progress stay
what they were."""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden
from engine_helpers import tiny_pipeline

from acestep_core import GenerationRequest
from acestep_core.errors import CancelledError
from acestep_core.vae import vae_encode

SR = 48000


@pytest.fixture(scope="module")
def source():
    """2 s of the golden source: one tile (the CPU's tiles hold 15 s), and quick on the tiny VAE,
    whose encoder is full width."""
    return load_golden("source_audio")["src_a"][:, : 2 * SR]


@pytest.fixture
def short_timbre_clip(monkeypatch):
    """The official timbre clip is 30 s, three CPU tiles: 2 s keep the test quick (one tile)."""
    import acestep_core.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "TIMBRE_SECONDS", 2.0)


def encoder_units(vae) -> int:
    from diffusers.models.autoencoders.autoencoder_oobleck import OobleckEncoderBlock, OobleckResidualUnit

    return sum(isinstance(m, (OobleckEncoderBlock, OobleckResidualUnit)) for m in vae.encoder.modules())


def hook_count(module) -> int:
    return sum(len(m._forward_pre_hooks) for m in module.modules())


def test_the_encode_reports_each_tile_from_zero_and_its_latents_do_not_change(source):
    vae = tiny_pipeline().vae
    seen = []
    _, mean, std = vae_encode(vae, source, chunk_seconds=0.64, overlap_seconds=0.16, sample=False,
                              progress=lambda done, total: seen.append((done, total)))
    _, plain_mean, plain_std = vae_encode(vae, source, chunk_seconds=0.64, overlap_seconds=0.16, sample=False)
    # 2 s in 0.64 s tiles with 0.16 s on each side: 0.32 s cores, 7 tiles
    assert seen == [(i, 7) for i in range(8)]
    assert torch.equal(mean, plain_mean) and torch.equal(std, plain_std)


def test_a_cancel_inside_a_one_tile_encode_stops_it_before_the_tile_ends(source):
    """A CPU tile holds 15 s of audio and can take half a minute: cancel is polled before every block
    and residual unit of the encoder, not only between tiles, and the hooks are gone afterwards."""
    pipe = tiny_pipeline()
    polls, tiles = [], []

    def cancel_on_third_poll() -> bool:
        polls.append(1)
        return len(polls) == 3

    before = hook_count(pipe.vae)
    with pytest.raises(CancelledError, match="VAE encode cancelled"):
        pipe.encode_audio(source, torch.Generator().manual_seed(3), progress=lambda d, t: tiles.append((d, t)),
                          cancel=cancel_on_third_poll)
    # the poll at the start, then two inside the first encoder block: the one tile never finished
    assert len(polls) == 3 and tiles == [(0, 1)]
    assert hook_count(pipe.vae) == before

    polls.clear()
    latents = pipe.encode_audio(source, torch.Generator().manual_seed(3), cancel=lambda: bool(polls.append(1)))
    assert len(polls) == encoder_units(pipe.vae) + 2  # every encoder unit, and the tile's start and end
    assert torch.equal(latents, pipe.encode_audio(source, torch.Generator().manual_seed(3)))


def _cover(source, **kwargs):
    request = GenerationRequest(caption="x", task_type="cover", src_audio=source, reference_audio=source, seed=5,
                                audio_cover_strength=1.0)
    return tiny_pipeline().generate(request, **kwargs)


def test_generate_reports_each_encode_as_a_stage_before_the_steps(source, short_timbre_clip):
    steps, encodes = [], []
    _cover(source, progress=lambda d, t: steps.append((d, t)), cancel=lambda: False,
           encode_progress=lambda d, t: encodes.append((d, t)))
    # the source, then the timbre clip cut from the reference, one run each; the steps as before
    assert encodes == [(0, 1), (1, 1), (0, 1), (1, 1)]
    assert steps == [(i, 8) for i in range(1, 9)]


@pytest.mark.parametrize("stop_at", ["source", "timbre reference"])
def test_a_cancel_during_an_encode_stops_generate_before_any_step(source, short_timbre_clip, stop_at):
    steps, encodes = [], []
    started = {"source": 1, "timbre reference": 2}[stop_at]  # which encode's (0, total) arms the cancel
    with pytest.raises(CancelledError, match="VAE encode cancelled"):
        _cover(source, progress=lambda d, t: steps.append(d),
               cancel=lambda: sum(done == 0 for done, _ in encodes) >= started,
               encode_progress=lambda d, t: encodes.append((d, t)))
    assert encodes[-1][0] == 0 and steps == []


def test_repaint_source_encode_cancels_at_the_next_encoder_block(source):
    """Repaint / Continue / the track tasks encode the source in `_task_inputs`: the same poll."""
    polls = []
    request = GenerationRequest(caption="x", task_type="repaint", src_audio=source, repainting_start=1.0,
                                repainting_end=3.0, seed=5)
    with pytest.raises(CancelledError, match="VAE encode cancelled"):
        tiny_pipeline().generate(request, cancel=lambda: bool(polls.append(1)) or len(polls) == 2)
    assert len(polls) == 2  # the tile's start, then the first encoder block


# ------------------------------------------------------------------ REST job


@pytest.fixture(scope="module")
def provider(tiny_dir):
    from server_harness import tiny_provider

    return tiny_provider(tiny_dir)


def _job(tmp_path, provider, source, cancel=None):
    from acestep_core.audio_io import save_audio
    from acestep_core.server.generation import run_job
    from acestep_core.server.params import parse_release_request

    wav = save_audio(tmp_path / "source.wav", source, SR, "wav")
    req = parse_release_request({"task_type": "cover", "prompt": "x", "batch_size": 1, "seed": 5,
                                 "use_random_seed": False, "thinking": False, "audio_format": "wav"})
    req.uploads["src_audio"] = str(wav)
    history: list[tuple[str, float]] = []
    state = {"stage": "queued", "progress": 0.0}

    def progress(step, total):
        state["progress"] = step / max(int(total), 1)
        history.append((state["stage"], state["progress"]))

    def set_stage(stage):
        state["stage"] = stage

    result = run_job(req, provider, tmp_path / "job", "t1", progress=progress, set_stage=set_stage,
                     cancel=(lambda: cancel(history)) if cancel else None)
    return result, history


def test_a_rest_job_shows_the_encode_as_its_own_stage(tmp_path, provider, source):
    from acestep_core.server.generation import ENCODING, GENERATING

    result, history = _job(tmp_path, provider, source)
    assert history[:2] == [(ENCODING, 0.0), (GENERATING, 0.0)]  # one tile, then back to the steps at 0
    assert history[2:] == [(GENERATING, i / 8) for i in range(1, 9)]  # the fraction is the diffusion's
    assert result["files"]


def test_a_rest_job_cancelled_while_encoding_saves_nothing(tmp_path, provider, source):
    from acestep_core.server.generation import ENCODING

    with pytest.raises(CancelledError, match="VAE encode cancelled"):
        _job(tmp_path, provider, source, cancel=lambda history: bool(history) and history[-1][0] == ENCODING)
    assert not (tmp_path / "job").exists() or not any((tmp_path / "job").iterdir())


# ------------------------------------------------------------------ CLI


def test_the_cli_prints_the_encode_as_a_stage_of_its_own(tmp_path, source, monkeypatch, capsys):
    from conftest import TINY_DIR

    from acestep_core.audio_io import save_audio
    from acestep_core.cli import main

    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))
    wav = save_audio(tmp_path / "source.wav", source, SR, "wav", quality=32)
    assert main(["generate", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out"), "--seed", "5",
                 "--task-type", "cover", "--src-audio", str(wav), "--audio-format", "wav"]) == 0
    lines = capsys.readouterr().err.splitlines()
    stages = [line.split(":")[0] for line in lines if line.startswith(("VAE encode:", "diffusion:", "VAE decode:"))]
    assert stages == ["VAE encode", "diffusion", "VAE decode"]
    assert any(line.startswith("VAE encode: 1 tiles in ") for line in lines)
