"""Every shipped workflow is well-formed, matches the schemas, and its API form runs on the tiny models."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import av
import torch
import pytest

import nodes_harness as h
from nodes_models import SHORTENED_SECONDS, node_env, shorten_for_tiny

WORKFLOWS = sorted((h.REPO_ROOT / "workflows").glob("*.json"))
NAMES = [p.stem for p in WORKFLOWS]
CORE_WIDGET_COUNTS = {"LoadAudio": 3, "PreviewAudio": 0, "SaveAudioMP3": 2}
# Format Input and Simple Mode let the LM write free text (lyrics, caption) after its CoT. The random
# tiny LM never emits an end token, so it runs to the planner's token budget: max_duration * 5 + 500.
# Here the budget is the planner's smallest (10 s -> 550 tokens); the real-ComfyUI run
# (test_comfyui_server.py) runs the same workflows with the full default budget.
TINY_LM_MAX_DURATION = 10
FREE_RUNNING_LM_CALLS = ("format_input", "create_sample", "understand")


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_dir, comfy_tiny_dir):
    node_map, dirs, _ = node_env(tmp_path_factory.mktemp("comfy"), tiny_dir, comfy_tiny_dir)
    return node_map, dirs


def test_all_use_cases_shipped():
    assert set(NAMES) == {"text2music_thinking", "simple_mode", "format_input_text2music", "continue", "repaint",
                          "cover", "mix_native_nodes", "extract_and_complete", "add_track",
                          "describe_and_rerender", "lora"}
    for p in WORKFLOWS:
        assert (p.parent / "api" / f"{p.stem}.api.json").is_file()
    # ComfyUI offers every workflows/*.json as a template to open in the editor: graphs only there.
    for p in WORKFLOWS:
        assert "nodes" in json.loads(p.read_text()), p.name


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_well_formed(env, name):
    node_map, _ = env
    wf = json.loads((h.REPO_ROOT / "workflows" / f"{name}.json").read_text())
    assert wf["version"] == 0.4 and {"id", "revision", "nodes", "links", "groups", "config", "extra"} <= set(wf)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for link_id, src, src_slot, dst, dst_slot, ltype in wf["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == ltype and link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    for node in wf["nodes"]:
        if node["type"] in node_map:
            schema = node_map[node["type"]].define_schema()
            assert len(node["widgets_values"]) == h.widget_value_count(schema), node["type"]
            assert node["properties"]["Node name for S&R"] == node["type"]
        else:
            assert len(node["widgets_values"]) == CORE_WIDGET_COUNTS[node["type"]]
    loader = next(n for n in wf["nodes"] if n["type"] == "ACE15S_LoadModel")
    assert {m["directory"] for m in loader["properties"]["models"]} == {"diffusion_models", "vae", "text_encoders"}
    assert all(m["url"].startswith("https://huggingface.co/") for m in loader["properties"]["models"])


@pytest.mark.parametrize("name", NAMES)
def test_api_form_matches_ui_form(env, name):
    """API prompt = the UI graph converted by the frontend's rules (widgets → literals, links → [id, slot])."""
    node_map, _ = env
    wf = json.loads((h.REPO_ROOT / "workflows" / f"{name}.json").read_text())
    api = json.loads((h.REPO_ROOT / "workflows" / "api" / f"{name}.api.json").read_text())
    assert set(api) == {str(n["id"]) for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}
    for node in wf["nodes"]:
        entry = api[str(node["id"])]
        assert entry["class_type"] == node["type"]
        for inp in node["inputs"]:
            if inp["link"] is not None:
                link = links[inp["link"]]
                assert entry["inputs"][inp["name"]] == [str(link[1]), link[2]]
        if node["type"] in node_map:
            values = list(node["widgets_values"])
            for inp in h.widget_inputs(node_map[node["type"]].define_schema()):
                assert entry["inputs"][inp.id] == values.pop(0)
                if inp.options.get("control_after_generate"):
                    assert values.pop(0) in ("fixed", "randomize", "increment", "decrement")


