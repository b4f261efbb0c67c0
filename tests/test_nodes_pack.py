"""The pack loads like ComfyUI loads it; node ids, schemas, model discovery, save node, cancel."""

from __future__ import annotations

import json

import av
import pytest
import torch

import nodes_harness as h
from nodes_models import build_models_dir

EXPECTED = {
    "ACE15S_LoadModel": "Load ACE-Step", "ACE15S_LMThinking": "LM Thinking", "ACE15S_FormatInput": "Format Input",
    "ACE15S_SimpleMode": "Simple Mode", "ACE15S_Text2Music": "Text2Music", "ACE15S_Continue": "Continue",
    "ACE15S_Repaint": "Repaint", "ACE15S_Cover": "Cover", "ACE15S_SaveAudio": "Save Audio",
    "ACE15S_ExtractTrack": "Extract Track", "ACE15S_AddTrack": "Add Track", "ACE15S_CompleteTrack": "Complete Track",
    "ACE15S_DescribeAudio": "Describe Audio", "ACE15S_LoRA": "ACE-Step LoRA",
}


@pytest.fixture()
def host_dirs(tmp_path):
    h.install_fake_host()
    import folder_paths

    dirs = {k: tmp_path / k for k in ("models", "output", "temp", "input")}
    for d in dirs.values():
        d.mkdir()
    folder_paths.reset(str(dirs["models"]), str(dirs["output"]), str(dirs["temp"]), str(dirs["input"]))
    return dirs


@pytest.fixture()
def pack(host_dirs):
    return h.load_pack()


def test_pack_loads_under_mangled_name_with_v3_only(pack):
    module, node_map = pack
    assert module.__name__ == h.PACK_MODULE_NAME
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # V1 mappings would switch V3 off
    assert {k: c.define_schema().display_name for k, c in node_map.items()} == EXPECTED


def test_ids_prefixed_unique_and_not_core(pack):
    _, node_map = pack
    for node_id, cls in node_map.items():
        schema = cls.define_schema()
        assert node_id.startswith("ACE15S_") and node_id not in h.CORE_NODE_IDS
        assert not node_id.startswith(("AceStep", "ACE_STEP_", "ACEStep15"))
        assert schema.category == "audio/ACE-Step 1.5 Studio"
        for out in schema.outputs:
            assert out.io_type in {"ACE15S_MODEL", "ACE15S_PLAN", "AUDIO", "LATENT", "STRING", "INT"}


def test_schemas_survive_missing_model_folders(pack, host_dirs):
    """No model folder at all: empty choices, never an exception (a broken /object_info)."""
    _, node_map = pack
    schema = node_map["ACE15S_LoadModel"].define_schema()
    options = {i.id: i.options["options"] for i in schema.inputs}
    assert options["dit"] == [] and options["vae"] == ["auto"] and options["text_encoder"] == ["auto"]
    assert options["lm"] == ["auto", "none", "0.6B", "1.7B", "4B"]


def test_loader_lists_official_folders_and_comfy_files(pack, host_dirs, tiny_dir, comfy_tiny_dir):
    import folder_paths

    build_models_dir(host_dirs["models"].parent, tiny_dir, comfy_tiny_dir)
    from importlib import import_module

    _, node_map = h.load_pack()  # re-registers models/acestep under the new models dir
    assert folder_paths.get_folder_paths("acestep")[0] == str(host_dirs["models"] / "acestep")
    options = {i.id: i.options["options"] for i in node_map["ACE15S_LoadModel"].define_schema().inputs}
    assert options["dit"] == ["acestep-v15-turbo", "acestep_v1.5_base.safetensors", "acestep_v1.5_turbo.safetensors",
                              "ace_step_1.5_turbo_aio.safetensors"]  # the last from models/checkpoints/
    defaults = {i.id: i.default for i in node_map["ACE15S_LoadModel"].define_schema().inputs}
    assert defaults["dit"] == "acestep-v15-turbo"
    files = import_module(h.PACK_MODULE_NAME + ".nodes.model_files")
    assert files.preferred_dit(["acestep_v1.5_base.safetensors", "acestep_v1.5_xl_turbo_bf16.safetensors",
                                "acestep_v1.5_turbo.safetensors"]) == "acestep_v1.5_turbo.safetensors"
    assert files.preferred_dit(["acestep_v1.5_base.safetensors"]) == "acestep_v1.5_base.safetensors"
    assert options["vae"] == ["auto", "vae", "ace_1.5_vae.safetensors"]
    # the LM file is not offered as a text encoder
    assert options["text_encoder"] == ["auto", "Qwen3-Embedding-0.6B", "qwen_0.6b_ace15.safetensors"]
    assert files.available_lms() == {"1.7B": str(host_dirs["models"] / "acestep" / "acestep-5Hz-lm-1.7B")}


