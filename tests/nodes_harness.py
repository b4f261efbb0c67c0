"""Load the pack the way ComfyUI does and run API prompts through a small executor.

Works with the stand-in host of tests/fake_comfyui/ (always-on tests). The executor imitates
execution.validate_prompt / validate_inputs and the topological execution of output nodes'
ancestors; error types and messages follow ComfyUI's (docs/comfyui.md#workflows).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_DIR = Path(__file__).resolve().parent / "fake_comfyui"
FAKE_MODULES = ("comfy_api", "comfy", "folder_paths", "server")
PACK_MODULE_NAME = "custom_nodes_x_acestep15_studio"  # mangled, like ComfyUI's loader

CORE_NODE_IDS = {"SaveAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced", "PreviewAudio", "LoadAudio",
                 "VAEDecodeAudio", "VAEEncodeAudio", "TextEncodeAceStepAudio", "EmptyAceStepLatentAudio",
                 "TextEncodeAceStepAudio1.5", "EmptyAceStep1.5LatentAudio", "ReferenceTimbreAudio", "KSampler",
                 "CheckpointLoaderSimple", "UNETLoader", "VAELoader", "DualCLIPLoader", "PrimitiveNode"}


def install_fake_host() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in FAKE_MODULES:
            del sys.modules[name]
    if str(FAKE_DIR) not in sys.path:
        sys.path.insert(0, str(FAKE_DIR))


def load_pack(module_name: str = PACK_MODULE_NAME):
    """Import the repo root's __init__.py under a mangled name and return (module, {id: class})."""
    for name in list(sys.modules):
        if name == module_name or name.startswith(module_name + "."):
            del sys.modules[name]
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)

    async def nodes():
        ext = await module.comfy_entrypoint()
        await ext.on_load()
        return await ext.get_node_list()

    node_list = asyncio.run(nodes())
    mapping = {}
    for cls in node_list:
        schema = cls.define_schema()
        schema.validate()
        if schema.node_id in mapping:
            raise ValueError(f"duplicate node id {schema.node_id}")
        mapping[schema.node_id] = cls
    return module, mapping


# ------------------------------------------------------------------ schema helpers

def widget_inputs(schema) -> list:
    """Inputs that are widgets in the UI, in order (sockets-only types excluded)."""
    return [i for i in schema.inputs if getattr(i, "is_widget", False) and not i.options.get("force_input")]


def widget_value_count(schema) -> int:
    """Length of widgets_values: one per widget, +1 after each control_after_generate."""
    return sum(1 + (1 if i.options.get("control_after_generate") else 0) for i in widget_inputs(schema))


def output_types(schema) -> list[str]:
    return [o.io_type for o in schema.outputs]


# ------------------------------------------------------------------ core-node stand-ins

class _CoreLoadAudio:
    """ComfyUI LoadAudio: decode a file of the input folder to AUDIO [1, C, N]."""

    node_id = "LoadAudio"

    @staticmethod
    def schema():
        from comfy_api.latest import io
        return io.Schema(node_id="LoadAudio", inputs=[io.Combo.Input("audio", options=None)],
                         outputs=[io.Audio.Output()])

    @staticmethod
    def run(audio):
        import folder_paths
        from acestep_core.audio_io import load_audio

        path = Path(folder_paths.get_input_directory()) / audio
        wave = load_audio(str(path), target_sr=48000)
        return ({"waveform": wave.unsqueeze(0), "sample_rate": 48000},), None


class _CorePreviewAudio:
    node_id = "PreviewAudio"

    @staticmethod
    def schema():
        from comfy_api.latest import io
        return io.Schema(node_id="PreviewAudio", inputs=[io.Audio.Input("audio")], is_output_node=True)

    @staticmethod
    def run(audio):
        import folder_paths
        from acestep_core.audio_io import save_audio

        out = []
        for i, wave in enumerate(audio["waveform"]):
            name = f"ComfyUI_temp_preview_{i:05}.flac"
            save_audio(str(Path(folder_paths.get_temp_directory()) / name), wave, sample_rate=audio["sample_rate"],
                       format="flac")
            out.append({"filename": name, "subfolder": "", "type": "temp"})
        return (), {"audio": out}


