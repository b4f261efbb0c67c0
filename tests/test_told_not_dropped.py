"""What a user asks for is done, or they are told: nothing asked is silently dropped or overridden."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_DIR, load_golden
from engine_helpers import tiny_pipeline

from acestep_core import GenerationRequest
from acestep_core.audio_io import save_audio
from acestep_core.cli import main
from acestep_core.errors import InputError
from acestep_core.loading import LoadChoices, ModelPaths, plan_load
from acestep_core.memory.dtypes import auto_dtypes
from acestep_core.memory.policy import simulated_memory
from acestep_core.schedules import few_steps_note, turbo_note

SR = 48000


@pytest.fixture(autouse=True)
def tiny_fixtures(monkeypatch):
    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))


@pytest.fixture(scope="module")
def source_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "source.wav"
    save_audio(path, load_golden("source_audio")["src_a"], SR, "wav", quality=32)
    return path


# ---- continuation_seconds belongs to continuation only


def test_continuation_seconds_with_another_task_is_refused_not_ignored():
    request = GenerationRequest(caption="x", task_type="repaint", src_audio="a.wav", continuation_seconds=10.0)
    with pytest.raises(InputError, match="continuation_seconds only applies to task_type continuation, not 'repaint'"):
        request.validate()


@pytest.mark.parametrize("task", ["text2music", "cover"])
def test_continuation_seconds_is_range_checked_whatever_the_task(task):
    request = GenerationRequest(caption="x", task_type=task, src_audio="a.wav", continuation_seconds=-3.0)
    with pytest.raises(InputError, match=r"continuation_seconds must be from 0.2 to 600.0, got -3.0"):
        request.validate()


def test_continuation_seconds_still_drives_a_continuation():
    GenerationRequest(caption="x", task_type="continuation", src_audio="a.wav", continuation_seconds=10.0).validate()


# ---- the turbo schedule says what it did not use


def test_turbo_note_names_the_unused_steps_and_the_snapped_shift():
    note = turbo_note(32, 2.5, None)
    assert "inference_steps 32 was not used" in note and "shift 2.5 ran as 2" in note
    assert turbo_note(8, 3.0, None) is None and turbo_note(None, 1.0, None) is None
    assert turbo_note(32, 2.5, [0.9, 0.5]) is None  # explicit timesteps are the schedule


def test_a_turbo_run_reports_the_steps_it_did_not_run():
    pipe = tiny_pipeline()
    asked = pipe.generate(GenerationRequest(caption="x", audio_duration=5.12, inference_steps=20, seed=1))
    assert asked.params["inference_steps"] == 8
    assert any("inference_steps 20 was not used" in n for n in asked.notices)
    plain = pipe.generate(GenerationRequest(caption="x", audio_duration=5.12, seed=1))
    assert plain.notices == []  # the defaults filled in are not news


def test_cli_prints_the_turbo_notice_once_and_the_batch_clamp_once(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(out), "--caption", "x", "--audio-duration",
                 "10", "--inference-steps", "20", "--batch-size", "8"])
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("inference_steps 20 was not used") == 1
    clamp = [line for line in err.splitlines() if line.startswith("Batch size 8 is more than")]
    assert len(clamp) <= 1  # once where this machine's limit is below 8, never twice


# ---- --tiny fills in what is not given, an explicit --dit included


def test_tiny_keeps_an_explicit_dit_for_a_track_task(tmp_path, source_wav, capsys):
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(tmp_path / "out"), "--caption", "x",
                 "--dit", str(TINY_DIR / "acestep-v15-turbo-tiny"), "--task-type", "extract", "--track-name",
                 "vocals", "--src-audio", str(source_wav)])
    err = capsys.readouterr().err
    assert code == 2 and "error: task 'extract' needs the ACE-Step 1.5 base model" in err


def test_tiny_picks_its_base_dit_for_a_track_task_when_none_is_given(tmp_path, source_wav):
    out = tmp_path / "out"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(out), "--caption", "x", "--task-type",
                 "extract", "--track-name", "vocals", "--src-audio", str(source_wav), "--inference-steps", "2"])
    assert code == 0
    params = json.loads(next(out.glob("*.json")).read_text())
    assert params["model_version"] == "base"


# ---- switches: a mistyped value is named where the user looks, before models load


def test_an_unreadable_cpu_bf16_switch_is_in_the_decisions_reasons():
    dtype, _, reason = auto_dtypes("cpu", True, {"ACESTEP_CPU_BF16": "maybe"})
    assert dtype == "bfloat16"  # ignored: auto's choice stands
    assert reason.startswith("ACESTEP_CPU_BF16='maybe' is not a yes/no value (use 1/true/yes/on, 0/false/no/off or auto)")


def test_a_mistyped_mask_switch_stops_the_load_plan_before_anything_loads():
    with pytest.raises(InputError, match="ACESTEP_MASK_PADDED_FRAMES='maybe' is not understood: set 1"):
        plan_load(ModelPaths(tiny=True), LoadChoices(), env={"ACESTEP_MASK_PADDED_FRAMES": "maybe"})


def test_the_tiny_plan_says_why_its_lm_is_on():
    plan = plan_load(ModelPaths(tiny=True), LoadChoices(), memory=simulated_memory(24, "cpu"), env={})
    assert plan.decision.init_lm
    assert any("--tiny turns the tiny LM on" in r for r in plan.decision.reasons)


def test_doctor_says_when_the_offload_the_xl_model_needs_is_turned_off(capsys, monkeypatch, tmp_path):
    args = ["doctor", "--simulate-vram", "16", "--checkpoint-dir", str(tmp_path)]
    assert main(args) == 0
    assert "runs with CPU offload (turned on automatically below" in capsys.readouterr().out
    monkeypatch.setenv("ACESTEP_OFFLOAD_TO_CPU", "0")
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "needs CPU offload below" in text and "ACESTEP_OFFLOAD_TO_CPU turns it off" in text
    assert "runs with CPU offload" not in text


# ---- files carry no blank tags


def test_empty_tags_are_left_out_of_the_file(tmp_path):
    import av
    import torch

    path = save_audio(tmp_path / "a.flac", torch.zeros(2, SR), SR, "flac", metadata={"title": "t", "bpm": "", "key": ""})
    with av.open(str(path)) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}
    assert tags.get("title") == "t" and "bpm" not in tags and "key" not in tags


# ---- the tiny random LM's free text is capped, so an install check takes seconds


def test_only_the_tiny_lm_has_a_free_text_cap(tiny_dir):
    from acestep_core.loading import TINY_LM_TOKEN_CAP, load_planner

    planner = load_planner(ModelPaths(tiny=True), LoadChoices(device="cpu"))
    assert planner.free_text_token_cap == TINY_LM_TOKEN_CAP
    from acestep_core.lm.sampling import LMSampling

    lengths = []
    for seed in (1, 2, 3):  # the random LM would write thousands of tokens
        out = planner.generate_with_stop_condition("a song", "", infer_type="dit", sampling=LMSampling(seed=seed))
        lengths.append(len(out.phases[0].generated_ids))
    assert max(lengths) == TINY_LM_TOKEN_CAP, lengths  # the cap is what stops it
    explicit = load_planner(ModelPaths(lm=str(tiny_dir / "acestep-5Hz-lm-tiny")), LoadChoices(device="cpu", lm=str(tiny_dir / "acestep-5Hz-lm-tiny")))
    assert explicit.free_text_token_cap is None  # real checkpoints keep the official budget


def test_few_steps_on_a_base_model_is_noted():
    """Turbo's 8 steps (the ComfyUI widget's default) on a base / SFT DiT: the node tells the user."""
    assert "inference_steps 8 is few for a base / sft DiT, which is made for 30-50 steps" in few_steps_note(8)
    assert few_steps_note(30) is None and few_steps_note(50) is None and few_steps_note(None) is None
