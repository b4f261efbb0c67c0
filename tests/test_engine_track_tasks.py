"""The base model's track tasks (extract, lego, complete): what reaches the DiT, lengths, errors.

No golden exists for these tasks, so the tests check each DiT input against the reference's rules
(docs/tasks.md#overview): the instruction text, the source latents (as given, not silenced, not through the
5 Hz bottleneck), the chunk mask and the cover flag, plus the repaint-style window handling of lego.
"""

import json

import pytest
import torch

from conftest import load_golden
from engine_helpers import tiny_pipeline

import acestep_core.pipeline as pipeline_module
from acestep_core import GenerationRequest, InputError
from acestep_core.prompts import TRACK_NAMES, track_instruction

BASE = "acestep-v15-base-tiny"
SR = 48000


@pytest.fixture
def captured(monkeypatch):
    """Records the instruction and the condition inputs each generate() hands to the models."""
    seen = {}
    encode_texts, encode_condition = pipeline_module.encode_texts, pipeline_module.encode_condition
    latents_to_hints = pipeline_module.latents_to_hints

    def texts(text_encoder, instruction, *args, **kwargs):
        seen["instruction"] = instruction
        return encode_texts(text_encoder, instruction, *args, **kwargs)

    def condition(dit, texts, caption_hidden, caption_mask, refer_packed, refer_order, src_latents, chunk_mask):
        seen.setdefault("src_latents", src_latents.detach().float().cpu().clone())
        seen.setdefault("chunk_mask", chunk_mask.detach().float().cpu().clone())
        return encode_condition(dit, texts, caption_hidden, caption_mask, refer_packed, refer_order, src_latents,
                                chunk_mask)

    def hints(*args, **kwargs):
        seen["bottleneck"] = True
        return latents_to_hints(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "encode_texts", texts)
    monkeypatch.setattr(pipeline_module, "encode_condition", condition)
    monkeypatch.setattr(pipeline_module, "latents_to_hints", hints)
    return seen


def _source_latents(frames=130, seed=0):
    return torch.randn(1, frames, 64, generator=torch.Generator().manual_seed(seed))


def _run(captured, **kwargs):
    kwargs.setdefault("src_latents", _source_latents())
    kwargs.setdefault("seed", 7)
    kwargs.setdefault("inference_steps", 4)
    return tiny_pipeline(BASE).generate(GenerationRequest(caption="a mix", **kwargs))


def test_instruction_texts_match_the_reference_templates():
    assert track_instruction("extract", ["vocals"]) == "Extract the VOCALS track from the audio:"
    assert track_instruction("extract", []) == "Extract the track from the audio:"
    assert track_instruction("lego", ["backing_vocals"]) == "Generate the BACKING_VOCALS track based on the audio context:"
    assert track_instruction("lego", []) == "Generate the track based on the audio context:"
    assert track_instruction("complete", ["drums", "bass"]) == "Complete the input track with DRUMS | BASS:"
    assert track_instruction("complete", []) == "Complete the input track:"
    assert len(TRACK_NAMES) == 12 and "woodwinds" in TRACK_NAMES


def test_extract_conditions_on_the_whole_source_as_it_is(captured):
    src = _source_latents()
    result = _run(captured, task_type="extract", track_name="Vocals", src_latents=src)
    assert captured["instruction"] == "Extract the VOCALS track from the audio:"
    assert result.params["instruction"] == captured["instruction"] and result.params["task"] == "extract"
    assert torch.equal(captured["src_latents"], src)  # no silencing, no 5 Hz bottleneck (is_cover False)
    assert "bottleneck" not in captured
    assert torch.equal(captured["chunk_mask"], torch.ones(1, 130))
    assert result.latents.shape == (1, 130, 64) and result.audio.shape[-1] == 130 * 1920


def test_complete_names_every_class(captured):
    result = _run(captured, task_type="complete", track_classes="drums, Bass ,drums")
    assert captured["instruction"] == "Complete the input track with DRUMS | BASS:"
    assert torch.equal(captured["chunk_mask"], torch.ones(1, 130))
    assert result.params["task"] == "complete"
    _run(captured, task_type="complete", track_classes=["guitar", "strings"])
    assert captured["instruction"] == "Complete the input track with GUITAR | STRINGS:"