class _CoreSaveAudioMP3:
    """ComfyUI SaveAudioMP3: one mp3 per batch item in the output folder, `{prefix}_{counter:05}.mp3`."""

    node_id = "SaveAudioMP3"

    @staticmethod
    def schema():
        from comfy_api.latest import io
        return io.Schema(node_id="SaveAudioMP3", inputs=[
            io.Audio.Input("audio"), io.String.Input("filename_prefix", default="audio/ComfyUI"),
            io.Combo.Input("quality", options=["V0", "128k", "320k"], default="V0")], is_output_node=True)

    @staticmethod
    def run(audio, filename_prefix, quality):
        import folder_paths
        from acestep_core.audio_io import save_audio

        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        out = []
        for wave in audio["waveform"]:
            file = f"{name}_{counter:05}.mp3"
            save_audio(str(Path(folder) / file), wave, sample_rate=audio["sample_rate"], format="mp3")
            out.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
        return (), {"audio": out}


def _core_primitive(node_id: str, kind: str):
    """ComfyUI PrimitiveFloat / PrimitiveInt / PrimitiveString: a widget value on a wire."""

    class _Primitive:
        @staticmethod
        def schema():
            from comfy_api.latest import io
            value_type = getattr(io, kind)
            return io.Schema(node_id=node_id, inputs=[value_type.Input("value")], outputs=[value_type.Output()])

        @staticmethod
        def run(value):
            return (value,), {}

    _Primitive.node_id = node_id
    return _Primitive


CORE_STANDINS = {c.node_id: c for c in (_CoreLoadAudio, _CorePreviewAudio, _CoreSaveAudioMP3,
                                        _core_primitive("PrimitiveFloat", "Float"),
                                        _core_primitive("PrimitiveInt", "Int"),
                                        _core_primitive("PrimitiveString", "String"))}


# ------------------------------------------------------------------ executor

class PromptError(Exception):
    def __init__(self, error: dict, node_errors: dict):
        super().__init__(error.get("message"))
        self.error = error
        self.node_errors = node_errors


def _schema_of(class_type, node_map):
    if class_type in node_map:
        return node_map[class_type].define_schema()
    return CORE_STANDINS[class_type].schema()


def _is_output(class_type, node_map) -> bool:
    return bool(_schema_of(class_type, node_map).is_output_node)


def _err(kind, message, details="", input_name=None):
    return {"type": kind, "message": message, "details": details,
            "extra_info": {"input_name": input_name} if input_name else {}}


def validate_prompt(prompt: dict, node_map: dict) -> list[str]:
    """Raise PromptError like POST /prompt's 400; return the output node ids."""
    for nid, node in prompt.items():
        ct = node.get("class_type")
        if ct not in node_map and ct not in CORE_STANDINS:
            raise PromptError(_err("invalid_prompt", f"Cannot execute because node {ct} does not exist.",
                                   f"Node ID '#{nid}'"), {})
    outputs = [nid for nid, node in prompt.items() if _is_output(node["class_type"], node_map)]
    if not outputs:
        raise PromptError(_err("prompt_no_outputs", "Prompt has no outputs"), {})
    node_errors = {}
    for nid, node in prompt.items():
        errors = _validate_node(nid, node, prompt, node_map)
        if errors:
            node_errors[nid] = {"errors": errors, "dependent_outputs": outputs, "class_type": node["class_type"]}
    if node_errors:
        raise PromptError(_err("prompt_outputs_failed_validation", "Prompt outputs failed validation"), node_errors)
    return outputs