@pytest.fixture
def short_lm_budget(monkeypatch):
    """Cap the free-running LM calls of the pack's own (mangled) planner class."""
    planner_cls = importlib.import_module(f"{h.PACK_MODULE_NAME}.acestep_core.lm.planner").LMPlanner
    for name in FREE_RUNNING_LM_CALLS:
        original = getattr(planner_cls, name)

        def capped(self, *args, _original=original, **kwargs):
            kwargs.setdefault("max_duration", TINY_LM_MAX_DURATION)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(planner_cls, name, capped)


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_executes_on_tiny_models(env, short_lm_budget, name):
    node_map, dirs = env
    api = json.loads((h.REPO_ROOT / "workflows" / "api" / f"{name}.api.json").read_text())
    prompt = shorten_for_tiny(api)
    result = h.execute_prompt(prompt, node_map, extra_pnginfo={"workflow": {"name": name}})
    saved = [f for ui in result["outputs"].values() for f in ui.get("audio", [])]
    assert saved
    for f in saved:
        base = dirs["output"] if f["type"] == "output" else dirs["temp"]
        with av.open(str(Path(base) / f["subfolder"] / f["filename"])) as c:
            stream = c.streams.audio[0]
            assert stream.channels == 2
            seconds = sum(fr.samples for fr in c.decode(audio=0)) / stream.sample_rate
        expected = SHORTENED_SECONDS[name]
        assert seconds > 1.0 if expected is None else abs(seconds - expected) < 0.15, (f, seconds, expected)
    audio_nodes = [nid for nid, n in prompt.items() if n["class_type"].startswith("ACE15S_") and
                   n["class_type"] not in ("ACE15S_LoadModel", "ACE15S_SaveAudio")]
    for nid in audio_nodes:
        values = result["results"][nid]
        if prompt[nid]["class_type"] == "ACE15S_Text2Music":
            audio, latent = values
            assert latent["samples"].shape[1] == 64 and latent["type"] == "audio"
            assert audio["waveform"].shape[-1] == latent["samples"].shape[-1] * 1920
        if prompt[nid]["class_type"] == "ACE15S_FormatInput":
            plan = values[0]  # the metas given on the node are kept; Format Input writes no codes
            assert (plan.bpm, plan.keyscale, plan.timesignature, plan.duration) == (120, "C major", "4", 10.0)
            assert plan.audio_codes == [] and values[1:4] == (plan.caption, plan.lyrics, 10)
        if prompt[nid]["class_type"] == "ACE15S_DescribeAudio":
            plan = values[0]  # the song's own codes: 5.2 s = 130 latent frames = 26 codes
            assert len(plan.audio_codes) == 26 and all(0 <= c < 64000 for c in plan.audio_codes)
            assert plan.lm_seed == prompt[nid]["inputs"]["lm_seed"] and values[8] == plan.audio_code_string()
        if prompt[nid]["class_type"] == "ACE15S_SimpleMode":
            plan = values[0]
            assert plan.audio_codes == [] and plan.cot_text.startswith("<think>")
            assert plan.lm_seed == prompt[nid]["inputs"]["lm_seed"]
        if prompt[nid]["class_type"] == "ACE15S_Continue":
            src = 249600 / 48000
            assert abs(values[0]["waveform"].shape[-1] / 48000 - (src + prompt[nid]["inputs"]["seconds"])) < 0.1


def test_bad_prompt_rejected_like_comfyui(env):
    node_map, _ = env
    api = json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    api["3"]["inputs"]["bpm"] = 1  # not an input of Repaint: ignored, as by ComfyUI
    api["3"]["inputs"]["steps"] = 1000
    with pytest.raises(h.PromptError) as info:
        h.validate_prompt(api, node_map)
    assert info.value.node_errors["3"]["errors"][0]["type"] == "value_bigger_than_max"


def test_track_nodes_refuse_turbo_and_unknown_tracks(env):
    """The track workflows with the turbo file picked: a clear error naming the fix; a bad track list
    is caught by validation before anything runs."""
    node_map, _ = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "extract_and_complete.api.json").read_text()))
    api["1"]["inputs"]["dit"] = "acestep_v1.5_turbo.safetensors"
    input_error = importlib.import_module(f"{h.PACK_MODULE_NAME}.acestep_core.errors").InputError
    with pytest.raises(input_error, match="needs the ACE-Step 1.5 base model.*acestep_v1.5_base.safetensors"):
        h.execute_prompt(api, node_map)
    complete = node_map["ACE15S_CompleteTrack"]
    assert complete.validate_inputs(tracks="drums, Backing Vocals") is True
    assert "unknown track 'cowbell'" in complete.validate_inputs(tracks="drums, cowbell")


