"""ACE-Step 1.5 XL: the official XL goldens through the public pipeline API, from the official
folders and from the same weights written as a ComfyUI single-file repack."""

import json

import pytest
import torch
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepTimbreEncoder
from safetensors.torch import load_file, save_file

from conftest import TINY_DIR, load_golden
from engine_helpers import request_for_case, tiny_pipeline

from acestep_core.dit import infer_dit_config, load_dit
from acestep_core.errors import CheckpointError
from acestep_core.pipeline import ACEStepPipeline
from acestep_core.xl import TIMBRE_CLS_KEY, AceStepTimbreEncoderWithCLS

LATENT_TOL = 1e-4
AUDIO_TOL = 2e-3
XL_CASES = ["xl_t2m_turbo", "xl_cover_audio_turbo", "xl_repaint_turbo", "xl_t2m_base_apg"]
REPACK_NAMES = {  # the published ComfyUI file names; the turbo one with ComfyUI's key prefix
    "acestep-v15-xl-turbo-tiny": ("acestep_v1.5_xl_turbo_bf16.safetensors", "model.diffusion_model."),
    "acestep-v15-xl-base-tiny": ("acestep_v1.5_xl_base_bf16.safetensors", ""),
}


def _run(pipe, case, name):
    golden = load_golden(name)
    steps = []
    result = pipe.generate(request_for_case(case, golden), latents=golden["in.noise"],
                           progress=lambda i, n: steps.append((i, n)))
    return golden, result, steps


def _check(golden, result, name):
    expected = golden["out.pred_latents"]
    assert result.latents.shape == expected.shape
    error = (result.latents - expected).abs().max().item()
    assert error <= LATENT_TOL, f"{name}: max latent error {error:.3e}"
    if "out.audio" in golden:
        assert (result.audio - golden["out.audio"]).abs().max().item() <= AUDIO_TOL


@pytest.fixture(scope="module")
def repack_dir(tmp_path_factory):
    """The tiny XL folders rewritten as ComfyUI XL repacks: one file, official keys, no config."""
    out = tmp_path_factory.mktemp("comfy_xl")
    for folder, (file_name, prefix) in REPACK_NAMES.items():
        tensors = load_file(str(TINY_DIR / folder / "model.safetensors"))
        save_file({prefix + k: v for k, v in tensors.items()}, str(out / file_name), metadata={"format": "pt"})
        # The tiny model's sliding window (16, real 128) is the one size its shapes cannot show.
        config = json.loads((TINY_DIR / folder / "config.json").read_text())
        sidecar = out / file_name.replace(".safetensors", ".acestep.json")
        sidecar.write_text(json.dumps({"sliding_window": config["sliding_window"]}))
    return out


@pytest.mark.parametrize("name", XL_CASES)
def test_xl_golden_from_official_folder(manifest, name):
    case = manifest["cases"][name]
    pipe = tiny_pipeline(case["model"])
    assert pipe.dit.is_xl
    golden, result, steps = _run(pipe, case, name)
    _check(golden, result, name)
    assert result.params["timesteps"] == pytest.approx(golden["mid.timesteps"].tolist(), abs=1e-6)
    assert steps[-1] == (len(golden["mid.timesteps"]), len(golden["mid.timesteps"]))


@pytest.mark.parametrize("name", XL_CASES)
def test_xl_golden_from_comfyui_repack(manifest, repack_dir, name):
    case = manifest["cases"][name]
    file_name, _ = REPACK_NAMES[case["model"]]
    pipe = ACEStepPipeline.from_pretrained(dit=repack_dir / file_name, vae=TINY_DIR / "vae-tiny",
                                           text_encoder=TINY_DIR / "Qwen3-Embedding-tiny", dtype="float32")
    assert pipe.dit.is_xl and pipe.is_turbo == ("turbo" in file_name)
    # No silence_latent.pt travels with ComfyUI files: use the fixture's to compare with the golden.
    pipe.dit.silence_latent = tiny_pipeline(case["model"]).dit.silence_latent
    golden, result, _ = _run(pipe, case, name)
    _check(golden, result, name)


