"""Regenerate the example workflows (UI format 0.4 + API format) from the node schemas.

    .venv/bin/python workflows/build_workflows.py

Widget order comes from the pack's own schemas (loaded through the test harness's ComfyUI
stand-in), so widgets_values can never drift from the node definitions.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
API_DIR = HERE / "api"
sys.path.insert(0, str(HERE.parent / "tests"))

import nodes_harness  # noqa: E402

PACK_PROPS = {"cnr_id": "comfyui-acestep15-studio", "ver": "0.1.0"}
CORE_PROPS = {"cnr_id": "comfy-core", "ver": "0.27.0"}
HF = "https://huggingface.co/Comfy-Org/ace_step_1.5_ComfyUI_files/resolve/main/split_files"
LM_MODEL = {"name": "qwen_1.7b_ace15.safetensors", "url": f"{HF}/text_encoders/qwen_1.7b_ace15.safetensors",
            "directory": "text_encoders"}
LOADER_MODELS = [
    {"name": "acestep_v1.5_turbo.safetensors", "url": f"{HF}/diffusion_models/acestep_v1.5_turbo.safetensors",
     "directory": "diffusion_models"},
    {"name": "ace_1.5_vae.safetensors", "url": f"{HF}/vae/ace_1.5_vae.safetensors", "directory": "vae"},
    {"name": "qwen_0.6b_ace15.safetensors", "url": f"{HF}/text_encoders/qwen_0.6b_ace15.safetensors",
     "directory": "text_encoders"},
    LM_MODEL,
]
# Core nodes used by the examples: socket inputs, outputs, widget names, extra UI-only widget values.
CORE = {
    "LoadAudio": ([], [("AUDIO", "AUDIO")], ["audio"], [None, ""]),
    "PreviewAudio": ([("audio", "AUDIO")], [], [], []),
    "SaveAudioMP3": ([("audio", "AUDIO")], [], ["filename_prefix", "quality"], []),
}
SOURCE_AUDIO = "ace15s_example_song.flac"
# Example adapters in models/loras (replace them with your own in the LoRA nodes).
LORA_FOLDER = "ace15s_example_lora"
LORA_FILE = "ace15s_example_lora_b.safetensors"

CAPTION = ("upbeat synth-pop with bright analog leads, punchy drums, warm bass and a catchy female vocal, "
           "summer night drive")
LYRICS = ("[Verse 1]\nCity lights are calling out my name\nWindows down, we never feel the same\n\n"
          "[Chorus]\nDrive all night, under neon skies\nYou and me, with the fire in our eyes\n\n[Outro]")
LOADER = {"dit": "acestep_v1.5_turbo.safetensors", "vae": "ace_1.5_vae.safetensors",
          "text_encoder": "qwen_0.6b_ace15.safetensors", "lm": "1.7B", "offload": "auto", "dtype": "auto"}
LOADER_NO_LM = {**LOADER, "lm": "none"}
LOADER_BASE = {**LOADER_NO_LM, "dit": "acestep_v1.5_base.safetensors"}
BASE_MODEL = {"name": "acestep_v1.5_base.safetensors", "url": f"{HF}/diffusion_models/acestep_v1.5_base.safetensors",
              "directory": "diffusion_models"}


def _schemas():
    nodes_harness.install_fake_host()
    import folder_paths

    folder_paths.reset("/nonexistent", "/nonexistent", "/nonexistent", "/nonexistent")
    _, node_map = nodes_harness.load_pack()
    return {k: c.define_schema() for k, c in node_map.items()}


def _spec(node_type, schemas):
    """(socket inputs [(name, type, optional)], outputs [(name, type)], widgets [input], extra values)."""
    if node_type in CORE:
        sockets, outs, widgets, extra = CORE[node_type]
        return [(n, t, False) for n, t in sockets], outs, [(w, None) for w in widgets], extra
    s = schemas[node_type]
    widgets = nodes_harness.widget_inputs(s)
    sockets = [(i.id, i.io_type, i.optional) for i in s.inputs if i not in widgets]
    return sockets, [(o.id, o.io_type) for o in s.outputs], [(i.id, i) for i in widgets], []


def build(name, title, description, nodes, links, schemas):
    """nodes: [(id, type, title, (x, y), widget values by name)]; links: [(src, out, dst, in)]."""
    by_id = {n[0]: n for n in nodes}
    ui_nodes, api = [], {}
    link_rows = []
    for link_id, (src, out_name, dst, in_name) in enumerate(links, start=1):
        out_names = [o[0] for o in _spec(by_id[src][1], schemas)[1]]
        in_names = [i[0] for i in _spec(by_id[dst][1], schemas)[0]]
        slot_out, slot_in = out_names.index(out_name), in_names.index(in_name)
        out_type = _spec(by_id[src][1], schemas)[1][slot_out][1]
        link_rows.append([link_id, src, slot_out, dst, slot_in, out_type])
    for order, (nid, node_type, node_title, pos, values) in enumerate(nodes):
        sockets, outs, widgets, extra = _spec(node_type, schemas)
        unknown = set(values) - {w for w, _ in widgets}
        if unknown:
            raise ValueError(f"{name}: {node_type} has no widgets {unknown}")
        widget_values, api_inputs = [], {}
        for wname, inp in widgets:
            value = values[wname] if wname in values else inp.default
            widget_values.append(value)
            if inp is not None and inp.options.get("control_after_generate"):
                widget_values.append("fixed")
            api_inputs[wname] = value
        widget_values += extra
        ui_inputs = []
        for slot, (sname, stype, _) in enumerate(sockets):
            link = next((r[0] for r in link_rows if r[3] == nid and r[4] == slot), None)
            ui_inputs.append({"name": sname, "type": stype, "link": link})
            if link is not None:
                row = next(r for r in link_rows if r[0] == link)
                api_inputs[sname] = [str(row[1]), row[2]]
        ui_outputs = [{"name": oname, "type": otype, "links": [r[0] for r in link_rows if r[1] == nid and r[2] == i],
                       "slot_index": i} for i, (oname, otype) in enumerate(outs)]
        props = dict(CORE_PROPS if node_type in CORE else PACK_PROPS)
        props["Node name for S&R"] = node_type
        if node_type == "ACE15S_LoadModel":
            models = [BASE_MODEL, *LOADER_MODELS[1:]] if values.get("dit") == BASE_MODEL["name"] else LOADER_MODELS
            # The LM file only where the graph uses one (ComfyUI asks the user to fetch every listed model).
            props["models"] = [m for m in models if m is not LM_MODEL or values.get("lm") != "none"]
        height = 60 + 26 * (len(sockets) + len(widgets)) + (160 if node_type.endswith(("Thinking", "Music")) else 0)
        ui_nodes.append({"id": nid, "type": node_type, "pos": list(pos), "size": [360, height], "flags": {},
                         "order": order, "mode": 0, "inputs": ui_inputs, "outputs": ui_outputs, "title": node_title,
                         "properties": props, "widgets_values": widget_values})
        api[str(nid)] = {"class_type": node_type, "inputs": api_inputs, "_meta": {"title": node_title}}
    workflow = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"acestep15-studio/{name}")), "revision": 0,
        "last_node_id": max(by_id), "last_link_id": len(link_rows), "nodes": ui_nodes, "links": link_rows,
        "groups": [], "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}, "frontendVersion": "1.39.14",
                  "info": {"name": title, "author": "ACE-Step 1.5 Studio", "description": description}},
        "version": 0.4,
    }
    (HERE / f"{name}.json").write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")
    # The API twins live one folder down: ComfyUI offers every workflows/*.json as a template to open in
    # the editor, and an API prompt is not a graph it can open.
    API_DIR.mkdir(exist_ok=True)
    (API_DIR / f"{name}.api.json").write_text(json.dumps(api, indent=2, ensure_ascii=False) + "\n")


def main():
    s = _schemas()
    save = {"filename_prefix": "audio/ACE-Step", "format": "mp3 320k"}
    t2m = {"caption": CAPTION, "lyrics": LYRICS, "duration": 30.0, "seed": 42}
    build("text2music_thinking", "ACE-Step text2music with LM thinking",
          "The LM plans metas and audio codes from caption + lyrics; Text2Music follows the plan.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER),
           (2, "ACE15S_LMThinking", "LM Thinking", (420, 0), {"caption": CAPTION, "lyrics": LYRICS,
                                                              "duration": 30.0, "lm_seed": 7}),
           (3, "ACE15S_Text2Music", "Text2Music", (840, 0), {"seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (1260, 0), save)],
          [(1, "model", 2, "model"), (1, "model", 3, "model"), (2, "plan", 3, "plan"), (3, "audio", 4, "audio")], s)
    build("simple_mode", "ACE-Step simple mode", "One line in, a song out: the LM writes caption, lyrics and metas.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER),
           (2, "ACE15S_SimpleMode", "Simple Mode", (420, 0),
            {"description": "a cheerful ukulele song about a summer road trip", "lm_seed": 3}),
           (3, "ACE15S_Text2Music", "Text2Music", (840, 0), {"seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (1260, 0), save)],
          [(1, "model", 2, "model"), (1, "model", 3, "model"), (2, "plan", 3, "plan"), (3, "audio", 4, "audio")], s)
    build("format_input_text2music", "ACE-Step format input -> text2music",
          "The LM rewrites rough caption and lyrics and fills the metas; Text2Music renders them.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER),
           (2, "ACE15S_FormatInput", "Format Input", (420, 0),
            {"caption": "synth pop, female vocal, night drive", "lyrics": LYRICS, "duration": 30.0, "lm_seed": 5}),
           (3, "ACE15S_Text2Music", "Text2Music", (840, 0), {"seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (1260, 0), save)],
          [(1, "model", 2, "model"), (1, "model", 3, "model"), (2, "plan", 3, "plan"), (3, "audio", 4, "audio")], s)
    build("continue", "ACE-Step continue", "Adds new music after the end of a song (LoadAudio from the input folder).",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER_NO_LM),
           (2, "LoadAudio", "Load Audio", (0, 360), {"audio": SOURCE_AUDIO}),
           (3, "ACE15S_Continue", "Continue", (420, 0), {"seconds": 10.0, "caption": CAPTION, "seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (840, 0), {**save, "filename_prefix": "audio/ACE-Step-continue"})],
          [(1, "model", 3, "model"), (2, "AUDIO", 3, "audio"), (3, "audio", 4, "audio")], s)
    build("repaint", "ACE-Step repaint", "Regenerates a time window of a song; the rest is kept.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER_NO_LM),
           (2, "LoadAudio", "Load Audio", (0, 360), {"audio": SOURCE_AUDIO}),
           (3, "ACE15S_Repaint", "Repaint", (420, 0), {"start": 1.0, "end": 3.0, "caption": CAPTION, "seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (840, 0), {**save, "filename_prefix": "audio/ACE-Step-repaint"})],
          [(1, "model", 3, "model"), (2, "AUDIO", 3, "audio"), (3, "audio", 4, "audio")], s)
    build("cover", "ACE-Step cover", "Re-performs a song in a new style, with an optional timbre reference.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER_NO_LM),
           (2, "LoadAudio", "Source song", (0, 360), {"audio": SOURCE_AUDIO}),
           (5, "LoadAudio", "Timbre reference", (0, 560), {"audio": SOURCE_AUDIO}),
           (3, "ACE15S_Cover", "Cover", (420, 0),
            {"strength": 0.8, "caption": "acoustic folk cover, fingerpicked guitar, soft male vocal", "seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (840, 0), {**save, "filename_prefix": "audio/ACE-Step-cover"})],
          [(1, "model", 3, "model"), (2, "AUDIO", 3, "audio"), (5, "AUDIO", 3, "reference"), (3, "audio", 4, "audio")],
          s)
    build("extract_and_complete", "ACE-Step extract a track, then complete it",
          "The base model takes the vocals out of a song, then writes a new band around them.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step (base)", (0, 0), LOADER_BASE),
           (2, "LoadAudio", "Load Audio", (0, 360), {"audio": SOURCE_AUDIO}),
           (3, "ACE15S_ExtractTrack", "Extract Track", (420, 0), {"track": "vocals", "caption": CAPTION, "seed": 42}),
           (4, "ACE15S_SaveAudio", "Save vocals", (840, 420), {**save, "filename_prefix": "audio/ACE-Step-vocals"}),
           (5, "ACE15S_CompleteTrack", "Complete Track", (840, 0),
            {"tracks": "drums, bass, guitar, keyboard",
             "caption": "indie rock band, live drums, warm bass, jangly guitars, piano", "seed": 7}),
           (6, "ACE15S_SaveAudio", "Save new mix", (1260, 0), {**save, "filename_prefix": "audio/ACE-Step-complete"})],
          [(1, "model", 3, "model"), (2, "AUDIO", 3, "audio"), (3, "audio", 4, "audio"), (1, "model", 5, "model"),
           (3, "audio", 5, "audio"), (5, "audio", 6, "audio")], s)
    build("add_track", "ACE-Step add a track",
          "The base model writes a new drum track that fits the song, inside a window; the rest is kept.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step (base)", (0, 0), LOADER_BASE),
           (2, "LoadAudio", "Load Audio", (0, 360), {"audio": SOURCE_AUDIO}),
           (3, "ACE15S_AddTrack", "Add Track", (420, 0),
            {"track": "drums", "start": 1.0, "end": 4.0, "caption": "tight funk drums", "seed": 42}),
           (4, "ACE15S_SaveAudio", "Save Audio", (840, 0), {**save, "filename_prefix": "audio/ACE-Step-add-track"})],
          [(1, "model", 3, "model"), (2, "AUDIO", 3, "audio"), (3, "audio", 4, "audio")], s)
    build("describe_and_rerender", "ACE-Step describe a song, then re-render it",
          "The LM listens to a song (its 5 Hz codes) and writes caption, lyrics and metas; Text2Music re-renders "
          "the song from that plan. Edit the caption output's text into Text2Music to restyle it.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER),
           (2, "LoadAudio", "Load Audio", (0, 360), {"audio": SOURCE_AUDIO}),
           (3, "ACE15S_DescribeAudio", "Describe Audio", (420, 0), {"lm_seed": 11}),
           (4, "ACE15S_Text2Music", "Text2Music", (840, 0), {"seed": 42}),
           (5, "ACE15S_SaveAudio", "Save Audio", (1260, 0), {**save, "filename_prefix": "audio/ACE-Step-rerender"})],
          [(1, "model", 3, "model"), (2, "AUDIO", 3, "audio"), (1, "model", 4, "model"), (3, "plan", 4, "plan"),
           (4, "audio", 5, "audio")], s)
    build("lora", "ACE-Step with LoRA adapters",
          "Two adapters from models/loras stacked on the model (an official PEFT folder at strength 1, a ComfyUI "
          "LoRA file at 0.8); the same seed without them runs beside it, so the graph holds both models.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER_NO_LM),
           (2, "ACE15S_LoRA", "ACE-Step LoRA (PEFT folder)", (420, 0), {"lora": LORA_FOLDER, "strength": 1.0}),
           (3, "ACE15S_LoRA", "ACE-Step LoRA (ComfyUI file)", (420, 160), {"lora": LORA_FILE, "strength": 0.8}),
           (4, "ACE15S_Text2Music", "Text2Music (with LoRAs)", (840, 0), t2m),
           (5, "ACE15S_SaveAudio", "Save Audio (with LoRAs)", (1260, 0), {**save, "filename_prefix": "audio/ACE-Step-lora"}),
           (6, "ACE15S_Text2Music", "Text2Music (base model)", (840, 560), t2m),
           (7, "ACE15S_SaveAudio", "Save Audio (base model)", (1260, 560), {**save, "filename_prefix": "audio/ACE-Step-base"})],
          [(1, "model", 2, "model"), (2, "model", 3, "model"), (3, "model", 4, "model"), (4, "audio", 5, "audio"),
           (1, "model", 6, "model"), (6, "audio", 7, "audio")], s)
    build("mix_native_nodes", "ACE-Step with native audio nodes",
          "Text2Music feeds ComfyUI's PreviewAudio; its output is repainted and saved with the core SaveAudioMP3.",
          [(1, "ACE15S_LoadModel", "Load ACE-Step", (0, 0), LOADER_NO_LM),
           (2, "ACE15S_Text2Music", "Text2Music", (420, 0), {**t2m, "duration": 20.0}),
           (3, "PreviewAudio", "Preview (core)", (840, 420), {}),
           (4, "ACE15S_Repaint", "Repaint", (840, 0), {"start": 5.0, "end": 10.0, "caption": CAPTION, "seed": 7}),
           (5, "SaveAudioMP3", "Save Audio MP3 (core)", (1260, 0), {"filename_prefix": "audio/ACE-Step-mix",
                                                                    "quality": "V0"})],
          [(1, "model", 2, "model"), (2, "audio", 3, "audio"), (1, "model", 4, "model"), (2, "audio", 4, "audio"),
           (4, "audio", 5, "audio")], s)


if __name__ == "__main__":
    main()