def test_cover_prompts_saved_before_noise_strength_still_run(env):
    """noise_strength was appended to Cover as an optional input: API prompts without it validate and run."""
    node_map, _ = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "cover.api.json").read_text()))
    cover = next(n for n in api.values() if n["class_type"] == "ACE15S_Cover")
    assert cover["inputs"].pop("noise_strength") == 0.0
    result = h.execute_prompt(api, node_map)
    assert result["outputs"]


def _errors(api, node_map, nid):
    with pytest.raises(h.PromptError) as info:
        h.validate_prompt(api, node_map)
    return [(e["type"], e["details"]) for e in info.value.node_errors[nid]["errors"]]


def _by_input(api, node_map, nid):
    with pytest.raises(h.PromptError) as info:
        h.validate_prompt(api, node_map)
    return [(e["extra_info"].get("input_name"), e["type"], e["details"]) for e in info.value.node_errors[nid]["errors"]]


def test_pack_validation_keeps_comfyuis_own_checks(env):
    """A node's validate_inputs turns ComfyUI's range and list checks off for the inputs it names (for all
    of them with **kwargs): the other inputs keep them, and the named ones are checked by the node."""
    node_map, _ = env
    repaint = json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    for name, value, kind in (("steps", 0, "value_smaller_than_min"), ("strength", 5.0, "value_bigger_than_max"),
                              ("start", -2.0, "value_smaller_than_min"), ("end", 700.0, "value_bigger_than_max")):
        api = json.loads(json.dumps(repaint))
        api["3"]["inputs"][name] = value
        assert [k for k, _ in _errors(api, node_map, "3")] == [kind]
    api = json.loads(json.dumps(repaint))
    api["4"]["inputs"]["format"] = "wav"
    assert [k for k, _ in _errors(api, node_map, "4")] == ["value_not_in_list"]
    t2m = json.loads((h.REPO_ROOT / "workflows" / "api" / "text2music_thinking.api.json").read_text())
    for nid in ("2", "3"):  # LM Thinking and Text2Music
        api = json.loads(json.dumps(t2m))
        api[nid]["inputs"]["bpm"] = 10
        (kind, details), = _errors(api, node_map, nid)
        assert kind == "custom_validation_failed" and "bpm must be 0 (auto) or from 30 to 300, got 10" in details


def test_each_validation_message_lands_on_its_own_input(env):
    """ComfyUI files a validate_inputs answer under every input that function names: a wrong value is
    reported once, under the input that is wrong, and a value of the wrong type by ComfyUI's own check
    (validate_inputs must not crash on it)."""
    node_map, _ = env
    t2m = json.loads((h.REPO_ROOT / "workflows" / "api" / "text2music_thinking.api.json").read_text())
    repaint = json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text())
    cases = [(t2m, "3", "duration", 5000, "value_bigger_than_max"), (t2m, "3", "bpm", 10, "custom_validation_failed"),
             (t2m, "2", "duration", 5000, "value_bigger_than_max"), (t2m, "2", "bpm", 400, "custom_validation_failed"),
             (t2m, "3", "duration", "abc", "invalid_input_type"), (t2m, "3", "bpm", "abc", "invalid_input_type"),
             (t2m, "2", "bpm", "abc", "invalid_input_type"), (repaint, "3", "start", "x", "invalid_input_type"),
             (repaint, "3", "start", -2.0, "value_smaller_than_min"), (repaint, "3", "end", 601.0, "value_bigger_than_max")]
    for base, nid, name, value, kind in cases:
        api = json.loads(json.dumps(base))
        api[nid]["inputs"][name] = value
        assert [(n, k) for n, k, _ in _by_input(api, node_map, nid)] == [(name, kind)], (nid, name, value)


