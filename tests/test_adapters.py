"""LoRA / LoKr adapters on the DiT decoder: the official goldens from both LoRA formats, LoKr against
the LyCORIS library's own application, stacking, exact unload and every refusal."""

import json
import shutil

import pytest
import torch

from adapter_helpers import LOKR_CONFIG, library_lokr, write_lokr
from conftest import load_golden
from engine_helpers import request_for_case

from acestep_core.adapters import ScaledAdapter, decoder_adapters, load_adapter
from acestep_core.errors import AdapterError, InputError

LATENT_TOL = 1e-4  # manifest / fixture README: final latents of a float32 CPU implementation
LORA_CASES = ["lora_t2m_turbo", "lora_t2m_turbo_scale", "lora_repaint_turbo"]


def _generate(pipe, case, golden, adapters=()):
    request = request_for_case(case, golden)
    request.adapters = list(adapters)
    return pipe.generate(request, latents=golden["in.noise"])


def _decoder_snapshot(transformer):
    return ({k: v.detach().clone() for k, v in transformer.state_dict().items()},
            [(n, type(m).__name__, sorted(m.__dict__)) for n, m in transformer.named_modules()])


def _assert_bare(transformer, snapshot):
    state, structure = snapshot
    now = transformer.state_dict()
    assert list(now) == list(state)
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert [(n, type(m).__name__, sorted(m.__dict__)) for n, m in transformer.named_modules()] == structure
    assert not decoder_adapters(transformer).active


@pytest.mark.parametrize("source", ["peft_folder", "comfyui_file"])
@pytest.mark.parametrize("name", LORA_CASES)
def test_lora_goldens_from_both_formats(pipe, manifest, tiny_dir, name, source):
    case = manifest["cases"][name]
    golden = load_golden(name)
    adapter = load_adapter(tiny_dir / case["lora"][source])
    assert adapter.format == ("peft" if source == "peft_folder" else "comfyui")
    result = _generate(pipe, case, golden, [ScaledAdapter(adapter, case["lora"]["scale"])])
    assert (result.latents - golden["out.pred_latents"]).abs().max().item() <= LATENT_TOL
    # The adapter is what makes the difference: without it the result is far from the golden.
    bare = _generate(pipe, case, golden)
    assert (bare.latents - golden["out.pred_latents"]).abs().max().item() > 100 * LATENT_TOL
    recorded = result.params["adapters"]
    assert recorded == [{"name": adapter.name, "file": adapter.file_name, "format": adapter.format,
                         "sha256": adapter.sha256, "scale": case["lora"]["scale"]}]


def test_both_formats_give_the_same_layers(tiny_dir):
    peft = load_adapter(tiny_dir / "loras" / "lora_b")
    comfy = load_adapter(tiny_dir / "loras" / "lora_b.comfyui.safetensors")
    assert sorted(peft.tensors) == sorted(comfy.tensors)
    assert all(torch.equal(peft.tensors[k], comfy.tensors[k]) for k in peft.tensors)
    assert set(peft.lora_config.target_modules) == set(comfy.lora_config.target_modules)
    assert "layers.0.self_attn.to_q" in peft.lora_config.target_modules
    assert (peft.lora_config.r, peft.lora_config.lora_alpha) == (comfy.lora_config.r, comfy.lora_config.lora_alpha) == (2, 2)


def test_lokr_equals_the_library_applying_it(pipe, t2m, tmp_path):
    case, golden = t2m
    transformer = pipe.dit.transformer
    snapshot = _decoder_snapshot(transformer)
    base = _generate(pipe, case, golden).latents
    net = library_lokr(transformer)
    path = write_lokr(net, tmp_path / "lokr_weights.safetensors")
    net.set_multiplier(0.7)
    net.apply_to()
    try:
        library = _generate(pipe, case, golden).latents
    finally:
        net.restore()
    adapter = load_adapter(path)
    assert adapter.format == "lokr" and adapter.lokr_config["linear_dim"] == LOKR_CONFIG["linear_dim"]
    ours = _generate(pipe, case, golden, [ScaledAdapter(adapter, 0.7)]).latents
    assert (library - base).abs().max().item() > 1e-2
    assert (ours - library).abs().max().item() <= 1e-6
    _assert_bare(transformer, snapshot)
    # A folder holding lokr_weights.safetensors loads the same adapter.
    assert load_adapter(tmp_path).sha256 == adapter.sha256


