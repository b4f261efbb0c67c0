"""Hostile inputs against the engine request, the CLI, the loaders, doctor and the nodes.

Each case asserts the error type and its message, that no file that existed changed, and for the
CLI that it stopped before loading any model (and quickly).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch

from conftest import COMFY_TINY_DIR, TINY_DIR, load_golden

from acestep_core import values
from acestep_core.audio_io import save_audio
from acestep_core.cli import main
from acestep_core.codes import codes_from_any
from acestep_core.errors import CheckpointError, InputError
from acestep_core.request import GenerationRequest

SR = 48000


# ------------------------------------------------------------------ shared pieces

def _digest(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and permission bits of every file under `root`."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return out


def _float_wav(path: Path, wave: torch.Tensor) -> Path:
    """A 32-bit float WAV written byte by byte, so NaN / Inf samples reach the file as they are."""
    data = wave.T.contiguous().numpy().astype("<f4").tobytes()
    channels = wave.shape[0]
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 3, channels, SR, SR * 4 * channels, 4 * channels, 32)
              + b"data" + struct.pack("<I", len(data)))
    path.write_bytes(header + data)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    src = load_golden("source_audio")["src_a"]
    save_audio(root / "source.wav", src, SR, "wav", quality=32)
    nan = src.clone()
    nan[0, 1000] = float("nan")
    _float_wav(root / "nan.wav", nan)
    inf = src.clone()
    inf[1, 5] = float("inf")
    _float_wav(root / "inf.wav", inf)
    save_audio(root / "short.wav", src[:, : SR // 10], SR, "wav")
    save_audio(root / "long.flac", torch.zeros(2, SR * 601), SR, "flac")
    (root / "latin1.txt").write_bytes("[Verse]\ncafé au lait\n".encode("latin-1"))
    (root / "utf16.txt").write_bytes("[Verse]\nhéllo\n".encode("utf-16"))  # with a BOM, as Notepad writes it
    (root / "nul.txt").write_text("[Verse]\nla\0la\n")
    from safetensors.torch import save_file

    bad = torch.zeros(1, 130, 64)
    bad[0, 3, 7] = float("nan")
    save_file({"latents": bad}, str(root / "nan_latents.safetensors"))
    (root / "not_a_folder").write_text("I am a file\n")
    return root


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail loudly if a command reaches any model loader."""
    from acestep_core.lm.planner import LMPlanner
    from acestep_core.pipeline import ACEStepPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(ACEStepPipeline, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(LMPlanner, "from_pretrained", classmethod(refuse))
    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))


# ------------------------------------------------------------------ engine request