def test_window_order_is_checked_when_the_node_runs(env):
    """end against start spans two inputs: a validate_inputs naming both would file it (and every range
    message) under both, so the node checks it when it runs, before any model work."""
    node_map, _ = env
    input_error = importlib.import_module(f"{h.PACK_MODULE_NAME}.acestep_core.errors").InputError
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    api["3"]["inputs"]["end"] = api["3"]["inputs"]["start"]
    h.validate_prompt(api, node_map)
    with pytest.raises(input_error, match=r"Repaint: end \(1s\) must be at least 0.5s after start \(1s\)"):
        h.execute_prompt(api, node_map)
    add = json.loads((h.REPO_ROOT / "workflows" / "api" / "add_track.api.json").read_text())
    add["3"]["inputs"]["end"] = 0.5
    h.validate_prompt(add, node_map)
    with pytest.raises(input_error, match=r"Add Track: end \(0.5s\) must be after start \(1s\)"):
        h.execute_prompt(add, node_map)


def test_no_pack_node_validates_with_kwargs(env):
    """**kwargs in validate_inputs would switch ComfyUI's checks off for every input; linked inputs
    arrive as None and must pass (the node checks them when it runs)."""
    node_map, _ = env
    import inspect

    checked = 0
    for node_id, cls in node_map.items():
        if "validate_inputs" not in vars(cls):
            continue
        params = inspect.signature(cls.validate_inputs).parameters.values()
        assert all(p.kind is not p.VAR_KEYWORD for p in params), node_id
        assert cls.validate_inputs(**{p.name: None for p in params}) is True, node_id
        assert len(params) == 1, node_id  # its answer is filed under every input it names
        checked += 1
    assert checked >= 5


def _primitive(api, nid, kind, value):
    api[nid] = {"class_type": f"Primitive{kind}", "inputs": {"value": value}}
    return [nid, 0]


def test_linked_widgets_validate_and_run(env):
    """start / end / tracks driven by another node (a widget converted to an input): validation lets them
    through, and the node checks the values it receives."""
    node_map, _ = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    api["3"]["inputs"]["start"] = _primitive(api, "90", "Float", 1.0)
    api["3"]["inputs"]["end"] = _primitive(api, "91", "Float", 3.0)
    result = h.execute_prompt(api, node_map)
    (audio,) = result["results"]["3"]
    assert abs(audio["waveform"].shape[-1] / 48000 - 249600 / 48000) < 0.01
    input_error = importlib.import_module(f"{h.PACK_MODULE_NAME}.acestep_core.errors").InputError
    api["90"]["inputs"]["value"] = -2.0
    with pytest.raises(input_error, match="Repaint: start must be from 0 to 600, got -2"):
        h.execute_prompt(api, node_map)
    api["90"]["inputs"]["value"], api["91"]["inputs"]["value"] = 2.0, 2.2
    with pytest.raises(input_error, match=r"end \(2.2s\) must be at least 0.5s after start \(2s\)"):
        h.execute_prompt(api, node_map)

    tracks = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "extract_and_complete.api.json").read_text()))
    tracks["5"]["inputs"]["tracks"] = _primitive(tracks, "90", "String", "drums, cowbell")
    h.validate_prompt(tracks, node_map)
    with pytest.raises(input_error, match="unknown track 'cowbell'"):
        h.execute_prompt(tracks, node_map)
    add = json.loads((h.REPO_ROOT / "workflows" / "api" / "add_track.api.json").read_text())
    add["3"]["inputs"]["end"] = _primitive(add, "90", "Float", 0.5)
    h.validate_prompt(add, node_map)
    with pytest.raises(input_error, match=r"Add Track: end \(0.5s\) must be after start \(1s\)"):
        h.execute_prompt(add, node_map)


def test_continue_refuses_an_overlap_as_long_as_the_source(env):
    """overlap >= the source would put the window at 0, which the engine reads as 'from the end': the
    node says so instead of silently regenerating nothing."""
    node_map, _ = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "continue.api.json").read_text()))
    input_error = importlib.import_module(f"{h.PACK_MODULE_NAME}.acestep_core.errors").InputError
    api["3"]["inputs"]["overlap"] = 5.2
    with pytest.raises(input_error, match=r"overlap \(5.2s\) must be shorter than the source audio \(5.20s\)"):
        h.execute_prompt(api, node_map)