def _layer_outputs(transformer, adapters, x, layer="layers.1.self_attn.to_q"):
    with decoder_adapters(transformer).applied(adapters), torch.no_grad():
        return transformer.get_submodule(layer)(x)


def test_stacked_adapters_add_their_deltas(pipe, tiny_dir, tmp_path):
    transformer = pipe.dit.transformer
    lora_a = load_adapter(tiny_dir / "loras" / "lora_a")
    lora_b = load_adapter(tiny_dir / "loras" / "lora_b.comfyui.safetensors")
    lokr = load_adapter(write_lokr(library_lokr(transformer, seed=9), tmp_path / "k.safetensors"))
    x = torch.randn(3, 7, transformer.config.hidden_size, generator=torch.Generator().manual_seed(1))
    base = _layer_outputs(transformer, [], x)
    uses = [ScaledAdapter(lora_a, 1.3), ScaledAdapter(lora_b, -0.6), ScaledAdapter(lokr, 0.5)]
    deltas = [_layer_outputs(transformer, [u], x) - base for u in uses]
    assert all(d.abs().max().item() > 1e-3 for d in deltas)
    stacked = _layer_outputs(transformer, uses, x) - base
    assert torch.allclose(stacked, sum(deltas), atol=1e-5, rtol=0)
    # The scale multiplies the delta, negative and above 1 included.
    doubled = _layer_outputs(transformer, [ScaledAdapter(lora_a, 2.6)], x) - base
    assert torch.allclose(doubled, 2 * deltas[0], atol=1e-5, rtol=0)


def test_unload_restores_the_exact_base_output(pipe, t2m, tiny_dir, tmp_path):
    case, golden = t2m
    transformer = pipe.dit.transformer
    snapshot = _decoder_snapshot(transformer)
    base = _generate(pipe, case, golden).latents
    uses = [ScaledAdapter(load_adapter(tiny_dir / "loras" / "lora_a"), 0.9),
            ScaledAdapter(load_adapter(tiny_dir / "loras" / "lora_b"), 1.4),
            ScaledAdapter(load_adapter(write_lokr(library_lokr(transformer), tmp_path / "k.safetensors")), -0.5)]
    adapted = _generate(pipe, case, golden, uses).latents
    assert (adapted - base).abs().max().item() > 1e-2
    _assert_bare(transformer, snapshot)
    assert torch.equal(_generate(pipe, case, golden).latents, base)


# ---------------------------------------------------------------------------------------------- refusals


def _truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _wrong_shapes(tiny_dir, dst):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_dir / "loras" / "lora_b.comfyui.safetensors"))
    for key in list(tensors):
        if key.endswith("lora_down.weight"):
            tensors[key] = torch.randn(2, 48)  # a model with 48-wide layers
    save_file(tensors, str(dst))
    return dst


def _extra_layer(tiny_dir, dst):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_dir / "loras" / "lora_b.comfyui.safetensors"))
    for key in [k for k in tensors if ".layers.0." in k]:
        tensors[key.replace(".layers.0.", ".layers.9.")] = tensors[key].clone()
    save_file(tensors, str(dst))
    return dst


def _folder_without_config(tiny_dir, dst):
    shutil.copytree(tiny_dir / "loras" / "lora_a", dst)
    (dst / "adapter_config.json").unlink()
    return dst