ENGINE_CASES = [
    (dict(lyrics="la\0la"), "lyrics contains a NUL character at position 2"),
    (dict(caption="x\x1b[31m"), "caption contains the control character U+001B"),
    (dict(instruction="Fill\x07"), "instruction contains the control character U+0007"),
    (dict(caption="x" * (values.MAX_TEXT_CHARS + 1)), "the limit is 65536"),
    (dict(caption=b"bytes"), "caption must be text"),
    (dict(key_scale="H major"), "key_scale 'H major' is not a key"),
    (dict(key_scale="C dorian"), "key_scale 'C dorian' is not a key"),
    (dict(key_scale="Cmm"), "key_scale 'Cmm' is not a key"),
    (dict(time_signature="banana"), "time_signature 'banana' is not supported: use 2, 3, 4 or 6"),
    (dict(time_signature="5/4"), "time_signature '5/4' is not supported"),
    (dict(vocal_language="klingon"), "vocal_language 'klingon' is not supported"),
    (dict(audio_duration=float("nan")), "audio_duration must be a finite number"),
    (dict(audio_duration=float("inf")), "audio_duration must be a finite number"),
    (dict(audio_duration=-5), "audio_duration must be -1 or 0 (automatic)"),
    (dict(audio_duration=900), "audio_duration must be from 1 to 600 seconds"),
    (dict(audio_duration="ten"), "audio_duration must be a number"),
    (dict(bpm=True), "bpm must be an integer from 30 to 300"),
    (dict(task_type="repaint", src_audio="x.wav", repainting_end=-5), "repainting_end must be -1 (the end of the source)"),
    (dict(task_type="repaint", src_audio="x.wav", repainting_start=float("nan")), "repainting_start must be a finite"),
    (dict(task_type="repaint", src_audio="x.wav", repainting_start=-700.0, repainting_end=1.0), "use a start of at least -600"),
    (dict(task_type="repaint", src_audio="x.wav", repainting_start=0.0, repainting_end=700.0), "longer than 600 s"),
    (dict(audio_code_string="<|audio_code_99999999|>"), "audio code 99999999 is out of range"),
    (dict(audio_code_string="<|audio_code_12|><|audio_code_x|>"), "malformed audio code token '<|audio_code_x|>"),
    (dict(audio_code_string=[1, 2.5]), "audio codes must be integers, got 2.5"),
    (dict(audio_code_string="1,2,-3"), "audio code -3 is out of range"),
    (dict(audio_code_string=list(range(3001))), "the limit is 3000 codes"),
    (dict(src_latents=torch.full((1, 50, 64), float("nan"))), "src_latents contains 3200 NaN or infinite value(s)"),
    (dict(src_latents=torch.zeros(1, 10, 64)), "src_latents is 0.40 s long; a source must be at least 1 s"),
    (dict(src_latents=torch.zeros(1, 25 * 601, 64)), "the longest source the engine takes is 600 s"),
    (dict(task_type="cover", src_audio=torch.tensor([[0.0, float("inf")] * 48000] * 2)), "src_audio contains 96000 NaN"),
    (dict(reference_audio=torch.full((2, 48000), float("nan"))), "reference_audio contains 96000 NaN"),
]


@pytest.mark.parametrize("fields,message", ENGINE_CASES, ids=[m[:40] for _, m in ENGINE_CASES])
def test_engine_request_refuses(fields, message):
    with pytest.raises(InputError) as err:
        GenerationRequest(**fields).validate()
    assert message in str(err.value)


@pytest.mark.parametrize("written, spelled", [
    ("Am", "A minor"), ("C#m", "C# minor"), ("Bb", "Bb major"), ("bbm", "Bb minor"), ("F# Minor", "F# minor"),
    ("Eb maj", "Eb major"), ("g min", "G minor"), ("CM", "C major"), ("C", "C major"), ("A♭m", "A♭ minor"),
])
def test_short_and_chart_spellings_of_a_key_are_the_lm_spelling(written, spelled):
    # The official API docs write "C Major" and "Am"; the LM's vocabulary is "C major" / "A minor".
    assert values.key_scale(written) == spelled


def test_engine_request_normalises_vocabularies_and_automatic_values():
    req = GenerationRequest(caption="tabs\tand\nnewlines\r\n", key_scale="  c#   MINOR ", time_signature="6/8",
                            vocal_language="EN", audio_duration=-1, task_type="repaint", src_audio="x.wav",
                            repainting_end=-1, audio_code_string="<|audio_code_64010|>")
    req.validate()
    assert (req.key_scale, req.time_signature, req.vocal_language) == ("C# minor", "6", "en")
    assert req.audio_duration is None and req.repainting_end is None
    assert GenerationRequest(audio_duration=0).validate() is None
    # Codes the LM tokenizer has are clamped into the codebook, as the official parser does.
    assert codes_from_any("<|audio_code_0|><|audio_code_64010|><|audio_code_65534|>") == [0, 63999, 63999]


