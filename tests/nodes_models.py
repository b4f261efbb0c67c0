"""A ComfyUI-style models/ folder built from the shared tiny fixtures (symlinks + config sidecars)."""

from __future__ import annotations

import json
import os
from pathlib import Path


AIO_NAME = "ace_step_1.5_turbo_aio.safetensors"


def build_models_dir(root: Path, tiny: Path, comfy_tiny: Path, official: bool = True) -> Path:
    """ComfyUI repack files under their real names; optionally official folders in models/acestep/.

    The tiny files were built with the tiny configs, which tensor shapes do not fully reveal
    (e.g. sliding_window 16), so each gets the documented `<stem>.acestep.json` sidecar.
    """
    models = root / "models"
    for sub, name in (("diffusion_models", "acestep_v1.5_turbo.safetensors"),
                      ("diffusion_models", "acestep_v1.5_base.safetensors"), ("vae", "ace_1.5_vae.safetensors"),
                      ("text_encoders", "qwen_0.6b_ace15.safetensors"),
                      ("text_encoders", "qwen_1.7b_ace15.safetensors")):
        (models / sub).mkdir(parents=True, exist_ok=True)
        link = models / sub / name
        if not link.exists():
            os.symlink(comfy_tiny / sub / name, link)
    for variant in ("turbo", "base"):
        (models / "diffusion_models" / f"acestep_v1.5_{variant}.acestep.json").write_text(
            (tiny / f"acestep-v15-{variant}-tiny" / "config.json").read_text())
    (models / "vae" / "ace_1.5_vae.acestep.json").write_text((tiny / "vae-tiny" / "config.json").read_text())
    # The all-in-one checkpoint where ComfyUI keeps it; its one sidecar serves the DiT and the VAE loader.
    (models / "checkpoints").mkdir(exist_ok=True)
    aio = models / "checkpoints" / AIO_NAME
    if not aio.exists():
        os.symlink(comfy_tiny / "checkpoints" / AIO_NAME, aio)
    vae_config = json.loads((tiny / "vae-tiny" / "config.json").read_text())
    dit_config = json.loads((tiny / "acestep-v15-turbo-tiny" / "config.json").read_text())
    (models / "checkpoints" / AIO_NAME.replace(".safetensors", ".acestep.json")).write_text(
        json.dumps({**dit_config, **{k: vae_config[k] for k in ("channel_multiples", "decoder_channels")}}))
    # The shipped LoRA workflow's adapters: an official PEFT folder and a ComfyUI single file.
    (models / "loras").mkdir(exist_ok=True)
    for name, src in (("ace15s_example_lora", "lora_a"), ("ace15s_example_lora_b.safetensors", "lora_b.comfyui.safetensors")):
        link = models / "loras" / name
        if not link.exists():
            os.symlink(tiny / "loras" / src, link)
    (models / "acestep").mkdir(exist_ok=True)
    if official:
        for name, src in (("acestep-v15-turbo", "acestep-v15-turbo-tiny"), ("vae", "vae-tiny"),
                          ("Qwen3-Embedding-0.6B", "Qwen3-Embedding-tiny"),
                          ("acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-tiny")):
            link = models / "acestep" / name
            if not link.exists():
                os.symlink(tiny / src, link)
    return models


def write_source_audio(path: Path, tiny: Path) -> Path:
    """The goldens' 5.2 s synthetic source song, as FLAC (what a user would upload)."""
    from safetensors.torch import load_file

    from acestep_core.audio_io import save_audio

    src = load_file(str(tiny / "goldens" / "source_audio.safetensors"))["src_a"]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, src, sample_rate=48000, format="flac", quality=24)
    return path


SOURCE_SECONDS = 249600 / 48000  # the goldens' source song written by write_source_audio
# What each shipped workflow makes once shortened: LM nodes plan 10 s, Text2Music alone 6 s, edits keep
# the source's length, Continue adds 2 s. Simple Mode's length is the LM's own choice (None). A plan's
# codes set the length (thinking: 10 s); a plan without codes only fills metas left on auto, so
# Text2Music's own 6 s wins over Format Input's 10 s (acestep_core.planning.fill_request).
SHORTENED_SECONDS = {"text2music_thinking": 10.0, "format_input_text2music": 6.0, "simple_mode": None,
                     "mix_native_nodes": 6.0, "repaint": SOURCE_SECONDS, "cover": SOURCE_SECONDS,
                     "continue": SOURCE_SECONDS + 2.0, "extract_and_complete": SOURCE_SECONDS,
                     "add_track": SOURCE_SECONDS, "describe_and_rerender": SOURCE_SECONDS, "lora": 6.0}


def shorten_for_tiny(prompt: dict) -> dict:
    """Keep the shipped graphs as they are, only shorter songs so CPU tests stay quick."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        if "duration" in inputs and not isinstance(inputs["duration"], list):
            inputs["duration"] = 6.0 if node["class_type"].startswith("ACE15S_Text2") else 10.0
        if node["class_type"] == "ACE15S_Continue":
            inputs["seconds"] = 2.0
        if node["class_type"] == "ACE15S_Repaint" and inputs.get("end", 0) > 5:
            inputs["start"], inputs["end"] = 1.0, 3.0
        if "steps" in inputs:
            inputs["steps"] = 4
        if node["class_type"] in ("ACE15S_LMThinking", "ACE15S_FormatInput"):
            # all metas given: the random tiny LM skips free-running CoT text and only writes codes
            inputs.update(bpm=120, keyscale="C major", timesignature="4", language="en")
            if "use_cot_caption" in inputs:
                inputs["use_cot_caption"] = False
    return prompt


def node_env(root: Path, tiny: Path, comfy_tiny: Path, source_name: str = "ace15s_example_song.flac"):
    """A fake ComfyUI host over a models/ folder from the tiny fixtures, with the source song in input/.
    Returns (node_map, dirs, source path)."""
    import nodes_harness as h

    h.install_fake_host()
    import folder_paths

    models = build_models_dir(root, tiny, comfy_tiny)
    dirs = {k: root / k for k in ("output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    folder_paths.reset(str(models), str(dirs["output"]), str(dirs["temp"]), str(dirs["input"]))
    source = write_source_audio(dirs["input"] / source_name, tiny)
    _, node_map = h.load_pack()
    return node_map, dirs, source
