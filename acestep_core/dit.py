"""The ACE-Step 1.5 DiT checkpoint: decoder, condition encoder, audio tokenizer, detokenizer,
null-condition embedding and silence latent, built from diffusers' classes.

Accepts the official folder layout (`config.json`, `model.safetensors` or a shard index,
`silence_latent.pt`) and ComfyUI's repackaged single files (official keys, optionally under
`model.diffusion_model.`, no config, no silence latent).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .checkpoints import check_state_dict, read_config_json, read_safetensors, read_sharded_or_single, sidecar_config  # noqa: F401
from .dit_speed import row_major_residual
from .silence import builtin_silence_latent
from .xl import check_timbre_cls, is_xl_config, use_timbre_cls

logger = logging.getLogger(__name__)

COMFY_DIT_PREFIXES = ("model.diffusion_model.", "model.model.")

# Published 2B config (docs/architecture.md#dit-configuration): what a ComfyUI single file cannot tell from its shapes.
PUBLISHED_DIT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "sliding_window": 128,
    "in_channels": 192,
    "audio_acoustic_hidden_dim": 64,
    "patch_size": 2,
    "text_hidden_dim": 1024,
    "timbre_hidden_dim": 64,
    "timbre_fix_frame": 750,
    "num_lyric_encoder_hidden_layers": 8,
    "num_timbre_encoder_hidden_layers": 4,
    "num_attention_pooler_hidden_layers": 2,
    "pool_window_size": 5,
    "fsq_dim": 2048,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5],
    "fsq_input_num_quantizers": 1,
    "is_turbo": True,
}

_ATTENTION_RENAMES = (
    (".q_proj.", ".to_q."),
    (".k_proj.", ".to_k."),
    (".v_proj.", ".to_v."),
    (".o_proj.", ".to_out.0."),
    (".q_norm.", ".norm_q."),
    (".k_norm.", ".norm_k."),
)

COMPONENT_PREFIXES = {
    "decoder.": "transformer",
    "encoder.": "condition_encoder",
    "tokenizer.": "audio_tokenizer",
    "detokenizer.": "detokenizer",
}


def official_to_diffusers_key(key: str) -> tuple[str, str]:
    """(component, diffusers key) for one official state-dict key."""
    if key == "null_condition_emb":
        return "condition_encoder", "null_condition_emb"
    for prefix, component in COMPONENT_PREFIXES.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            break
    else:
        return "", key
    if component == "transformer":
        name = name.replace("proj_in.1.", "proj_in_conv.").replace("proj_out.1.", "proj_out_conv.")
    for old, new in _ATTENTION_RENAMES:
        name = name.replace(old, new)
    return component, name


def diffusers_to_official_key(component: str, key: str) -> str:
    """The official state-dict key of one diffusers key (inverse of official_to_diffusers_key)."""
    if component == "condition_encoder" and key == "null_condition_emb":
        return key
    prefix = {v: k for k, v in COMPONENT_PREFIXES.items()}[component]
    for official, ours in _ATTENTION_RENAMES:
        key = key.replace(ours, official)
    key = key.replace("proj_in_conv.", "proj_in.1.").replace("proj_out_conv.", "proj_out.1.")
    return prefix + key


@dataclass
class DiTModel:
    transformer: nn.Module
    condition_encoder: nn.Module
    audio_tokenizer: nn.Module
    detokenizer: nn.Module
    silence_latent: torch.Tensor  # [1, L, 64], float32 on CPU
    config: dict
    source: str
    name: str = "acestep-v15"
    notes: list[str] = field(default_factory=list)

    @property
    def is_turbo(self) -> bool:
        # The official handler decides on `is_turbo` alone (docs/architecture.md#dit-configuration).
        return bool(self.config.get("is_turbo", False))

    @property
    def model_version(self) -> str:
        return "turbo" if self.is_turbo else str(self.config.get("model_version") or "base")

    @property
    def is_xl(self) -> bool:
        return is_xl_config(self.config)

    @property
    def is_sft(self) -> bool:
        # SFT folders may not say so in their config; their name does.
        return self.model_version.endswith("sft") or "sft" in self.name.lower()

    def modules(self) -> dict[str, nn.Module]:
        return {
            "transformer": self.transformer,
            "condition_encoder": self.condition_encoder,
            "audio_tokenizer": self.audio_tokenizer,
            "detokenizer": self.detokenizer,
        }

    def to(self, device=None, dtype=None) -> "DiTModel":
        for module in self.modules().values():
            module.to(device=device, dtype=dtype)
        return self


def _kwargs_for(cls, config: dict, renames: dict[str, str] | None = None) -> dict:
    params = inspect.signature(cls.__init__).parameters
    out = {}
    for key, value in config.items():
        key = (renames or {}).get(key, key)
        if key in params and key != "self":
            out[key] = value
    return out


def _build_modules(config: dict) -> dict[str, nn.Module]:
    from diffusers import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
        AceStepTransformer1DModel,
    )

    # XL: the encoder side keeps 2048-wide sizes under `encoder_*` names.
    encoder_config = dict(config)
    for name in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        if config.get(f"encoder_{name}") is not None:
            encoder_config[name] = config[f"encoder_{name}"]
    # The encoders start alternating sliding/full again at their own layer 0.
    encoder_config.pop("layer_types", None)

    transformer_kwargs = _kwargs_for(AceStepTransformer1DModel, config)
    if config.get("encoder_hidden_size") is not None:
        transformer_kwargs["encoder_hidden_size"] = config["encoder_hidden_size"]
    with torch.device("meta"):
        modules = {
            "transformer": AceStepTransformer1DModel(**transformer_kwargs),
            "condition_encoder": AceStepConditionEncoder(**_kwargs_for(AceStepConditionEncoder, encoder_config)),
            "audio_tokenizer": AceStepAudioTokenizer(**_kwargs_for(AceStepAudioTokenizer, encoder_config)),
            "detokenizer": AceStepAudioTokenDetokenizer(**_kwargs_for(AceStepAudioTokenDetokenizer, encoder_config)),
        }
        if is_xl_config(config):
            use_timbre_cls(modules["condition_encoder"])
    row_major_residual(modules["transformer"])
    return modules


def _restore_fsq_buffers(audio_tokenizer: nn.Module, config: dict) -> None:
    """Non-persistent FSQ buffers are garbage after a meta-device build: recompute them."""
    levels = list(config.get("fsq_input_levels") or [8, 8, 8, 5, 5, 5])
    num_quantizers = int(config.get("fsq_input_num_quantizers") or 1)
    quantizer = audio_tokenizer.quantizer
    levels_t = torch.tensor(levels, dtype=torch.long)
    quantizer._levels = levels_t
    quantizer._basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), dim=0)
    quantizer.scales = torch.stack([levels_t.float() ** -i for i in range(num_quantizers)])


def build_dit(
    state_dict: dict[str, torch.Tensor],
    config: dict,
    silence_latent: torch.Tensor,
    source: str,
    dtype: torch.dtype = torch.float32,
    name: str = "acestep-v15",
) -> DiTModel:
    if is_xl_config(config):
        check_timbre_cls(state_dict, int(config.get("encoder_hidden_size") or config["hidden_size"]), source)
    try:
        modules = _build_modules(config)
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: its config cannot build an ACE-Step 1.5 DiT ({type(exc).__name__}: {exc}); "
                              "use the config.json that came with the weights") from exc
    routes: dict[str, tuple[str, str]] = {}
    unknown = []
    for key in state_dict:
        component, new_key = official_to_diffusers_key(key)
        if component:
            routes[key] = (component, new_key)
        else:
            unknown.append(key)

    # Shapes are checked before any tensor is converted, so a wrong file costs no memory.
    expected_all: dict[str, torch.Size] = {}
    reverse = {v: k for k, v in COMPONENT_PREFIXES.items()}
    for component, module in modules.items():
        for key, value in module.state_dict().items():
            if component == "condition_encoder" and key == "silence_latent":
                continue
            label = "null_condition_emb" if key == "null_condition_emb" else reverse[component] + key
            expected_all[label] = value.shape
    actual_all = {("null_condition_emb" if new_key == "null_condition_emb" else reverse[component] + new_key): state_dict[key]
                  for key, (component, new_key) in routes.items()}
    actual_all.update({key: state_dict[key] for key in unknown})
    check_state_dict(source, expected_all, actual_all)
    del actual_all

    # One tensor at a time: each source tensor leaves `state_dict` as its converted copy is made, so
    # loading never holds the checkpoint twice (the modules take the tensors as they are: assign=True).
    per_component: dict[str, dict[str, torch.Tensor]] = {k: {} for k in modules}
    for key in list(routes):
        component, new_key = routes[key]
        per_component[component][new_key] = state_dict.pop(key).to(dtype)
    for component, module in modules.items():
        weights = per_component.pop(component)
        if component == "condition_encoder":
            # The buffer's placeholder length is fixed; the real latent replaces it whole.
            module.silence_latent = silence_latent.to(dtype)
            weights["silence_latent"] = module.silence_latent
        module.load_state_dict(weights, strict=True, assign=True)
        del weights
        module.eval().requires_grad_(False)
    _restore_fsq_buffers(modules["audio_tokenizer"], config)
    return DiTModel(
        transformer=modules["transformer"],
        condition_encoder=modules["condition_encoder"],
        audio_tokenizer=modules["audio_tokenizer"],
        detokenizer=modules["detokenizer"],
        silence_latent=silence_latent.float(),
        config=config,
        source=source,
        name=name,
    )


def load_silence_latent(path: Path) -> torch.Tensor:
    """`silence_latent.pt` ([1, 64, L] as saved) → [1, L, 64] float32."""
    try:
        tensor = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read silence latent {path}: {exc}") from exc
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[1] != 64:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(f"{path} should hold a [1, 64, frames] tensor, found {shape}")
    return tensor.float().transpose(1, 2).contiguous()


def _read_json(path: Path) -> dict:
    return read_config_json(path, "DiT")


_POSITIVE_INT_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                        "num_hidden_layers", "head_dim")


def check_dit_config(config: dict, source: str) -> None:
    """What would otherwise fail deep inside the model build with an IndexError or a shape error."""
    for name in _POSITIVE_INT_FIELDS:
        value = config.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise CheckpointError(f"{source}: {name} must be a positive integer, found {value!r}")
    layer_types = config.get("layer_types")
    layers = config.get("num_hidden_layers")
    if layer_types is not None:
        if not isinstance(layer_types, list) or not all(t in ("sliding_attention", "full_attention") for t in layer_types):
            raise CheckpointError(f"{source}: layer_types must list 'sliding_attention' / 'full_attention' per layer")
        if layers is not None and len(layer_types) != layers:
            raise CheckpointError(
                f"{source}: layer_types lists {len(layer_types)} layers but num_hidden_layers is {layers}; "
                "the config does not match itself: use the config.json that came with the weights")


def load_dit_folder(folder: Path, dtype: torch.dtype = torch.float32, config_override: dict | None = None) -> DiTModel:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"DiT folder not found: {folder}")
    config = _read_json(folder / "config.json")
    if config_override:
        config.update(config_override)
    if config.get("model_type") not in (None, "acestep"):
        raise CheckpointError(f"{folder / 'config.json'} is a '{config.get('model_type')}' config, not an ACE-Step DiT")
    check_dit_config(config, str(folder / "config.json"))
    state_dict, source = read_sharded_or_single(folder)
    silence_path = folder / "silence_latent.pt"
    if silence_path.is_file():
        silence = load_silence_latent(silence_path)
    else:
        silence = builtin_silence_latent()
        logger.warning("%s has no silence_latent.pt; using the built-in silence latent", folder)
    return build_dit(state_dict, config, silence, source, dtype=dtype, name=folder.name)


def infer_dit_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """Sizes from tensor shapes; everything invisible in shapes from the published config."""
    config = dict(PUBLISHED_DIT_DEFAULTS)

    def shape(key):
        if key not in state_dict:
            raise CheckpointError(f"not an ACE-Step 1.5 DiT file: key {key} is missing")
        return tuple(state_dict[key].shape)

    hidden = shape("decoder.norm_out.weight")[0]
    head_dim = shape("decoder.layers.0.self_attn.q_norm.weight")[0]
    config["hidden_size"] = hidden
    config["head_dim"] = head_dim
    config["num_attention_heads"] = shape("decoder.layers.0.self_attn.q_proj.weight")[0] // head_dim
    config["num_key_value_heads"] = shape("decoder.layers.0.self_attn.k_proj.weight")[0] // head_dim
    config["intermediate_size"] = shape("decoder.layers.0.mlp.gate_proj.weight")[0]

    def count_layers(prefix):
        indices = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
        return max(indices) + 1 if indices else 0

    config["num_hidden_layers"] = count_layers("decoder.layers.")
    config["num_lyric_encoder_hidden_layers"] = count_layers("encoder.lyric_encoder.layers.")
    config["num_timbre_encoder_hidden_layers"] = count_layers("encoder.timbre_encoder.layers.")
    config["num_attention_pooler_hidden_layers"] = count_layers("tokenizer.attention_pooler.layers.")
    encoder_hidden = shape("encoder.lyric_encoder.norm.weight")[0]
    if encoder_hidden != hidden:
        enc_head_dim = shape("encoder.lyric_encoder.layers.0.self_attn.q_norm.weight")[0]
        config["encoder_hidden_size"] = encoder_hidden
        config["encoder_intermediate_size"] = shape("encoder.lyric_encoder.layers.0.mlp.gate_proj.weight")[0]
        config["encoder_num_attention_heads"] = shape("encoder.lyric_encoder.layers.0.self_attn.q_proj.weight")[0] // enc_head_dim
        config["encoder_num_key_value_heads"] = shape("encoder.lyric_encoder.layers.0.self_attn.k_proj.weight")[0] // enc_head_dim
    config["text_hidden_dim"] = shape("encoder.text_projector.weight")[1]
    config["timbre_hidden_dim"] = shape("encoder.timbre_encoder.embed_tokens.weight")[1]
    config["fsq_dim"] = shape("tokenizer.quantizer.project_in.weight")[1]
    config["audio_acoustic_hidden_dim"] = shape("detokenizer.proj_out.weight")[0]
    config["pool_window_size"] = shape("detokenizer.special_tokens")[1]
    config["layer_types"] = [
        "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(config["num_hidden_layers"])
    ]
    return config


def split_comfy_dit_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in COMFY_DIT_PREFIXES:
        prefixed = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if len(prefixed) > 5:
            return prefixed
    return {k: v for k, v in tensors.items() if k.split(".")[0] in ("decoder", "encoder", "tokenizer", "detokenizer") or k == "null_condition_emb"}


def load_dit_file(
    file: Path,
    dtype: torch.dtype = torch.float32,
    config_override: dict | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> DiTModel:
    """A ComfyUI DiT file (`acestep_v1.5_*.safetensors`) or the DiT part of the all-in-one checkpoint."""
    file = Path(file)
    state_dict = split_comfy_dit_keys(read_safetensors(file) if tensors is None else tensors)
    if "encoder.lyric_encoder.layers.0.input_layernorm.weight" not in state_dict:
        raise CheckpointError(
            f"{file} is not an ACE-Step 1.5 diffusion model: it lacks "
            "encoder.lyric_encoder.layers.0.input_layernorm.weight (is it a VAE, a text encoder or another model?)"
        )
    config = infer_dit_config(state_dict)
    # Nothing in the file says turbo or base; the file name does for the published files.
    config["is_turbo"] = "turbo" in file.name.lower()
    config["model_version"] = "turbo" if config["is_turbo"] else ("sft" if "sft" in file.name.lower() else "base")
    if is_xl_config(config):
        config["model_version"] = "xl_" + config["model_version"]
    override = dict(sidecar_config(file) or {})
    override.update(config_override or {})
    notes = []
    if override:
        config.update({k: v for k, v in override.items() if k not in ("architectures", "auto_map")})
        notes.append(f"config override applied: {sorted(override)}")
    silence = builtin_silence_latent()
    model = build_dit(state_dict, config, silence, str(file), dtype=dtype, name=file.stem)
    model.notes.extend(notes)
    return model


def load_dit(path: Path | str, dtype: torch.dtype = torch.float32, config_override: dict | None = None) -> DiTModel:
    path = Path(path)
    if path.is_dir():
        return load_dit_folder(path, dtype=dtype, config_override=config_override)
    if path.is_file():
        return load_dit_file(path, dtype=dtype, config_override=config_override)
    raise CheckpointError(
        f"DiT not found: {path}. Give an official folder (e.g. checkpoints/acestep-v15-turbo) "
        "or a ComfyUI file (e.g. models/diffusion_models/acestep_v1.5_turbo.safetensors)."
    )
