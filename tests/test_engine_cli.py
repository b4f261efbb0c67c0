"""`python -m acestep_core generate` for every task on the tiny fixture checkpoints."""

import json
import os
import subprocess
import sys

import pytest

from conftest import TINY_DIR, load_golden

from acestep_core.audio_io import load_audio, save_audio
from acestep_core.cli import main
from acestep_core.outputs import load_latents

SR = 48000


@pytest.fixture(scope="module")
def source_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "source.wav"
    save_audio(path, load_golden("source_audio")["src_a"], SR, "wav", quality=32)
    return path


@pytest.fixture(autouse=True)
def tiny_fixtures(monkeypatch):
    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))


def _run(tmp_path, *args):
    out = tmp_path / "out"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(out), "--seed", "11", *args])
    assert code == 0
    files = sorted(out.iterdir())
    audio = [f for f in files if f.suffix in (".flac", ".mp3", ".wav", ".opus", ".aac")]
    metas = [f for f in files if f.suffix == ".json"]
    assert len(audio) == 1 and len(metas) == 1
    return audio[0], json.loads(metas[0].read_text()), out


def test_text2music_writes_playable_file_and_json(tmp_path):
    audio, params, out = _run(tmp_path, "--caption", "lo-fi beat", "--audio-duration", "10",
                              "--audio-format", "mp3", "--save-latents", "song.safetensors")
    decoded = load_audio(audio)
    assert decoded.shape[0] == 2 and abs(decoded.shape[1] / SR - 10.0) < 0.1
    assert params["task"] == "text2music" and params["seed"] == 11 and params["latent_frames"] == 250
    assert params["audio_duration"] == 10.0
    assert "TINY RANDOM-WEIGHT" in params["note"]
    assert load_latents(out / "song.safetensors").shape == (1, 250, 64)


def test_aac_output(tmp_path):
    audio, params, _ = _run(tmp_path, "--caption", "x", "--audio-duration", "10", "--audio-format", "aac",
                            "--audio-quality", "192k")
    assert audio.suffix == ".aac" and abs(load_audio(audio).shape[1] / SR - 10.0) < 0.1


def test_caption_and_lyrics_from_files(tmp_path):
    (tmp_path / "caption.txt").write_text("dreamy shoegaze\n", encoding="utf-16")  # with a BOM, as Notepad writes
    (tmp_path / "lyrics.txt").write_text("[Verse]\nla la\n", encoding="utf-8")
    _, params, _ = _run(tmp_path, "--caption-file", str(tmp_path / "caption.txt"), "--lyrics-file",
                        str(tmp_path / "lyrics.txt"), "--audio-duration", "10", "--inference-steps", "2")
    assert params["caption"].strip() == "dreamy shoegaze" and params["lyrics"].strip() == "[Verse]\nla la"


@pytest.mark.parametrize("task,extra,seconds", [
    ("cover", [], 5.2),
    ("repaint", ["--repainting-start", "1.0", "--repainting-end", "3.0"], 5.2),
    ("continuation", ["--continuation-seconds", "2.0"], 7.2),
])
def test_audio_tasks_from_the_cli(tmp_path, source_wav, task, extra, seconds):
    audio, params, _ = _run(tmp_path, "--task-type", task, "--src-audio", str(source_wav),
                            "--caption", "x", "--audio-format", "flac", *extra)
    decoded = load_audio(audio)
    assert abs(decoded.shape[1] / SR - seconds) < 0.05
    assert params["task"] == ("cover" if task == "cover" else "repaint")


@pytest.mark.parametrize("task,extra,instruction", [
    ("extract", ["--track-name", "vocals"], "Extract the VOCALS track from the audio:"),
    ("lego", ["--track-name", "drums", "--repainting-start", "1", "--repainting-end", "3"],
     "Generate the DRUMS track based on the audio context:"),
    ("complete", ["--track-classes", "drums,bass"], "Complete the input track with DRUMS | BASS:"),
])
def test_track_tasks_from_the_cli_run_on_the_tiny_base(tmp_path, source_wav, task, extra, instruction):
    audio, params, _ = _run(tmp_path, "--task-type", task, "--src-audio", str(source_wav), "--inference-steps", "2",
                            *extra)
    assert abs(load_audio(audio).shape[1] / SR - 5.2) < 0.05
    assert params["task"] == task and params["instruction"] == instruction
    assert params["is_turbo"] is False and params["dit_model"] == "acestep-v15-base-tiny"