def test_sources_are_checked_before_any_model(files):
    cases = [
        (dict(task_type="cover", src_audio=str(files / "nan.wav")), "contains 1 NaN or infinite sample(s)"),
        (dict(task_type="cover", src_audio=str(files / "inf.wav")), "contains 1 NaN or infinite sample(s)"),
        (dict(task_type="cover", src_audio=str(files / "short.wav")), "0.10 s long; a source must be at least 1 s"),
        (dict(task_type="cover", src_audio=str(files / "long.flac")), "601.0 s long; the longest source"),
        (dict(task_type="repaint", src_audio=str(files / "source.wav"), repainting_start=20.0),
         "repainting_start 20 s is past the end of the source (5.20 s), which would insert 14.80 s of silence"),
        (dict(task_type="continuation", src_audio=str(files / "source.wav"), repainting_start=9.0,
              continuation_seconds=5.0), "use a start of at most 5.20 s"),
        (dict(task_type="repaint", src_latents=torch.zeros(1, 130, 64), repainting_start=8.0), "past the end"),
        (dict(task_type="cover", src_audio=str(files / "missing.wav")), "audio file not found"),
    ]
    before = _digest(files)
    for fields, message in cases:
        req = GenerationRequest(**fields)
        req.validate()
        started = time.perf_counter()
        with pytest.raises(InputError) as err:
            req.check_sources()
        assert message in str(err.value), (fields, str(err.value))
        assert time.perf_counter() - started < 30
    assert _digest(files) == before
    ok = GenerationRequest(task_type="repaint", src_audio=str(files / "source.wav"), repainting_start=5.2,
                           repainting_end=8.0).check_sources()
    assert isinstance(ok.src_audio, torch.Tensor) and ok.src_audio.shape == (2, 249600)


def test_text_files_decode_or_say_how_to_fix(files):
    with pytest.raises(InputError, match="is not UTF-8 text .*: re-save it as UTF-8"):
        values.read_text_file(files / "latin1.txt", "lyrics")
    assert values.read_text_file(files / "utf16.txt", "lyrics") == "[Verse]\nhéllo\n"
    (files / "bom8.txt").write_bytes("\ufeffhi".encode("utf-8"))
    assert values.read_text_file(files / "bom8.txt", "lyrics") == "hi"
    with pytest.raises(InputError, match="contains a NUL character"):
        values.read_text_file(files / "nul.txt", "lyrics")


# ------------------------------------------------------------------ CLI: refused before any model loads

def _cli(capsys, *argv):
    started = time.perf_counter()
    code = main(list(argv))
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    return code, err, elapsed