def test_a_turbo_model_logs_the_steps_it_did_not_run(env, caplog):
    """The turbo DiT always runs 8 steps: a node asking for 30 gets a warning in ComfyUI's log."""
    node_map, _ = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    api["3"]["inputs"]["steps"] = 30
    with caplog.at_level("WARNING"):
        h.execute_prompt(api, node_map)
    assert "ACE-Step: the turbo DiT runs its fixed 8-step schedule" in caplog.text
    assert "inference_steps 30 was not used" in caplog.text


def test_save_audio_writes_aac(env):
    node_map, dirs = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    api["4"]["inputs"]["format"] = "aac 128k"
    result = h.execute_prompt(api, node_map)
    (saved,) = result["outputs"]["4"]["audio"]
    path = Path(dirs["output"]) / saved["subfolder"] / saved["filename"]
    assert path.suffix == ".aac"
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.name == "aac" and c.streams.audio[0].channels == 2


def test_adg_on_a_base_model_and_prompts_saved_before_it(env, caplog):
    """adg was appended to the generation nodes as an optional input: an API prompt without it still
    validates and runs, and adg=true reaches the engine (a base model guides with ADG, turbo says no)."""
    node_map, _ = env
    api = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "extract_and_complete.api.json").read_text()))
    extract = next(nid for nid, n in api.items() if n["class_type"] == "ACE15S_ExtractTrack")
    assert api[extract]["inputs"].pop("adg") is False
    api[extract]["inputs"]["guidance"] = 3.0
    (apg_audio,) = h.execute_prompt(api, node_map)["results"][extract]
    api[extract]["inputs"]["adg"] = True
    (adg_audio,) = h.execute_prompt(api, node_map)["results"][extract]
    assert apg_audio["acestep"]["params"]["use_adg"] is False and adg_audio["acestep"]["params"]["use_adg"] is True
    assert not torch.equal(apg_audio["waveform"], adg_audio["waveform"])
    turbo = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / "repaint.api.json").read_text()))
    turbo["3"]["inputs"]["adg"] = True
    with caplog.at_level("WARNING"):
        h.execute_prompt(turbo, node_map)
    assert "use_adg was not used" in caplog.text


def test_what_a_run_changed_is_shown_on_the_node(env, monkeypatch):
    """A batch or duration held to what the model can do, and a base model run at turbo's 8 steps, are
    shown on the node (ComfyUI's progress text) and returned as its UI text, not only logged."""
    import dataclasses
    from types import SimpleNamespace

    import server

    node_map, _ = env
    loader = importlib.import_module(f"{h.PACK_MODULE_NAME}.nodes.loader_node")
    recorder = server.TextRecorder()
    monkeypatch.setattr(server.PromptServer, "instance", recorder)
    t2m = node_map["ACE15S_Text2Music"]
    monkeypatch.setattr(t2m, "hidden", SimpleNamespace(unique_id="7", prompt=None, extra_pnginfo=None))
    args = dict(caption="x", lyrics="", bpm=0, keyscale="auto", timesignature="auto", language="auto", seed=5,
                shift=3.0, guidance=7.0)

    turbo = loader.load_model("acestep-v15-turbo", "auto", "auto", "none", "auto", "auto")
    turbo.engine.decision = dataclasses.replace(turbo.engine.decision, max_batch=1)  # a machine that holds one song
    out = t2m.execute(model=turbo, duration=4.0, steps=8, batch_size=2, **args)
    (report,) = out.ui["text"]
    assert out.args[0]["waveform"].shape[0] == 1
    assert report.startswith("1 song of 5.12 s, seed 5")
    assert "Batch size 2 is more than" in report and "limit of 1; generating 1 instead" in report
    assert "4 s asked for; the DiT's shortest output is 5.12 s" in report
    assert recorder.texts[-1] == ("7", report)

    base = loader.load_model("acestep_v1.5_base.safetensors", "auto", "auto", "none", "auto", "auto")
    few = t2m.execute(model=base, duration=6.0, steps=8, batch_size=1, **args).ui["text"][0]
    assert "inference_steps 8 is few for a base / sft DiT, which is made for 30-50 steps" in few
    enough = t2m.execute(model=base, duration=6.0, steps=30, batch_size=1, **args).ui["text"][0]
    assert enough == "1 song of 6.00 s, seed 5"