def test_repack_shapes_give_the_folder_config():
    folder = TINY_DIR / "acestep-v15-xl-turbo-tiny"
    config = json.loads((folder / "config.json").read_text())
    inferred = infer_dit_config(load_file(str(folder / "model.safetensors")))
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "encoder_hidden_size", "encoder_intermediate_size", "encoder_num_attention_heads",
                "encoder_num_key_value_heads", "text_hidden_dim", "fsq_dim", "layer_types",
                "num_lyric_encoder_hidden_layers", "num_timbre_encoder_hidden_layers"):
        assert inferred[key] == config[key], key


def test_xl_timbre_encoder_prepends_its_cls_token(manifest):
    """The timbre embedding is read at the CLS position; without the token the condition differs."""
    case = manifest["cases"]["xl_t2m_turbo"]
    golden = load_golden("xl_t2m_turbo")
    pipe = tiny_pipeline(case["model"])
    encoder = pipe.dit.condition_encoder
    assert isinstance(encoder.timbre_encoder, AceStepTimbreEncoderWithCLS)
    silence = pipe.dit.silence_latent[:, :750]
    order = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        with_cls, _ = encoder.timbre_encoder(silence, order)
        # The same weights in diffusers' own class, which leaves the token out.
        plain = AceStepTimbreEncoder(**dict(encoder.timbre_encoder.config))
        plain.load_state_dict(encoder.timbre_encoder.state_dict())
        without_cls, _ = plain(silence, order)
    assert (with_cls - without_cls).abs().max().item() > 1e-2
    # The 2B model keeps diffusers' class: the token is carried but unused.
    assert not isinstance(tiny_pipeline().dit.condition_encoder.timbre_encoder, AceStepTimbreEncoderWithCLS)
    # The packed condition matches the reference's encoder output.
    expected = golden["out.encoder_hidden_states"]
    caption_text, lyric_text = (call["text"] for call in case["tokenizer_calls"])
    te = pipe.text_encoder
    ids, mask = te.tokenize([caption_text], 256)
    lyric_ids, lyric_mask = te.tokenize([lyric_text], 2048)
    with torch.no_grad():
        hidden, _ = encoder(text_hidden_states=te.model(input_ids=ids).last_hidden_state, text_attention_mask=mask,
                            lyric_hidden_states=te.model.embed_tokens(lyric_ids), lyric_attention_mask=lyric_mask,
                            refer_audio_acoustic_hidden_states_packed=silence, refer_audio_order_mask=order)
    assert (hidden - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("broken", ["missing", "misshaped"])
def test_xl_file_without_a_usable_cls_token_is_refused(tmp_path, broken):
    tensors = load_file(str(TINY_DIR / "acestep-v15-xl-turbo-tiny" / "model.safetensors"))
    if broken == "missing":
        del tensors[TIMBRE_CLS_KEY]
    else:
        tensors[TIMBRE_CLS_KEY] = tensors[TIMBRE_CLS_KEY][..., :16].contiguous()
    path = tmp_path / "acestep_v1.5_xl_turbo_bf16.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="special_token") as info:
        load_dit(path)
    assert ("lacks" in str(info.value)) == (broken == "missing")


def test_xl_base_runs_the_base_only_tasks(manifest):
    """extract / lego / complete are base-model tasks; xl-base takes them, xl-turbo refuses them."""
    from acestep_core import GenerationRequest
    from acestep_core.errors import InputError

    source = load_golden("source_audio")["src_a"]
    request = GenerationRequest(caption="x", task_type="extract", track_name="vocals", src_audio=source,
                                inference_steps=2, guidance_scale=3.0, seed=1)
    result = tiny_pipeline("acestep-v15-xl-base-tiny").generate(request)
    assert result.latents.shape == (1, source.shape[-1] // 1920, 64) and torch.isfinite(result.latents).all()
    with pytest.raises(InputError, match="base model"):
        tiny_pipeline("acestep-v15-xl-turbo-tiny").generate(request)