def _generate_cases(files):
    out = str(files / "out")
    base = ["generate", "--tiny", "--caption", "x", "--out", out]
    src = str(files / "source.wav")
    return [
        (base + ["--audio-duration", "nan"], "--audio-duration must be a finite number, got nan"),
        (base + ["--audio-duration", "5"], "--audio-duration must be from 10 to 600 seconds (or -1 for automatic)"),
        (base + ["--audio-duration", "-5"], "--audio-duration must be -1 or 0 (automatic)"),
        (base + ["--key-scale", "H major"], "key_scale 'H major' is not a key"),
        (base + ["--time-signature", "banana"], "time_signature 'banana' is not supported"),
        (base + ["--vocal-language", "xx"], "vocal_language 'xx' is not supported"),
        (base + ["--lyrics-file", str(files / "latin1.txt")], "re-save it as UTF-8"),
        (base + ["--lyrics-file", str(files / "nul.txt")], "contains a NUL character"),
        (base + ["--lyrics-file", str(files / "nope.txt")], "lyrics file not found"),
        (base + ["--lyrics", "a\x01b"], "lyrics contains the control character U+0001"),
        (base + ["--audio-code-string", "<|audio_code_99999999|>"], "audio code 99999999 is out of range"),
        (base + ["--audio-format", "wav", "--audio-quality", "7"], "unsupported wav bit depth '7'"),
        (base + ["--audio-format", "mp3", "--audio-quality", "999k"], "unsupported mp3 quality '999k'"),
        (base + ["--inference-steps", "0"], "inference_steps must be an integer from 1 to 200"),
        (base + ["--shift", "nan"], "shift must be from 0.1 to 10.0"),
        (base + ["--task-type", "repaint", "--src-audio", src, "--repainting-end", "-5"],
         "repainting_end must be -1 (the end of the source)"),
        (base + ["--task-type", "repaint", "--src-audio", src, "--repainting-start", "30"],
         "repainting_start 30 s is past the end of the source (5.20 s)"),
        (base + ["--task-type", "cover", "--src-audio", str(files / "nan.wav")], "NaN or infinite sample(s)"),
        (base + ["--task-type", "cover", "--src-audio", str(files / "short.wav")], "a source must be at least 1 s"),
        (base + ["--task-type", "cover", "--src-audio", str(files / "long.flac")], "the longest source the engine takes is 600 s"),
        (base + ["--task-type", "repaint", "--src-latents", str(files / "nan_latents.safetensors")],
         "src_latents contains 1 NaN or infinite value(s)"),
        (base + ["--save-latents", "../escape.safetensors"], "outputs stay inside the output directory"),
        (["generate", "--tiny", "--caption", "x", "--out", str(files / "not_a_folder")],
         "is a file: give --out a folder"),
        (["generate", "--tiny", "--caption", "x", "--out", str(files / "not_a_folder" / "sub")],
         "is a file, not a folder"),
        (base + ["--device", "banana"], "unknown device 'banana'"),
        (["generate", "--dit", str(TINY_DIR / "acestep-v15-turbo-tiny"), "--vae", str(TINY_DIR / "vae-tiny"),
          "--text-encoder", str(TINY_DIR / "Qwen3-Embedding-tiny"), "--device", "cpu", "--caption", "x", "--out", out,
          "--thinking", "--lm-model", str(files / "no-such-lm")], "no-such-lm not found"),
        (base + ["--thinking", "--lm-temperature", "nan"], "lm temperature must be a finite number"),
        (["think", "--keyscale", "H major", "--lm-model", "x"], "--key-scale 'H major' is not a key"),
        (["think", "--timesignature", "banana", "--lm-model", "x"], "--time-signature 'banana' is not supported"),
        (["think", "--lyrics-file", str(files / "latin1.txt"), "--lm-model", "x"], "re-save it as UTF-8"),
        (["think", "--duration", "nan", "--lm-model", "x"], "--audio-duration must be a finite number"),
        (["format", "--caption", "a\0b", "--lm-model", "x"], "caption contains a NUL character"),
        (["format", "--language", "xx", "--lm-model", "x"], "--vocal-language 'xx' is not supported"),
        (["sample", "la\x02la", "--lm-model", "x"], "query contains the control character U+0002"),
        (["sample", "--language", "klingon", "--lm-model", "x"], "--vocal-language 'klingon' is not supported"),
        (["sample", "--lm-top-p", "nan", "--lm-model", "x"], "lm top p must be a finite number"),
        (["understand", "--audio-codes", "<|audio_code_1|><|audio_code_oops|>", "--lm-model", "x"],
         "malformed audio code token"),
        (["understand", "--audio-codes", ",,", "--lm-model", "x"], "--audio-codes holds no codes"),
        (["understand", "--src-audio", str(files / "nan.wav"), "--tiny"], "NaN or infinite sample(s)"),
    ]


def test_cli_refuses_before_loading_models(files, capsys, no_model_loading):
    before = _digest(files)
    cases = _generate_cases(files)
    for argv, message in cases:
        code, err, elapsed = _cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert message in err, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert "memory:" not in err and "TINY RANDOM-WEIGHT" not in err, (argv, err)  # nothing was set up
        assert elapsed < 30, (argv, elapsed)
    assert _digest(files) == before
    assert not (files / "out").exists()  # nothing created for a refused run


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cli_device_cuda_without_gpu(files, capsys, no_model_loading):
    for argv in (["generate", "--tiny", "--caption", "x", "--out", str(files / "out"), "--device", "cuda"],
                 ["think", "--device", "cuda", "--lm-model", "x"], ["sample", "--device", "cuda", "--lm-model", "x"]):
        code, err, _ = _cli(capsys, *argv)
        assert code == 2 and "no CUDA GPU is available" in err and "use --device cpu" in err, err


