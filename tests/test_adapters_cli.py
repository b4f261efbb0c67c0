"""`generate --lora PATH --lora-scale S` on the tiny checkpoints: the JSON records every adapter."""

import hashlib
import json

import pytest

from conftest import TINY_DIR

from acestep_core.cli import main


@pytest.fixture(autouse=True)
def tiny_fixtures(monkeypatch):
    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))


def _generate(tmp_path, *args):
    out = tmp_path / "out"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(out), "--seed", "3", "--caption", "x",
                 "--audio-duration", "10", "--audio-format", "wav", *args])
    return code, out


def test_adapters_stack_and_are_recorded(tmp_path, tiny_dir):
    folder = tiny_dir / "loras" / "lora_a"
    comfy = tiny_dir / "loras" / "lora_b.comfyui.safetensors"
    code, out = _generate(tmp_path, "--lora", str(folder), "--lora-scale", "0.4", "--lora", str(comfy))
    assert code == 0
    params = json.loads(next(out.glob("*.json")).read_text())
    recorded = params["adapters"]
    assert [(a["name"], a["file"], a["format"], a["scale"]) for a in recorded] == [
        ("lora_a", "lora_a", "peft", 0.4), ("lora_b.comfyui", "lora_b.comfyui.safetensors", "comfyui", 1.0)]
    assert recorded[1]["sha256"] == hashlib.sha256(comfy.read_bytes()).hexdigest()
    config_and_weights = (folder / "adapter_config.json").read_bytes() + (folder / "adapter_model.safetensors").read_bytes()
    assert recorded[0]["sha256"] == hashlib.sha256(config_and_weights).hexdigest()


def test_the_adapter_changes_the_audio(tmp_path, tiny_dir):
    from acestep_core.audio_io import load_audio

    _, plain = _generate(tmp_path / "a")
    _, adapted = _generate(tmp_path / "b", "--lora", str(tiny_dir / "loras" / "lora_a"), "--lora-scale", "2.5")
    a, b = load_audio(next(plain.glob("*.wav"))), load_audio(next(adapted.glob("*.wav")))
    assert a.shape == b.shape and (a - b).abs().max().item() > 1e-3


def test_bad_adapter_is_reported_before_generating(tmp_path, capsys):
    code, out = _generate(tmp_path, "--lora", str(tmp_path / "nope"))
    assert code == 2
    assert "adapter not found" in capsys.readouterr().err
    assert not out.exists()


def test_scale_without_its_lora_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _generate(tmp_path, "--lora-scale", "0.5")
    assert exc.value.code == 2
    assert "one --lora-scale per --lora" in capsys.readouterr().err