def test_bad_sidecar_is_a_clear_error(pack, tmp_path):
    from importlib import import_module

    from acestep_core.errors import CheckpointError

    files = import_module(h.PACK_MODULE_NAME + ".nodes.model_files")
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    (tmp_path / "m.acestep.json").write_text("[1, 2]")
    with pytest.raises(Exception) as info:
        files.sidecar_config(str(model))
    assert type(info.value).__name__ == CheckpointError.__name__ and "m.acestep.json" in str(info.value)


def _save(node_map, audio, prefix="audio/test", fmt="mp3 320k", extra=None):
    prompt = {"9": {"class_type": "ACE15S_SaveAudio", "inputs": {"filename_prefix": prefix, "format": fmt}}}
    cls = node_map["ACE15S_SaveAudio"]
    from types import SimpleNamespace

    cls.hidden = SimpleNamespace(prompt=prompt, extra_pnginfo=extra, unique_id="9")
    return cls.execute(audio=audio, filename_prefix=prefix, format=fmt)


def _song(batch=2, seconds=1.0, rate=48000):
    t = torch.arange(int(seconds * rate)) / rate
    wave = torch.stack([torch.sin(2 * torch.pi * 440 * t), torch.sin(2 * torch.pi * 660 * t)]) * 0.3
    info = {"params": {"caption": "warm  lo-fi\nbeat", "bpm": 84, "key_scale": "F# minor", "seed": 11},
            "seeds": [11, 12], "model": {"dit": "acestep-v15-turbo"}, "plan": {"caption": "warm lo-fi beat",
                                                                              "bpm": 84, "keyscale": "F# minor"}}
    return {"waveform": wave.repeat(batch, 1, 1), "sample_rate": rate, "acestep": info}


def test_save_mp3_tags_graph_and_counter(pack, host_dirs):
    _, node_map = pack
    workflow = {"nodes": [], "links": [], "version": 0.4}
    out = _save(node_map, _song(), extra={"workflow": workflow})
    files = out.ui["audio"]
    assert [f["filename"] for f in files] == ["test_00001.mp3", "test_00002.mp3"]
    assert all(f["subfolder"] == "audio" and f["type"] == "output" for f in files)
    path = host_dirs["output"] / "audio" / "test_00002.mp3"
    assert path.read_bytes()[:3] == b"ID3"
    with av.open(str(path)) as f:
        tags = f.metadata
        stream = f.streams.audio[0]
        assert stream.channels == 2 and stream.sample_rate == 48000
        samples = sum(fr.samples for fr in f.decode(audio=0))
    assert abs(samples / 48000 - 1.0) < 0.06
    assert tags["title"] == "warm lo-fi beat" and tags["TBPM"] == "84" and tags["TKEY"] == "F# minor"
    assert json.loads(tags["workflow"]) == workflow
    assert json.loads(tags["prompt"])["9"]["class_type"] == "ACE15S_SaveAudio"
    assert json.loads(tags["acestep"])["seed"] == 12  # second batch item
    # counter continues after existing files; audio passes through
    again = _save(node_map, _song(batch=1))
    assert again.ui["audio"][0]["filename"] == "test_00003.mp3"
    assert again.args[0]["waveform"].shape == (1, 2, 48000)


def test_save_with_batch_num_never_overwrites(pack, host_dirs):
    """%batch_num% in the prefix: ComfyUI's counter lookup never matches the files it wrote, so each run
    and each Save node of one graph must find the next free number itself."""
    _, node_map = pack
    first = [f["filename"] for f in _save(node_map, _song(), prefix="bn/x_%batch_num%", fmt="flac").ui["audio"]]
    again = [f["filename"] for f in _save(node_map, _song(), prefix="bn/x_%batch_num%", fmt="flac").ui["audio"]]
    other = [f["filename"] for f in _save(node_map, _song(batch=1), prefix="bn/x_%batch_num%", fmt="wav 16-bit").ui["audio"]]
    assert first == ["x_0_00001.flac", "x_1_00002.flac"]
    assert again == ["x_0_00003.flac", "x_1_00004.flac"]
    assert other == ["x_0_00004.wav"]  # past this name's files, whatever their format
    assert len(list((host_dirs["output"] / "bn").iterdir())) == 5


