"""One engine, three doors: the same request gives the same song from the CLI, the REST API and ComfyUI.

Each case is driven through `python -m acestep_core generate` (in-process), a live REST server
(`/release_task`) and the node pack (Load ACE-Step -> the task's node), on the same tiny official
folders in float32. Every door ends in `ACEStepPipeline.generate`; the test records what each call
returned and asserts the final latents are identical and the resolved parameters (what the CLI writes
beside the file, what REST returns as `params`, what the save node writes into the tags) agree field
by field.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import aiohttp
import pytest
import torch

import nodes_harness as h
from nodes_models import node_env
from server_harness import LiveServer, release, tiny_provider, wait_done

CAPTION = "lofi piano with soft drums"
LYRICS = "[Instrumental]"
METAS = dict(bpm=90, key_scale="C major", time_signature="4", vocal_language="en")
DIT = dict(seed=7, inference_steps=4, shift=3.0, guidance_scale=7.0, batch_size=1)
LM = dict(lm_temperature=0.0, lm_cfg_scale=2.0, lm_top_k=0, lm_top_p=0.9, lm_seed=5,
          lm_negative_prompt="NO USER INPUT")
# How each door names the source (a path for the CLI and REST, a decoded tensor for the nodes) and the
# DiT (the name the user picked: the nodes see the same folder as models/acestep/acestep-v15-turbo).
# Labels, not the song: the identical latents prove the same weights and inputs were used.
DOOR_SPECIFIC = {"src_audio", "reference_audio", "src_latents", "dit_model"}
# Each DiT as the CLI names it (a folder of the tiny fixtures) and as the nodes do (the same folder
# under models/acestep/).
DOORS = {"turbo": dict(cli="acestep-v15-turbo-tiny", node="acestep-v15-turbo"),
         "base": dict(cli="acestep-v15-base-tiny", node="acestep-v15-base")}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_dir, comfy_tiny_dir):
    root = tmp_path_factory.mktemp("doors")
    node_map, dirs, source = node_env(root, tiny_dir, comfy_tiny_dir, "source.flac")
    # The base model as an official folder (its ComfyUI repack has ComfyUI's silence latent, not the
    # tiny folder's random one, so it makes another song).
    (root / "models" / "acestep" / "acestep-v15-base").symlink_to(tiny_dir / "acestep-v15-base-tiny")
    return {"node_map": node_map, "dirs": dirs, "source": source, "root": root}


def live_server(provider, results: Path):
    from acestep_core.server import Runtime, ServerConfig

    return LiveServer(Runtime(provider, ServerConfig.from_env(results, env={})))


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    with live_server(tiny_provider(tiny_dir, use_lm=True), tmp_path_factory.mktemp("api") / "results") as live:
        yield live


@pytest.fixture(scope="module")
def base_server(tiny_dir, tmp_path_factory):
    """A server whose DiT is the base model (the tiny official base folder)."""
    provider = tiny_provider(tiny_dir, dit=DOORS["base"]["cli"])
    with live_server(provider, tmp_path_factory.mktemp("api-base") / "results") as live:
        yield live


@pytest.fixture
def recorded(monkeypatch, env):
    """Every ACEStepPipeline.generate call's (latents, params), in the engine and in the pack's own copy."""
    calls: list[tuple[torch.Tensor, dict]] = []
    for module in ("acestep_core.pipeline", f"{h.PACK_MODULE_NAME}.acestep_core.pipeline"):
        cls = importlib.import_module(module).ACEStepPipeline
        original = cls.generate

        def generate(self, *args, _original=original, **kwargs):
            result = _original(self, *args, **kwargs)
            calls.append((result.latents.clone(), json.loads(json.dumps(result.params, default=str))))
            return result

        monkeypatch.setattr(cls, "generate", generate)
    return calls


def _flags(fields: dict) -> list[str]:
    out = []
    for name, value in fields.items():
        if isinstance(value, bool):
            out += [f"--{name.replace('_', '-')}", "true" if value else "false"]
        else:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def run_cli(tiny_dir: Path, out: Path, fields: dict, thinking: bool, dit: str) -> dict:
    from acestep_core.cli import main

    argv = ["generate", "--dit", str(tiny_dir / dit), "--vae", str(tiny_dir / "vae-tiny"),
            "--text-encoder", str(tiny_dir / "Qwen3-Embedding-tiny"), "--device", "cpu", "--dtype", "float32",
            "--out", str(out), "--audio-format", "wav", "--name", "song", *_flags(fields)]
    if thinking:
        argv += ["--thinking", "--lm-model", str(tiny_dir / "acestep-5Hz-lm-tiny")]
    assert main(argv) == 0
    (written,) = sorted(out.glob("song_*.json"))
    return json.loads(written.read_text())


def run_rest(server, fields: dict) -> dict:
    body = dict(fields, audio_format="wav")
    if "caption" in body:
        body["prompt"] = body.pop("caption")
    source = body.pop("src_audio", None)
    if source is None:
        reply = release(server.url, body)
    else:  # as a client sends a file: a multipart upload
        form = aiohttp.FormData()
        for key, value in body.items():
            form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
        form.add_field("src_audio", Path(source).read_bytes(), filename="source.flac", content_type="audio/flac")
        reply = release(server.url, data=form)
    assert reply.status == 200, reply.body
    item = wait_done(server.url, reply.data["task_id"])
    assert item["status"] == 1, item
    (result,) = json.loads(item["result"])
    # Each item carries the resolved parameters beside the official fields.
    return result["params"]


def run_nodes(env, task_node: dict, lm_node: dict | None, dit: str) -> dict:
    prompt = {
        "1": {"class_type": "ACE15S_LoadModel", "inputs": dict(dit=dit, vae="auto", text_encoder="auto",
                                                               lm="1.7B" if lm_node else "none", offload="auto",
                                                               dtype="fp32")},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": env["source"].name}},
        "3": dict(task_node, inputs=dict(task_node["inputs"], model=["1", 0])),
        "4": {"class_type": "PreviewAudio", "inputs": {"audio": ["3", 0]}},
    }
    if lm_node is not None:
        prompt["5"] = dict(lm_node, inputs=dict(lm_node["inputs"], model=["1", 0]))
        prompt["3"]["inputs"]["plan"] = ["5", 0]
    if any(v == ["2", 0] for v in prompt["3"]["inputs"].values()) is False:
        del prompt["2"]
    result = h.execute_prompt(prompt, env["node_map"])
    return result["results"]["3"][0]["acestep"]["params"]


def node_dit(**extra) -> dict:
    return dict(seed=DIT["seed"], steps=DIT["inference_steps"], shift=DIT["shift"], guidance=DIT["guidance_scale"],
                **extra)


def node_metas(**override) -> dict:
    values = dict(duration=10.0, bpm=METAS["bpm"], keyscale=METAS["key_scale"], timesignature=METAS["time_signature"],
                  language=METAS["vocal_language"])
    values.update(override)
    return values


def _case(name: str, env) -> tuple[dict, dict, dict | None, bool]:
    """(the request for CLI and REST, the node, the LM node, thinking) of one case."""
    src = str(env["source"])
    text = dict(caption=CAPTION, lyrics=LYRICS)
    if name == "text2music":
        fields = dict(text, **METAS, audio_duration=10, **DIT)
        node = {"class_type": "ACE15S_Text2Music", "inputs": dict(text, **node_metas(), **node_dit(), batch_size=1)}
        return fields, node, None, False
    if name == "adg_base":
        # The base model with CFG under angle-based guidance instead of APG.
        fields = dict(text, **METAS, audio_duration=10, **DIT, use_adg=True)
        node = {"class_type": "ACE15S_Text2Music",
                "inputs": dict(text, **node_metas(), **node_dit(), batch_size=1, adg=True)}
        return fields, node, None, False
    if name == "thinking":
        # All metas given, so the random tiny LM only writes codes; the LM runs greedy (temperature 0).
        fields = dict(text, **METAS, audio_duration=10, **DIT, **LM, use_cot_caption=False, use_cot_language=False)
        lm_inputs = dict(text, **node_metas(), lm_temperature=0.0, lm_cfg_scale=2.0, lm_top_k=0, lm_top_p=0.9,
                         lm_negative_prompt="NO USER INPUT", lm_seed=5, use_cot_caption=False, generate_codes=True)
        node = {"class_type": "ACE15S_Text2Music",
                "inputs": dict(text, **node_metas(duration=0.0, bpm=0, keyscale="auto", timesignature="auto",
                                                  language="auto"), **node_dit(), batch_size=1)}
        return fields, node, {"class_type": "ACE15S_LMThinking", "inputs": lm_inputs}, True
    # The audio nodes have no metas: the engine's automatic values, sent explicitly to REST (whose own
    # default vocal_language is "en").
    edit = dict(text, vocal_language="unknown", src_audio=src, **DIT)
    if name == "repaint":
        fields = dict(edit, task_type="repaint", repainting_start=1.0, repainting_end=3.0, repaint_strength=0.5)
        node = {"class_type": "ACE15S_Repaint",
                "inputs": dict(text, audio=["2", 0], start=1.0, end=3.0, strength=0.5, **node_dit())}
        return fields, node, None, False
    if name == "continuation":
        fields = dict(edit, task_type="continuation", repainting_start=4.2, continuation_seconds=2.0)
        node = {"class_type": "ACE15S_Continue",
                "inputs": dict(text, audio=["2", 0], seconds=2.0, overlap=1.0, **node_dit())}
        return fields, node, None, False
    if name == "cover":
        fields = dict(edit, task_type="cover", audio_cover_strength=1.0)
        node = {"class_type": "ACE15S_Cover", "inputs": dict(text, audio=["2", 0], strength=1.0, **node_dit())}
        return fields, node, None, False
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["text2music", "thinking", "repaint", "continuation", "cover", "adg_base"])
def test_same_song_through_every_door(name, env, request, recorded, tiny_dir, tmp_path):
    fields, node, lm_node, thinking = _case(name, env)
    model = "base" if name.endswith("_base") else "turbo"
    server = request.getfixturevalue("base_server" if model == "base" else "server")
    doors = DOORS[model]
    if name == "continuation":
        # Continue regenerates `overlap` seconds before the end: the same start for the other doors.
        from acestep_core.sources import source_waveform

        seconds = source_waveform(str(env["source"]), "src").shape[-1] / 48000
        fields["repainting_start"] = seconds - 1.0
    cli_json = run_cli(tiny_dir, tmp_path / "cli", fields, thinking, dit=doors["cli"])
    rest_params = run_rest(server, dict(fields, thinking=thinking))
    node_params = run_nodes(env, node, lm_node, dit=doors["node"])

    assert len(recorded) == 3, [p.get("task") for _, p in recorded]
    (cli_latents, cli_params), (rest_latents, rest_record), (node_latents, node_record) = recorded
    # What each door wrote (the CLI's JSON, REST's params, the save node's tags) is what the engine resolved.
    for written, resolved in ((cli_json, cli_params), (rest_params, rest_record), (node_params, node_record)):
        mismatched = {k: (written.get(k), v) for k, v in resolved.items()
                      if k not in DOOR_SPECIFIC and written.get(k) != v}
        assert not mismatched, mismatched
    assert torch.equal(cli_latents, rest_latents), (cli_latents - rest_latents).abs().max()
    assert torch.equal(cli_latents, node_latents), (cli_latents - node_latents).abs().max()
    keys = (set(cli_params) | set(rest_record) | set(node_record)) - DOOR_SPECIFIC
    differ = {k: (cli_params.get(k), rest_record.get(k), node_record.get(k)) for k in sorted(keys)
              if not cli_params.get(k) == rest_record.get(k) == node_record.get(k)}
    assert not differ, differ