def _validate_node(nid, node, prompt, node_map) -> list:
    schema = _schema_of(node["class_type"], node_map)
    values = node.get("inputs", {})
    errors = []
    cls = node_map.get(node["class_type"])
    custom = getattr(cls, "validate_inputs", None) if cls else None
    params = inspect.signature(custom).parameters.values() if custom else ()
    custom_names = {p.name for p in params if p.kind is not p.VAR_KEYWORD}
    # As ComfyUI: **kwargs turns its own checks off for every input, a named input skips them, and an
    # input fed by a link reaches validate_inputs as None.
    custom_takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
    checked = {}
    for inp in schema.inputs:
        if inp.id not in values:
            if not inp.optional:
                errors.append(_err("required_input_missing", "Required input is missing", inp.id, inp.id))
            continue
        value = values[inp.id]
        if isinstance(value, list):
            src_id, slot = value
            if str(src_id) not in prompt:
                errors.append(_err("exception_during_inner_validation", f"missing source node {src_id}", inp.id))
                continue
            src_types = output_types(_schema_of(prompt[str(src_id)]["class_type"], node_map))
            src_type = src_types[slot] if slot < len(src_types) else None
            if src_type != inp.io_type and not (inp.io_type == "COMBO" and src_type in ("COMBO", "STRING")) \
                    and "*" not in (src_type, inp.io_type):
                errors.append(_err("return_type_mismatch", "Return type mismatch between linked nodes",
                                   f"{inp.id}, received_type({src_type}) mismatch input_type({inp.io_type})", inp.id))
            checked[inp.id] = None
            continue
        try:
            value = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(inp.io_type, lambda v: v)(value)
        except (TypeError, ValueError):
            errors.append(_err("invalid_input_type", f"Failed to convert an input value to a {inp.io_type} value",
                               f"{inp.id}, {value}", inp.id))
            checked[inp.id] = value  # validate_inputs still gets the raw value
            continue
        checked[inp.id] = value
        if inp.id in custom_names or custom_takes_all:
            continue
        opts = inp.options
        if opts.get("min") is not None and value < opts["min"]:
            errors.append(_err("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}",
                               inp.id, inp.id))
        if opts.get("max") is not None and value > opts["max"]:
            errors.append(_err("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}",
                               inp.id, inp.id))
        if inp.io_type == "COMBO" and opts.get("options") is not None and value not in opts["options"]:
            errors.append(_err("value_not_in_list", "Value not in list", f"{inp.id}: '{value}' not in list", inp.id))
    if custom:
        # As ComfyUI: called whatever the other checks found, and its answer is filed under every input it
        # was given; an exception replaces the node's whole report.
        args = {k: v for k, v in checked.items() if k in custom_names or custom_takes_all}
        try:
            result = custom(**args)
        except Exception as exc:
            return [_err("exception_during_validation", "Exception when validating node", str(exc))]
        if result is not True:
            for name in args:
                errors.append(_err("custom_validation_failed", "Custom validation failed for node",
                                   f"{name}" + (f" - {result}" if result is not False else ""), name))
    return errors


def execute_prompt(prompt: dict, node_map: dict, extra_pnginfo=None) -> dict:
    """Validate and run; returns {"outputs": {id: ui}, "results": {id: tuple}}."""
    outputs = validate_prompt(prompt, node_map)
    needed, order = set(), []

    def visit(nid):
        if nid in needed:
            return
        needed.add(nid)
        for value in prompt[nid].get("inputs", {}).values():
            if isinstance(value, list):
                visit(str(value[0]))
        order.append(nid)

    for nid in outputs:
        visit(nid)
    results, ui_out = {}, {}
    for nid in order:
        node = prompt[nid]
        kwargs = {k: (results[str(v[0])][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        ct = node["class_type"]
        if ct in CORE_STANDINS:
            values, ui = CORE_STANDINS[ct].run(**kwargs)
        else:
            cls = node_map[ct]
            schema = cls.define_schema()
            names = {i.id for i in schema.inputs}
            kwargs = {k: v for k, v in kwargs.items() if k in names}
            cls.hidden = SimpleNamespace(prompt=prompt, extra_pnginfo=extra_pnginfo, unique_id=nid)
            out = cls.execute(**kwargs)
            values, ui = tuple(out.args), out.ui
        results[nid] = values
        if ui:
            ui_out[nid] = ui
    return {"outputs": ui_out, "results": results}