def test_save_tags_what_the_song_was_made_with(pack, host_dirs):
    """A node's own bpm / key / caption override a plan's: the file's tags say what was used."""
    _, node_map = pack
    song = _song(batch=1)
    song["acestep"]["params"].update(caption="dark techno", bpm=75, key_scale="A minor")
    _save(node_map, song)
    with av.open(str(host_dirs["output"] / "audio" / "test_00001.mp3")) as f:
        tags = f.metadata
    assert (tags["title"], tags["TBPM"], tags["TKEY"]) == ("dark techno", "75", "A minor")
    song["acestep"]["params"] = {"seed": 3}  # nothing set on the node: the plan's values
    _save(node_map, song)
    with av.open(str(host_dirs["output"] / "audio" / "test_00002.mp3")) as f:
        tags = f.metadata
    assert (tags["title"], tags["TBPM"], tags["TKEY"]) == ("warm lo-fi beat", "84", "F# minor")


@pytest.mark.parametrize("fmt,codec,bits", [("wav 24-bit", "pcm_s24le", 24), ("flac", "flac", None),
                                            ("opus 128k", "opus", None)])
def test_save_other_formats_decode(pack, host_dirs, fmt, codec, bits):
    _, node_map = pack
    out = _save(node_map, _song(batch=1, seconds=0.5), prefix="x/y", fmt=fmt)
    name = out.ui["audio"][0]["filename"]
    with av.open(str(host_dirs["output"] / "x" / name)) as f:
        stream = f.streams.audio[0]
        assert stream.codec_context.name == codec and stream.channels == 2
        samples = sum(fr.samples for fr in f.decode(audio=0))
        assert abs(samples / stream.sample_rate - 0.5) < 0.05


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs", "a/../../b", "C:/x"])
def test_save_refuses_paths_outside_output(pack, host_dirs, prefix):
    _, node_map = pack
    cls = node_map["ACE15S_SaveAudio"]
    assert "output folder" in cls.validate_inputs(filename_prefix=prefix)
    with pytest.raises(ValueError, match="output folder"):
        _save(node_map, _song(batch=1), prefix=prefix)
    assert not any(host_dirs["output"].parent.glob("**/*.mp3"))


def test_save_refuses_symlink_escape(pack, host_dirs, tmp_path):
    _, node_map = pack
    outside = tmp_path / "outside"
    outside.mkdir()
    (host_dirs["output"] / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the output folder"):
        _save(node_map, _song(batch=1), prefix="link/song")
    assert list(outside.iterdir()) == []


def test_interrupt_propagates_through_progress(pack):
    """Cancel: the progress callback raises ComfyUI's interrupt, and CancelledError maps back to it."""
    from importlib import import_module

    import comfy.model_management as mm
    import comfy.utils

    running = import_module(h.PACK_MODULE_NAME + ".nodes.running")
    CancelledError = import_module(h.PACK_MODULE_NAME + ".acestep_core.errors").CancelledError
    steps = []

    def engine_loop(progress, cancel):
        for i in range(10):
            steps.append(i)
            if i == 3:
                mm.interrupt_current_processing(True)
            progress(i + 1, 10)
        return "done"

    with pytest.raises(mm.InterruptProcessingException):
        running.run_engine(engine_loop)
    assert steps == [0, 1, 2, 3] and comfy.utils.updates[-1] == (3, 10)

    def polling_engine(progress, cancel):
        mm.interrupt_current_processing(True)
        if cancel():
            raise CancelledError("stopped")

    with pytest.raises(mm.InterruptProcessingException):
        running.run_engine(polling_engine)
    assert not mm.processing_interrupted()


def test_audio_wire_layouts(pack):
    from importlib import import_module

    wire = import_module(h.PACK_MODULE_NAME + ".nodes.audio_wire")
    mono = {"waveform": torch.ones(1, 1, 44100) * 0.5, "sample_rate": 44100}
    clip = wire.from_comfy_audio(mono)
    assert clip.shape[0] == 2 and abs(clip.shape[1] - 48000) <= 1
    latent = wire.to_comfy_latent(torch.randn(2, 150, 64))
    assert latent["type"] == "audio" and latent["samples"].shape == (2, 64, 150)
    with pytest.raises(ValueError, match="empty"):
        wire.from_comfy_audio({"waveform": torch.zeros(1, 2, 0), "sample_rate": 48000})


def test_requirements_txt_is_the_engine_deps_without_torch():
    """ComfyUI-Manager installs requirements.txt into ComfyUI's Python, which already has torch."""
    import re
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def names(specs):
        return {re.split(r"[<>=!~\[; ]", s.strip(), maxsplit=1)[0].lower() for s in specs if s.strip()}

    project = tomllib.loads((h.REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = [ln for ln in (h.REPO_ROOT / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
    assert names(lines) == names(project["dependencies"]) - {"torch", "torchaudio"}
    assert not any("==" in ln for ln in lines)  # loose: never fight ComfyUI's own pins
