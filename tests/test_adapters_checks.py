"""Adapter files refused when read or checked, in one line that names the layer, before any
generation runs (config rank vs weights, another model's LoKr, NaN weights, scales, one layer
spelled twice); and the other key styles ComfyUI reads (kohya `lora_unet_`, dotted LoKr)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapter_helpers import library_lokr, official_view, write_lokr
from conftest import TINY_DIR
from engine_helpers import request_for_case, tiny_pipeline

from acestep_core.adapters import ScaledAdapter, check_adapter_fits, decoder_adapters, load_adapter
from acestep_core.constants import ADAPTER_SCALE_MAX
from acestep_core.errors import AdapterError

COMFY_B = TINY_DIR / "loras" / "lora_b.comfyui.safetensors"


def _generate(pipe, t2m, adapters=()):
    case, golden = t2m
    request = request_for_case(case, golden)
    request.adapters = list(adapters)
    return pipe.generate(request, latents=golden["in.noise"]).latents


def _refused(match, call, *args):
    with pytest.raises(AdapterError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def _peft_with(tmp_path, **config):
    folder = tmp_path / "lora_x"
    shutil.copytree(TINY_DIR / "loras" / "lora_a", folder)  # r 4, weights rank 4
    path = folder / "adapter_config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **config)))
    return folder


# -------------------------------------------------------------------- 1. config rank vs weights


def test_peft_config_rank_must_be_the_weights_rank(tmp_path):
    _refused(r"adapter 'lora_x' \(lora_x\): layer layers\.0\.cross_attn\.k_proj \(and 31 more layers\) has rank 4 "
             r"in its weights but rank 16 in adapter_config\.json", load_adapter, _peft_with(tmp_path, r=16))


def test_peft_rank_pattern_must_be_the_weights_rank(tmp_path):
    folder = _peft_with(tmp_path, rank_pattern={"layers.1.self_attn.q_proj": 8})
    _refused(r"layer layers\.1\.self_attn\.q_proj has rank 4 in its weights but rank 8", load_adapter, folder)
    shutil.rmtree(folder)
    assert load_adapter(_peft_with(tmp_path, rank_pattern={"q_proj": 4})).lora_config.rank_pattern


# -------------------------------------------------------------------- 2. a LoKr for the other model


def test_lokr_for_the_xl_model_does_not_fit_the_2b_one(pipe, t2m, tmp_path):
    xl = tiny_pipeline("acestep-v15-xl-turbo-tiny").dit.transformer
    for_xl = load_adapter(write_lokr(library_lokr(xl), tmp_path / "for_xl.safetensors"))
    for_2b = load_adapter(write_lokr(library_lokr(pipe.dit.transformer), tmp_path / "for_2b.safetensors"))
    message = (r"^LoKr adapter '{}' \({}\.safetensors\) does not fit this ACE-Step 1\.5 decoder: "
               r"layers\.0\.self_attn\.q_proj \(adapter \[\d+, \d+\], layer \[\d+, \d+\]\), "
               r"layers\.\d\.\w+\.\w+ \(.*\) and \d+ other layers\. Was it trained for another model or size\?$")
    # The generation (CLI), the fit check (REST, node) and the other way round all say it the same way.
    _refused(message.format("for_xl", "for_xl"), _generate, pipe, t2m, [ScaledAdapter(for_xl)])
    _refused(message.format("for_xl", "for_xl"), check_adapter_fits, pipe.dit.transformer, for_xl)
    _refused(message.format("for_2b", "for_2b"), check_adapter_fits, xl, for_2b)
    assert not decoder_adapters(pipe.dit.transformer).active


# -------------------------------------------------------------------- 3. non-finite weights


def _poisoned_comfy(tmp_path):
    tensors = load_file(str(COMFY_B))
    key = "diffusion_model.decoder.layers.1.self_attn.q_proj.lora_up.weight"
    tensors[key] = tensors[key].clone()
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    return tmp_path / "nan.safetensors", key


def _poisoned_peft(tmp_path):
    folder = _peft_with(tmp_path)
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = sorted(tensors)[3]
    tensors[key] = torch.full_like(tensors[key], float("inf"))
    save_file(tensors, str(weights))
    return folder, key


def _poisoned_lokr(tmp_path, transformer):
    path = write_lokr(library_lokr(transformer), tmp_path / "lokr_weights.safetensors")
    tensors, metadata = load_file(str(path)), {"algo": "lokr", "lokr_config": json.dumps({"linear_dim": 2})}
    key = sorted(k for k in tensors if k.endswith("lokr_w1"))[0]
    tensors[key] = tensors[key] * float("nan")
    save_file(tensors, str(path), metadata=metadata)
    return tmp_path, key


@pytest.mark.parametrize("make", [_poisoned_comfy, _poisoned_peft, _poisoned_lokr])
def test_non_finite_weights_are_refused_when_read(pipe, tmp_path, make):
    path, key = make(tmp_path, pipe.dit.transformer) if make is _poisoned_lokr else make(tmp_path)
    _refused(rf"^adapter '\w+' has non-finite weights in {key}", load_adapter, path)


# -------------------------------------------------------------------- 4. scales


def test_scales_are_bounded_where_every_door_makes_them():
    adapter = load_adapter(COMFY_B)
    assert ScaledAdapter(adapter, ADAPTER_SCALE_MAX).scale == ADAPTER_SCALE_MAX == 10.0
    assert ScaledAdapter(adapter, -ADAPTER_SCALE_MAX).scale == -10.0
    for scale in (10.01, -11, 1e30):
        _refused(r"adapter scale .* for 'lora_b\.comfyui' is out of range: give -10 to 10", ScaledAdapter, adapter,
                 scale)


def test_cli_refuses_a_huge_scale_before_generating(tmp_path, monkeypatch, capsys):
    from acestep_core.cli import main

    monkeypatch.setenv("ACESTEP_TINY_DIR", str(TINY_DIR))
    out = tmp_path / "out"
    code = main(["generate", "--tiny", "--device", "cpu", "--out", str(out), "--caption", "x", "--audio-duration",
                 "10", "--lora", str(COMFY_B), "--lora-scale", "1e30"])
    assert code == 2 and "out of range: give -10 to 10" in capsys.readouterr().err
    assert not out.exists()


# -------------------------------------------------------------------- 5. one layer under two key styles


def test_a_layer_under_two_key_styles_is_refused(tmp_path):
    tensors = load_file(str(COMFY_B))
    comfy = "diffusion_model.decoder.layers.0.self_attn.q_proj.lora_down.weight"
    tensors["base_model.model.layers.0.self_attn.q_proj.lora_A.weight"] = tensors[comfy].clone()
    tensors["base_model.model.layers.0.self_attn.q_proj.lora_B.weight"] = \
        tensors[comfy.replace("lora_down", "lora_up")].clone()
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    message = _refused(r"^layer layers\.0\.self_attn\.q_proj appears twice in mixed\.safetensors \(keys ",
                       load_adapter, tmp_path / "mixed.safetensors")
    assert comfy in message and "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in message

    folder = _peft_with(tmp_path)
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    key = sorted(tensors)[0]
    tensors[key.replace("base_model.model.", "base_model.model.decoder.")] = tensors[key].clone()
    save_file(tensors, str(weights))
    _refused(r"appears twice in adapter_model\.safetensors \(keys base_model\.model\.", load_adapter, folder)


# -------------------------------------------------------------------- 6. kohya names, dotted LoKr


def _kohya(src, dst):
    """ComfyUI's `lora_unet_` names: the diffusion model's module path, dots made underscores."""
    out = {}
    for key, value in load_file(str(src)).items():
        module, dot, part = key[len("diffusion_model."):].partition(".lora_")
        if not dot:
            module, part = key[len("diffusion_model."): -len(".alpha")], "alpha"
        out[f"lora_unet_{module.replace('.', '_')}.{'lora_' + part if dot else part}"] = value
    save_file(out, str(dst))
    return dst


def test_kohya_names_give_the_comfyui_file_result(pipe, t2m, tmp_path):
    kohya = load_adapter(_kohya(COMFY_B, tmp_path / "kohya.safetensors"))
    assert kohya.format == "comfyui" and "lora_unet_decoder_layers_0_self_attn_q_proj.lora_A.weight" in kohya.tensors
    check_adapter_fits(pipe.dit.transformer, kohya)
    comfy = _generate(pipe, t2m, [ScaledAdapter(load_adapter(COMFY_B), 0.8)])
    assert torch.equal(_generate(pipe, t2m, [ScaledAdapter(kohya, 0.8)]), comfy)
    assert (_generate(pipe, t2m) - comfy).abs().max().item() > 1e-3

    deeper = load_file(str(tmp_path / "kohya.safetensors"))
    deeper.update({k.replace("_layers_0_", "_layers_9_"): v.clone() for k, v in deeper.items() if "_layers_0_" in k})
    save_file(deeper, str(tmp_path / "deep.safetensors"))
    _refused(r"does not fit this ACE-Step 1\.5 decoder: lora_unet_decoder_layers_9_\w+: no such layer",
             check_adapter_fits, pipe.dit.transformer, load_adapter(tmp_path / "deep.safetensors"))


def test_dotted_lokr_keys_load_like_the_lycoris_file(pipe, t2m, tmp_path):
    net = library_lokr(pipe.dit.transformer, seed=11)
    lycoris = load_adapter(write_lokr(net, tmp_path / "lycoris.safetensors"))
    tensors = load_file(str(tmp_path / "lycoris.safetensors"))
    names = {f"lycoris_{n}".replace(".", "_"): n for n, _ in official_view(pipe.dit.transformer).named_modules() if n}
    dotted = {f"diffusion_model.decoder.{names[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in tensors.items()}
    save_file(dotted, str(tmp_path / "dotted.safetensors"))  # as ComfyUI reads LoKr: shapes and alpha only
    save_file(dotted, str(tmp_path / "dotted_meta.safetensors"), metadata={"lokr_config": json.dumps(lycoris.lokr_config)})
    expected = _generate(pipe, t2m, [ScaledAdapter(lycoris, 0.6)])
    assert (_generate(pipe, t2m) - expected).abs().max().item() > 1e-3
    save_file(tensors, str(tmp_path / "lycoris_bare.safetensors"))  # LyCORIS names, the metadata stripped
    for name in ("dotted", "dotted_meta", "lycoris_bare"):
        adapter = load_adapter(tmp_path / f"{name}.safetensors")
        assert adapter.format == "lokr" and sorted(adapter.tensors) == sorted(lycoris.tensors)
        check_adapter_fits(pipe.dit.transformer, adapter)
        assert (_generate(pipe, t2m, [ScaledAdapter(adapter, 0.6)]) - expected).abs().max().item() <= 1e-6