def test_track_task_errors_are_one_line(tmp_path, source_wav, capsys):
    turbo = str(TINY_DIR / "acestep-v15-turbo-tiny")
    code = main(["generate", "--dit", turbo, "--vae", str(TINY_DIR / "vae-tiny"), "--text-encoder",
                 str(TINY_DIR / "Qwen3-Embedding-tiny"), "--device", "cpu", "--out", str(tmp_path / "o"),
                 "--task-type", "extract", "--src-audio", str(source_wav)])
    err = capsys.readouterr().err
    assert code == 2 and "error: task 'extract' needs the ACE-Step 1.5 base model" in err and "Traceback" not in err
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(tmp_path / "o"), "--task-type", "complete",
                 "--track-classes", "drums,cowbell", "--src-audio", str(source_wav)])
    err = capsys.readouterr().err
    assert code == 2 and "error: track_classes: unknown track 'cowbell'" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_src_latents_chain(tmp_path, source_wav):
    _, _, out = _run(tmp_path, "--caption", "x", "--audio-duration", "10", "--save-latents", "a.safetensors")
    second = tmp_path / "second"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(second), "--task-type", "repaint",
                 "--src-latents", str(out / "a.safetensors"), "--repainting-start", "2", "--repainting-end", "4"])
    assert code == 0
    params = json.loads(next(second.glob("*.json")).read_text())
    assert params["latent_frames"] == 250


def test_missing_weights_explain_how_to_get_them(tmp_path, capsys):
    code = main(["generate", "--checkpoint-dir", str(tmp_path / "nothing"), "--caption", "x", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "No ACE-Step 1.5 weights found" in err and "--tiny" in err


def test_bad_flag_value_is_one_line_error(tmp_path, capsys):
    code = main(["generate", "--tiny", "--bpm", "999", "--out", str(tmp_path)])
    assert code == 2
    assert "bpm must be an integer from 30 to 300" in capsys.readouterr().err


@pytest.mark.parametrize("steps, says", [("0.5,0.9", "timesteps must be strictly decreasing"),
                                         ("1.5,0", "timesteps must lie in [0, 1]")])
def test_timesteps_follow_the_rest_rule(tmp_path, capsys, steps, says):
    code = main(["generate", "--tiny", "--audio-duration", "10", "--timesteps", steps, "--out", str(tmp_path / "o")])
    assert code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags", [["--caption", ""], ["--caption", "  ", "--lyrics", "\n"]])
def test_format_without_text_is_refused_before_the_lm_loads(capsys, monkeypatch, flags):
    import acestep_core.cli.model_setup as model_setup

    def no_lm(*args, **kwargs):
        raise AssertionError("the LM was loaded for nothing to format")

    monkeypatch.setattr(model_setup, "planner_from_args", no_lm)
    assert main(["format", "--tiny", *flags]) == 2
    assert "error: give a caption or lyrics to format" in capsys.readouterr().err


def test_save_latents_outside_out_is_refused(tmp_path, capsys):
    code = main(["generate", "--tiny", "--audio-duration", "10", "--out", str(tmp_path / "o"),
                 "--save-latents", "../escape.safetensors"])
    assert code == 2
    assert "outputs stay inside" in capsys.readouterr().err
    assert not (tmp_path / "escape.safetensors").exists()


@pytest.mark.parametrize("out, reason", [
    pytest.param("/proc/nope", "No such file or directory",
                 marks=pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc only")),
    ("o51/" + "a" * 300, "File name too long")])
def test_an_output_folder_that_cannot_exist_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, out,
                                                                               reason):
    import acestep_core.cli.model_setup as model_setup

    def no_models(*args, **kwargs):
        raise AssertionError("a model was set up before the output folder was checked")

    monkeypatch.setattr(model_setup, "plan_from_args", no_models)
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "--tiny", "--audio-duration", "10", "--thinking", "--out", out])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: cannot create the output folder {out} ({reason}): " \
                                              "choose another --out"
    assert list(tmp_path.iterdir()) == []  # o51/ is not left behind


