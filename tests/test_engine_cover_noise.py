"""cover_noise_strength: start from the task's source re-noised part-way down the schedule (the
reference's rule: nearest schedule step to 1 - strength, the noisier on a tie, then the rest)."""

import pytest
import torch

from conftest import load_golden
from engine_helpers import tiny_pipeline

import acestep_core.pipeline as pipeline_module
from acestep_core import GenerationRequest, InputError
from acestep_core.schedules import start_from_source

SR = 48000


def test_nearest_step_noisier_on_ties_and_never_the_final_zero():
    ts = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    rest, t = start_from_source(ts, 0.625)  # 1 - s = 0.375 lies between 0.5 and 0.25: the noisier wins
    assert t == 0.5 and rest.tolist() == [0.5, 0.25, 0.0]
    rest, t = start_from_source(ts, 1.0)  # strength 1: the last non-zero step, one step left
    assert t == 0.25 and rest.tolist() == [0.25, 0.0]
    assert start_from_source(ts, 0.01)[1] == 1.0


@pytest.fixture
def captured(monkeypatch):
    seen = {}
    denoise = pipeline_module.denoise

    def spy(transformer, noise, *args, **kwargs):
        seen.update(noise=noise.clone(), start=None if kwargs.get("start") is None else kwargs["start"].clone())
        seen["timesteps"] = args[1].timesteps.tolist()
        return denoise(transformer, noise, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "denoise", spy)
    return seen


def _cover(**kwargs):
    src = load_golden("source_audio")["src_a"][:, : int(5.2 * SR)]
    return src, tiny_pipeline().generate(GenerationRequest(caption="x", task_type="cover", src_audio=src, seed=5,
                                                           **kwargs))


def test_start_is_the_encoded_source_renoised_with_the_seeded_noise(captured):
    src, result = _cover(cover_noise_strength=0.5)
    # turbo, shift 3: [1, .9545, .9, .8333, .75, .6429, .5, .3]; 1 - 0.5 = 0.5 is a step
    assert captured["timesteps"] == pytest.approx([0.5, 0.3, 0.0], abs=1e-6)
    assert result.params["inference_steps"] == 2 and result.params["start_timestep"] == 0.5
    pipe = tiny_pipeline()
    source = pipe.encode_audio(src, torch.Generator().manual_seed(5))  # the cover's own encode of the source
    expected = 0.5 * captured["noise"] + 0.5 * source
    assert torch.allclose(captured["start"], expected, atol=1e-6)


def test_strength_zero_or_rounding_to_t1_is_the_plain_run():
    _, plain = _cover()
    _, nearly = _cover(cover_noise_strength=0.01)  # nearest step is t = 1: start = the noise itself
    assert torch.equal(plain.latents, nearly.latents)
    assert plain.params["inference_steps"] == 8 and "start_timestep" not in plain.params


def test_progress_counts_the_remaining_steps_and_strength_one_stays_near_the_source():
    seen = []
    src = load_golden("source_audio")["src_a"][:, : int(5.2 * SR)]
    pipe = tiny_pipeline()
    result = pipe.generate(GenerationRequest(caption="x", task_type="cover", src_audio=src, seed=5,
                                             cover_noise_strength=1.0), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 1)] and result.params["start_timestep"] == 0.3
    source = pipe.encode_audio(src, torch.Generator().manual_seed(5))
    _, plain = _cover()
    assert (result.latents - source).abs().mean() < (plain.latents - source).abs().mean()


def test_out_of_range_strength_is_refused():
    with pytest.raises(InputError, match="cover_noise_strength must be from 0.0 to 1.0"):
        GenerationRequest(cover_noise_strength=1.5).validate()
