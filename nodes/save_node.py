"""Save Audio: mp3 / flac / wav / opus / aac with the graph and the song's tags, inside the output folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..acestep_core.errors import InputError
from . import audio_wire, host
from .host import io
from .widgets import CATEGORY

# format choice -> (container format, quality passed to the encoder, file extension)
FORMATS = {
    "mp3 V0": ("mp3", "V0", "mp3"),
    "mp3 128k": ("mp3", "128k", "mp3"),
    "mp3 192k": ("mp3", "192k", "mp3"),
    "mp3 256k": ("mp3", "256k", "mp3"),
    "mp3 320k": ("mp3", "320k", "mp3"),
    "flac": ("flac", None, "flac"),
    "wav 16-bit": ("wav", "16", "wav"),
    "wav 24-bit": ("wav", "24", "wav"),
    "wav 32-bit float": ("wav", "32", "wav"),
    "opus 128k": ("opus", "128k", "opus"),
    "opus 192k": ("opus", "192k", "opus"),
    "aac 128k": ("aac", "128k", "aac"),  # raw AAC (ADTS), as the official saver: no tags, no workflow
    "aac 192k": ("aac", "192k", "aac"),
}
TITLE_MAX_CHARS = 120
BATCH_TOKEN = "%batch_num%"


def next_free_counter(folder: str, name: str, counter: int) -> int:
    """`counter`, or one past the highest `{name}_NNNNN.*` already in `folder`. ComfyUI looks the
    counter up by the prefix as typed, so a prefix with %batch_num% never matches the files it wrote
    and would start at 1 again each run (overwriting); the name with the token replaced does match."""
    pattern = re.compile(re.escape(os.path.normcase(name)) + r"_(\d+)\.[^.]+$")
    try:
        names = os.listdir(folder)
    except OSError:
        return counter
    used = [int(m.group(1)) for m in (pattern.match(os.path.normcase(n)) for n in names) if m]
    return max([counter, *(u + 1 for u in used)])


def safe_output_path(output_dir: str, subfolder: str, file_name: str) -> str:
    """Join and prove the result stays inside the output directory (symlinks resolved)."""
    if os.sep in file_name or (os.altsep and os.altsep in file_name) or file_name in ("", ".", ".."):
        raise InputError(f"invalid file name '{file_name}'")
    root = os.path.realpath(output_dir)
    target = os.path.realpath(os.path.join(root, subfolder, file_name))
    if os.path.commonpath([root, target]) != root:
        raise InputError("filename_prefix points outside the output folder; use a relative prefix like 'audio/song'")
    return target


def _check_prefix(prefix: str) -> str:
    prefix = (prefix or "").strip()
    if not prefix:
        raise InputError("filename_prefix is empty")
    parts = Path(prefix.replace("\\", "/")).parts
    if Path(prefix).is_absolute() or prefix.startswith(("/", "\\")) or ".." in parts or ":" in prefix:
        raise InputError(f"filename_prefix '{prefix}' must be a relative name inside the output folder "
                         "(no absolute paths, drive letters or '..')")
    return prefix


def song_tags(info: dict, container: str, batch_index: int) -> dict:
    """Title / bpm / key / seed / model / plan tags (ID3 frames for mp3)."""
    if not info:
        return {}
    params = info.get("params", {}) or {}
    plan = info.get("plan") or {}
    # What the song was made with (the node's own values win over a plan's); the plan fills what is unset.
    caption = params.get("caption") or plan.get("caption") or ""
    bpm = params.get("bpm") or plan.get("bpm")
    key = params.get("key_scale") or params.get("keyscale") or plan.get("keyscale")
    seeds = info.get("seeds") or []
    seed = seeds[batch_index] if batch_index < len(seeds) else params.get("seed")
    tags = {}
    if caption:
        tags["title"] = " ".join(str(caption).split())[:TITLE_MAX_CHARS]
    if bpm:
        tags["TBPM" if container == "mp3" else "bpm"] = str(bpm)
    if key:
        tags["TKEY" if container == "mp3" else "key"] = str(key)
    model = info.get("model") or {}
    adapters = params.get("adapters") or []
    tags["comment"] = f"ACE-Step 1.5 ({model.get('dit', '?')}), seed {seed}" + "".join(
        f", {a.get('format', 'lora')} {a.get('name')} x{a.get('scale')}" for a in adapters)
    tags["acestep"] = json.dumps({"seed": seed, "model": model, "adapters": adapters, "plan": plan or None,
                                  "params": params}, default=str, ensure_ascii=False)
    return tags


class SaveAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ACE15S_SaveAudio",
            display_name="Save Audio",
            category=CATEGORY,
            description="Saves audio to the output folder as mp3, flac, wav, opus or aac, with the workflow (drop the "
                        "file on ComfyUI to restore the graph) and song tags (title, bpm, key, seed, model, plan).",
            inputs=[io.Audio.Input("audio"),
                    io.String.Input("filename_prefix", default="audio/ACE-Step",
                                    tooltip="Relative to the output folder; '/' makes subfolders. %date tokens work; "
                                            "%batch_num% is the song's index in the batch."),
                    io.Combo.Input("format", options=list(FORMATS), default="mp3 320k",
                                   tooltip="File format: mp3 (V0 = variable bitrate), lossless flac or wav, or "
                                           "opus or aac. mp3, flac and opus files carry the workflow and tags.")],
            outputs=[io.Audio.Output("audio", display_name="audio")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix):
        if filename_prefix is not None:
            try:
                _check_prefix(filename_prefix)
            except InputError as exc:
                return str(exc)
        return True

    @classmethod
    def execute(cls, audio, filename_prefix, format) -> io.NodeOutput:
        from ..acestep_core.audio_io import save_audio

        if format not in FORMATS:
            raise InputError(f"format must be one of {list(FORMATS)}, got '{format}'")
        container, quality, ext = FORMATS[format]
        prefix = _check_prefix(filename_prefix)
        output_dir = host.folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = host.folder_paths.get_save_image_path(prefix, output_dir)

        graph_meta = cls._graph_metadata()
        waveform = audio["waveform"]
        if waveform.dim() == 2:
            waveform = waveform.unsqueeze(0)
        info = audio.get("acestep") or {}
        results = []
        items = range(waveform.shape[0])
        if BATCH_TOKEN in name:  # one counter for the whole batch, past every item's earlier files
            counter = max([counter, *(next_free_counter(folder, name.replace(BATCH_TOKEN, str(i)), counter)
                                      for i in items)])
        for i in items:
            clip = waveform[i].detach().to("cpu", audio_wire.torch.float32)
            item_name = name.replace(BATCH_TOKEN, str(i))
            file_name = f"{item_name}_{counter:05}.{ext}"
            path = safe_output_path(output_dir, subfolder, file_name)
            while os.path.exists(path):  # never overwrite, whatever else wrote into the folder
                counter += 1
                file_name = f"{item_name}_{counter:05}.{ext}"
                path = safe_output_path(output_dir, subfolder, file_name)
            metadata = {**graph_meta, **song_tags(info, container, i)}
            save_audio(path, clip, sample_rate=int(audio["sample_rate"]), format=container, quality=quality,
                       metadata=metadata)
            results.append({"filename": file_name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return io.NodeOutput(audio, ui={"audio": results})

    @classmethod
    def _graph_metadata(cls) -> dict:
        """ComfyUI's own tags: the API prompt and the UI workflow (so the file restores the graph)."""
        if host.metadata_disabled():
            return {}
        meta = {}
        hidden = getattr(cls, "hidden", None)
        prompt = getattr(hidden, "prompt", None) if hidden is not None else None
        extra = getattr(hidden, "extra_pnginfo", None) if hidden is not None else None
        if prompt is not None:
            meta["prompt"] = json.dumps(prompt)
        if extra:
            for key, value in extra.items():
                meta[key] = json.dumps(value)
        return meta