def test_a_refused_request_leaves_no_empty_output_folder(tmp_path, capsys):
    code = main(["generate", "--tiny", "--bpm", "999", "--out", str(tmp_path / "new" / "songs")])
    assert code == 2 and "bpm must be" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "acestep_core", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("generate", "think", "format", "sample", "doctor", "serve"):
        assert command in result.stdout


def test_generate_with_thinking_plans_then_generates(tmp_path):
    audio, params, _ = _run(tmp_path, "--thinking", "--caption", "lofi", "--lyrics", "[Instrumental]",
                            "--bpm", "90", "--key-scale", "C major", "--time-signature", "4",
                            "--audio-duration", "10", "--lm-temperature", "0", "--lm-seed", "5")
    # All four metas given: phase 1 is skipped and the LM writes exactly 10 s × 5 codes.
    assert params["plan"]["audio_codes"] and len(params["plan"]["audio_codes"]) == 50
    assert params["plan"]["lm_seed"] == 5
    assert params["task"] == "cover" and params["audio_code_count"] == 50 and params["latent_frames"] == 250
    assert abs(load_audio(audio).shape[1] / SR - 10.0) < 0.05


def test_random_tiny_checkpoints_build_and_generate(tmp_path):
    """The --tiny fallback for machines without the fixture set: official layout, real special-token ids."""
    from acestep_core import GenerationRequest
    from acestep_core.pipeline import ACEStepPipeline
    from acestep_core.tiny import build_tiny_checkpoints

    paths = build_tiny_checkpoints(tmp_path / "tiny")
    assert (paths["dit"] / "silence_latent.pt").is_file() and (paths["vae"] / "config.json").is_file()
    pipe = ACEStepPipeline.from_pretrained(dit=paths["dit"], vae=paths["vae"], text_encoder=paths["text_encoder"],
                                           dtype="float32")
    ids, _ = pipe.text_encoder.tokenize(["a<|endoftext|>\n"], 16)
    assert ids[0].tolist()[-3:] == [151643, 10, 151643]
    result = pipe.generate(GenerationRequest(caption="x", audio_duration=5.2, seed=1))
    assert result.audio.shape == (1, 2, 130 * 1920)
    # what --tiny does for the track tasks when no tiny base model is at hand
    base = ACEStepPipeline.from_pretrained(dit=paths["dit"], vae=paths["vae"], text_encoder=paths["text_encoder"],
                                           dtype="float32", config_override={"is_turbo": False, "model_version": "base"})
    extracted = base.generate(GenerationRequest(caption="x", task_type="extract", track_name="bass",
                                                src_latents=result.latents, seed=1, inference_steps=2))
    assert extracted.latents.shape == result.latents.shape and extracted.params["model_version"] == "base"


def test_thinking_is_skipped_for_extract_and_plans_metas_only_for_lego(tmp_path, source_wav, capsys):
    audio, params, _ = _run(tmp_path / "a", "--task-type", "extract", "--track-name", "vocals", "--src-audio",
                            str(source_wav), "--inference-steps", "2", "--thinking")
    assert "--thinking is skipped for extract" in capsys.readouterr().err and "plan" not in params
    audio, params, _ = _run(tmp_path / "b", "--task-type", "lego", "--track-name", "drums", "--src-audio",
                            str(source_wav), "--inference-steps", "2", "--thinking", "--bpm", "100",
                            "--key-scale", "C major", "--time-signature", "4", "--audio-duration", "10",
                            "--lm-temperature", "0")
    assert params["plan"]["audio_codes"] == [] and params["audio_code_count"] == 0
    assert params["task"] == "lego" and abs(load_audio(audio).shape[1] / SR - 5.2) < 0.05