def test_save_latents_never_overwrites_without_flag(files, tmp_path, capsys, no_model_loading):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "mine.safetensors"
    keep.write_bytes(b"precious")
    keep.chmod(0o640)
    before = _digest(out)
    code, err, _ = _cli(capsys, "generate", "--tiny", "--caption", "x", "--out", str(out),
                        "--save-latents", "mine.safetensors")
    assert code == 2 and "mine.safetensors already exists: choose another name, or add --overwrite" in err
    assert _digest(out) == before


def test_overwrite_keeps_the_mode_and_songs_get_free_names(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "mine.safetensors"
    keep.write_bytes(b"old")
    keep.chmod(0o640)
    taken = out / "x_00001.flac"
    taken.write_bytes(b"not yours")
    code = main(["generate", "--tiny", "--device", "cpu", "--caption", "x", "--out", str(out), "--audio-duration", "10",
                 "--inference-steps", "2", "--save-latents", "mine.safetensors", "--overwrite", "--seed", "3"])
    assert code == 0
    from acestep_core.outputs import load_latents

    assert load_latents(keep).shape == (1, 250, 64)
    assert keep.stat().st_mode & 0o777 == 0o640
    assert taken.read_bytes() == b"not yours"
    params = json.loads((out / "x_00002.json").read_text())
    assert params["file"] == "x_00002.flac" and params["audio_duration"] == 10.0


def test_automatic_duration_and_short_request_say_what_was_made():
    from engine_helpers import tiny_pipeline

    result = tiny_pipeline().generate(GenerationRequest(caption="x", audio_duration=2.0, seed=1, inference_steps=1))
    assert result.params["audio_duration"] == 5.12 and result.params["requested_duration"] == 2.0
    assert "shortest output is 5.12 s" in result.params["duration_note"]


# ------------------------------------------------------------------ loaders and doctor

def _broken_copy(root: Path, name: str, folder: str, damage) -> Path:
    target = root / name
    shutil.copytree(TINY_DIR / folder, target)
    for f in target.iterdir():
        f.chmod(0o644)
    damage(target)
    return target


def _truncate(file: Path):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _random(file: Path):
    file.write_bytes(os.urandom(4096))


def _bad_layers(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    config["layer_types"] = config["layer_types"][:-1]
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    made = {
        "acestep-v15-turbo-trunc": ("acestep-v15-turbo-tiny", lambda d: _truncate(d / "model.safetensors")),
        "acestep-v15-turbo-random": ("acestep-v15-turbo-tiny", lambda d: _random(d / "model.safetensors")),
        "acestep-v15-turbo-badjson": ("acestep-v15-turbo-tiny", lambda d: (d / "config.json").write_text('{"a": 1,')),
        "acestep-v15-turbo-layers": ("acestep-v15-turbo-tiny", _bad_layers),
        "vae-trunc": ("vae-tiny", lambda d: _truncate(next(d.glob("*.safetensors")))),
        "vae-badjson": ("vae-tiny", lambda d: (d / "config.json").write_text("[1, 2")),
        "Qwen3-Embedding-random": ("Qwen3-Embedding-tiny", lambda d: _random(d / "model.safetensors")),
        "acestep-5Hz-lm-badjson": ("acestep-5Hz-lm-tiny", lambda d: (d / "config.json").write_text("{oops")),
        "acestep-5Hz-lm-trunc": ("acestep-5Hz-lm-tiny", lambda d: _truncate(d / "model.safetensors")),
    }
    for name, (folder, damage) in made.items():
        _broken_copy(root, name, folder, damage)
    shutil.copytree(TINY_DIR / "acestep-v15-turbo-tiny", root / "acestep-v15-turbo-good")
    return root


def _load(kind: str, path: Path):
    if kind == "dit":
        from acestep_core.dit import load_dit
        return load_dit(path)
    if kind == "vae":
        from acestep_core.vae import load_vae
        return load_vae(path)
    if kind == "te":
        from acestep_core.text_encoder import load_text_encoder
        return load_text_encoder(path)
    from acestep_core.lm.model import load_lm
    return load_lm(path, "float32", "cpu")


LOADER_CASES = [
    ("dit", "acestep-v15-turbo-trunc", "not a valid safetensors file (truncated or corrupt download?)"),
    ("dit", "acestep-v15-turbo-random", "not a valid safetensors file"),
    ("dit", "acestep-v15-turbo-badjson", "the DiT config is broken; download it again"),
    ("dit", "acestep-v15-turbo-layers", "layer_types lists 3 layers but num_hidden_layers is 4"),
    ("vae", "vae-trunc", "not a valid safetensors file"),
    ("vae", "vae-badjson", "cannot read the VAE config"),
    ("te", "Qwen3-Embedding-random", "not a valid safetensors file"),
    ("lm", "acestep-5Hz-lm-badjson", "the 5 Hz LM config is broken; download it again"),
    ("lm", "acestep-5Hz-lm-trunc", "cannot read LM weights"),
]


@pytest.mark.parametrize("kind,name,message", LOADER_CASES, ids=[c[1] for c in LOADER_CASES])
def test_loaders_give_checkpoint_errors(broken, kind, name, message):
    before = _digest(broken / name)
    with pytest.raises(CheckpointError) as err:
        _load(kind, broken / name)
    assert message in str(err.value)
    assert _digest(broken / name) == before


def test_cli_reports_a_mismatched_config_in_one_line(broken, files, capsys):
    code, err, _ = _cli(capsys, "generate", "--dit", str(broken / "acestep-v15-turbo-layers"),
                        "--vae", str(TINY_DIR / "vae-tiny"), "--text-encoder", str(TINY_DIR / "Qwen3-Embedding-tiny"),
                        "--device", "cpu", "--caption", "x", "--out", str(files / "out2"))
    assert code == 2 and "layer_types lists 3 layers but num_hidden_layers is 4" in err and "Traceback" not in err


def test_doctor_reports_corrupt_checkpoints(broken, capsys):
    before = _digest(broken)
    assert main(["doctor", "--json", "--simulate-vram", "8", "--checkpoint-dir", str(broken)]) == 0
    report = json.loads(capsys.readouterr().out)
    found = {c["name"]: c for c in report["checkpoints"]}
    for name in ("acestep-v15-turbo-trunc", "acestep-v15-turbo-random", "acestep-v15-turbo-badjson",
                 "acestep-v15-turbo-layers", "vae-trunc", "vae-badjson", "Qwen3-Embedding-random",
                 "acestep-5Hz-lm-badjson", "acestep-5Hz-lm-trunc"):
        assert found[name]["corrupt"], name
    assert "truncated: the header needs" in found["acestep-v15-turbo-trunc"]["corrupt"][0]
    assert "header length does not fit the file" in found["acestep-v15-turbo-random"]["corrupt"][0]
    assert "config is broken" in found["acestep-v15-turbo-badjson"]["corrupt"][0]
    assert "layer_types lists 3 layers" in found["acestep-v15-turbo-layers"]["corrupt"][0]
    assert found["acestep-v15-turbo-good"]["corrupt"] == []
    assert main(["doctor", "--simulate-vram", "8", "--checkpoint-dir", str(broken)]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if "acestep-v15-turbo-random" in l and "[" in l)
    assert "[CORRUPT]" in line and "[ok]" not in line
    assert "[ok]" in next(l for l in text.splitlines() if "acestep-v15-turbo-good" in l)
    assert _digest(broken) == before


def test_doctor_sound_fixtures_and_comfy_files_are_ok(capsys, tmp_path):
    assert main(["doctor", "--json", "--simulate-vram", "8", "--checkpoint-dir", str(TINY_DIR),
                 "--comfy-models", str(COMFY_TINY_DIR)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoints"] and all(c["corrupt"] == [] for c in report["checkpoints"])
    assert report["comfy_files"] and all(c["corrupt"] == [] for c in report["comfy_files"])
    # A damaged ComfyUI file is reported too.
    models = tmp_path / "models" / "diffusion_models"
    models.mkdir(parents=True)
    (models / "acestep_v1.5_turbo.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["doctor", "--json", "--simulate-vram", "8", "--comfy-models", str(tmp_path / "models")]) == 0
    comfy = json.loads(capsys.readouterr().out)["comfy_files"]
    assert "is corrupt" in comfy[0]["corrupt"][0]


# ------------------------------------------------------------------ nodes

@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    import nodes_harness as h
    from nodes_models import build_models_dir, write_source_audio

    root = tmp_path_factory.mktemp("comfy")
    h.install_fake_host()
    import folder_paths

    models = build_models_dir(root, TINY_DIR, COMFY_TINY_DIR)
    dirs = {k: root / k for k in ("output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    folder_paths.reset(str(models), str(dirs["output"]), str(dirs["temp"]), str(dirs["input"]))
    write_source_audio(dirs["input"] / "song.flac", TINY_DIR)
    _, node_map = h.load_pack()
    model = node_map["ACE15S_LoadModel"].execute(
        dit="acestep_v1.5_turbo.safetensors", vae="ace_1.5_vae.safetensors", text_encoder="qwen_0.6b_ace15.safetensors",
        lm="none", offload="auto", dtype="auto").args[0]
    return h, node_map, dirs, model


def test_nodes_surface_engine_errors_before_the_device(comfy, monkeypatch):
    h, node_map, dirs, model = comfy
    calls = []
    monkeypatch.setattr(type(model), "run_pipeline", lambda self, fn: calls.append(fn))
    errors_cls = type(model).__module__.rsplit(".nodes.", 1)[0] + ".acestep_core.errors"
    import importlib

    pack_input_error = importlib.import_module(errors_cls).InputError
    source = {"waveform": load_golden("source_audio")["src_a"].unsqueeze(0), "sample_rate": SR}
    nan_audio = {"waveform": torch.full((1, 2, SR * 2), float("nan")), "sample_rate": SR}
    dit = dict(seed=1, steps=2, shift=3.0, guidance=7.0)
    cases = [
        ("ACE15S_Text2Music", dict(model=model, caption="x", lyrics="la\0la", duration=10.0, bpm=0, keyscale="auto",
                                   timesignature="auto", language="auto", batch_size=1, **dit),
         "lyrics contains a NUL character"),
        ("ACE15S_Text2Music", dict(model=model, caption="x\x1b", lyrics="", duration=10.0, bpm=0, keyscale="auto",
                                   timesignature="auto", language="auto", batch_size=1, **dit),
         "caption contains the control character U+001B"),
        ("ACE15S_Cover", dict(model=model, audio=nan_audio, strength=1.0, caption="x", lyrics="", **dit),
         "contains NaN or infinite samples"),
        ("ACE15S_Cover", dict(model=model, audio={"waveform": torch.zeros(1, 2, SR // 10), "sample_rate": SR},
                              strength=1.0, caption="x", lyrics="", **dit), "a source must be at least 1 s"),
        ("ACE15S_Repaint", dict(model=model, audio=source, start=9.0, end=12.0, caption="x", lyrics="", strength=0.5,
                                **dit), "past the end of the audio"),
        ("ACE15S_Continue", dict(model=model, audio=source, seconds=240.0, caption="x", lyrics="\x00", overlap=1.0,
                                 **dit), "lyrics contains a NUL character"),
    ]
    for node_id, kwargs, message in cases:
        with pytest.raises(pack_input_error) as err:
            node_map[node_id].execute(**kwargs)
        assert message in str(err.value), (node_id, str(err.value))
    assert calls == []  # no node reached the device stage


def test_nodes_harness_reports_a_bad_repaint_window_as_the_node_error(comfy):
    h, node_map, dirs, _ = comfy
    before = _digest(dirs["input"])
    prompt = json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    prompt["2"]["inputs"]["audio"] = "song.flac"
    prompt["3"]["inputs"].update(start=7.0, end=9.0, steps=1)
    with pytest.raises(Exception) as err:
        h.execute_prompt(prompt, node_map)
    assert type(err.value).__name__ == "InputError"
    assert "Repaint start 7.00s is past the end of the audio (5.20s); use Continue" in str(err.value)
    assert _digest(dirs["input"]) == before
    assert not any(dirs["output"].rglob("*.mp3"))