def _lokr_without_metadata_or_alpha(transformer, dst):
    from safetensors.torch import load_file, save_file

    path = write_lokr(library_lokr(transformer), dst, config=None)
    save_file({k: v for k, v in load_file(str(path)).items() if not k.endswith(".alpha")}, str(path))
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d, t, p: _folder_without_config(d, p / "lora_x"), "has no adapter_config.json"),
    (lambda d, t, p: _truncated(d / "loras" / "lora_a.comfyui.safetensors", p / "cut.safetensors"),
     "not a valid safetensors file"),
    (lambda d, t, p: _lokr_without_metadata_or_alpha(t, p / "lokr_weights.safetensors"),
     r"without its LyCORIS config .* and without an \.alpha tensor per layer"),
    (lambda d, t, p: p / "missing.safetensors", "adapter not found"),
    (lambda d, t, p: (p / "notes.txt").write_text("x") and p / "notes.txt", ".safetensors files only"),
])
def test_unreadable_adapters_are_refused_when_loaded(pipe, tiny_dir, tmp_path, make, message):
    with pytest.raises(AdapterError, match=message):
        load_adapter(make(tiny_dir, pipe.dit.transformer, tmp_path))


def _config_mismatched_lokr(transformer, dst):
    bad = dict(LOKR_CONFIG, linear_dim=1)  # the file was trained with 2
    return write_lokr(library_lokr(transformer), dst, config=bad)


def _lokr_for_more_layers(transformer, dst):
    from safetensors.torch import load_file, save_file

    path = write_lokr(library_lokr(transformer), dst)
    tensors = load_file(str(path))
    tensors.update({k.replace("lycoris_layers_0_", "lycoris_layers_7_"): v.clone() for k, v in tensors.items()
                    if k.startswith("lycoris_layers_0_")})
    save_file(tensors, str(path), metadata={"algo": "lokr", "lokr_config": json.dumps(LOKR_CONFIG)})
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d, t, p: _wrong_shapes(d, p / "wide.safetensors"),
     r"does not fit .*layers\.\d\.(self|cross)_attn\.(q|v)_proj: adapter A \[2, 48\]"),
    (lambda d, t, p: _extra_layer(d, p / "deep.safetensors"), r"layers\.9\.cross_attn\.q_proj: no such layer"),
    (lambda d, t, p: _lokr_for_more_layers(t, p / "k.safetensors"), r"no layer for lycoris_layers_7_"),
    (lambda d, t, p: _config_mismatched_lokr(t, p / "k.safetensors"),
     r"does not match its own config \(metadata 'lokr_config'\): layers\.0\.\w+\.\w+\.lokr_w2_a \[\d+, 2\] in the "
     r"file, \[\d+, 1\] from the config"),
])
def test_adapters_for_another_model_fail_cleanly(pipe, t2m, tiny_dir, tmp_path, make, message):
    case, golden = t2m
    transformer = pipe.dit.transformer
    snapshot = _decoder_snapshot(transformer)
    base = _generate(pipe, case, golden).latents
    good = ScaledAdapter(load_adapter(tiny_dir / "loras" / "lora_a"), 1.0)
    bad = ScaledAdapter(load_adapter(make(tiny_dir, transformer, tmp_path)), 1.0)
    with pytest.raises(AdapterError, match=message):
        _generate(pipe, case, golden, [good, bad])
    _assert_bare(transformer, snapshot)
    assert torch.equal(_generate(pipe, case, golden).latents, base)


def test_request_refuses_unloaded_adapters(t2m, tiny_dir):
    case, golden = t2m
    request = request_for_case(case, golden)
    request.adapters = ["loras/lora_a"]
    with pytest.raises(InputError, match="ScaledAdapter"):
        request.validate()
    adapter = load_adapter(tiny_dir / "loras" / "lora_a")
    with pytest.raises(AdapterError, match="finite"):
        ScaledAdapter(adapter, float("nan"))
    with pytest.raises(AdapterError, match="number"):
        ScaledAdapter(adapter, "strong")