def test_lego_keeps_the_source_inside_its_window_where_repaint_silences_it(captured):
    src = _source_latents()
    window = dict(src_latents=src, repainting_start=1.0, repainting_end=3.0, chunk_mask_mode="explicit",
                  repaint_mode="aggressive")
    lego = _run(captured, task_type="lego", track_name="drums", **window)
    assert captured["instruction"] == "Generate the DRUMS track based on the audio context:"
    assert torch.equal(captured["src_latents"], src)
    expected_mask = torch.zeros(1, 130)
    expected_mask[0, 25:75] = 1.0
    assert torch.equal(captured["chunk_mask"], expected_mask)
    assert lego.params["repaint_window_frames"] == [25, 75]

    captured.clear()
    _run(captured, task_type="repaint", **window)
    silenced = captured["src_latents"]
    assert torch.equal(silenced[:, :25], src[:, :25]) and torch.equal(silenced[:, 75:], src[:, 75:])
    assert not torch.allclose(silenced[:, 25:75], src[:, 25:75])


def test_lego_default_window_is_the_whole_source(captured):
    result = _run(captured, task_type="lego", track_name="guitar")
    assert result.params["repaint_window_frames"] == [0, 130]
    assert torch.equal(captured["chunk_mask"], torch.ones(1, 130))  # auto mode: all ones, as the reference


def test_lego_window_outside_is_pulled_back_to_the_source_mix(captured):
    # Conservative mode injects the source outside the window at every step, ending on the clean source.
    src = _source_latents()
    result = _run(captured, task_type="lego", track_name="bass", src_latents=src, repainting_start=2.0,
                  repainting_end=4.0, repaint_mode="conservative", chunk_mask_mode="explicit")
    assert torch.allclose(result.latents[0, :20], src[0, :20], atol=1e-5)  # 25 cross-fade frames before 50
    assert torch.allclose(result.latents[0, 126:], src[0, 126:], atol=1e-5)
    assert not torch.allclose(result.latents[0, 50:100], src[0, 50:100], atol=1e-2)


def test_track_task_from_audio_keeps_source_length(captured):
    src = load_golden("source_audio")["src_a"][:, : int(5.2 * SR)]
    result = tiny_pipeline(BASE).generate(GenerationRequest(
        caption="x", task_type="extract", track_name="drums", src_audio=src, seed=3, inference_steps=2))
    assert result.audio.shape[-1] == src.shape[-1] // 1920 * 1920
    assert result.params["output_seconds"] == pytest.approx(src.shape[-1] // 1920 * 1920 / SR)


def test_user_instruction_replaces_the_task_instruction(captured):
    result = _run(captured, task_type="extract", track_name="vocals", instruction="Extract the BASS track from the audio:")
    assert captured["instruction"] == "Extract the BASS track from the audio:"
    assert result.params["instruction"] == captured["instruction"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(task_type="extract", track_name="kazoo"), "unknown track 'kazoo'"),
    (dict(task_type="lego", track_name="drums,bass"), "names one track"),
    (dict(task_type="complete", track_classes="drums, cowbell"), "unknown track 'cowbell'"),
])
def test_bad_track_names_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        GenerationRequest(src_latents=_source_latents(), **kwargs).validate()


@pytest.mark.parametrize("task", ["extract", "lego", "complete"])
def test_track_tasks_need_a_source(task):
    with pytest.raises(InputError, match=f"task_type '{task}' needs src_audio"):
        GenerationRequest(task_type=task, track_name="drums" if task != "complete" else "").validate()


@pytest.mark.parametrize("task", ["extract", "lego", "complete"])
def test_turbo_refuses_track_tasks_with_the_fix(task):
    with pytest.raises(InputError, match="needs the ACE-Step 1.5 base model.*is turbo.*acestep-v15-base"):
        tiny_pipeline().generate(GenerationRequest(task_type=task, src_latents=_source_latents(), seed=1))


def test_sft_file_refuses_track_tasks(tmp_path, comfy_tiny_dir, tiny_dir):
    """A ComfyUI DiT file says SFT only in its name: that is enough to stop with the fix."""
    from acestep_core.pipeline import ACEStepPipeline

    sft = tmp_path / "acestep_v1.5_sft.safetensors"
    sft.symlink_to(comfy_tiny_dir / "diffusion_models" / "acestep_v1.5_base.safetensors")
    config = json.loads((tiny_dir / BASE / "config.json").read_text())
    config.pop("model_version")  # the sidecar holds what shapes cannot show; the variant comes from the name
    (tmp_path / "acestep_v1.5_sft.acestep.json").write_text(json.dumps(config))
    pipe = ACEStepPipeline.from_pretrained(dit=sft, vae=tiny_dir / "vae-tiny", text_encoder=tiny_dir / "Qwen3-Embedding-tiny",
                                           dtype="float32")
    assert pipe.dit.model_version == "sft"
    with pytest.raises(InputError, match="is SFT; load acestep-v15-base"):
        pipe.generate(GenerationRequest(task_type="lego", track_name="drums", src_latents=_source_latents(), seed=1))
