"""Reading adapter files: official PEFT LoRA folders, ComfyUI single-file LoRAs, LyCORIS LoKr files.

Each reader returns an `Adapter` whose LoRA tensors are already keyed by our decoder's module
names (`layers.0.self_attn.to_q.lora_A.weight`) together with the peft `LoraConfig` that gives
every layer the scaling the official handler gives it (lora_alpha / r, or lora_alpha / sqrt(r)
with rsLoRA). LoKr files keep LyCORIS's own keys (dotted LoKr keys are renamed to them) and config;
`patch.py` renames them onto our modules, because that needs the decoder, and so it does ComfyUI's
flat `lora_unet_` LoRA names. Every tensor must be finite and every layer named once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import AdapterError, CheckpointError
from ..checkpoints import read_safetensors, safetensors_metadata
from .deps import require
from .naming import KOHYA_PREFIX, LYCORIS_PREFIX, lycoris_name, official_module, our_module

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
LOKR_WEIGHTS = "lokr_weights.safetensors"
LOKR_METADATA_KEY = "lokr_config"
FORMATS = ("peft", "comfyui", "lokr")

# Prefixes in front of the decoder-relative module path: PEFT wraps the decoder itself
# (`base_model.model.`); ComfyUI names the diffusion model's decoder.
_PEFT_PREFIXES = ("base_model.model.",)
_COMFY_PREFIXES = ("diffusion_model.", "model.diffusion_model.", "base_model.model.", "transformer.")
_DECODER_PREFIX = "decoder."
_COMFY_DOWN = (".lora_down.weight", ".lora_A.weight")
_COMFY_UP = (".lora_up.weight", ".lora_B.weight")
# LoKr tensors under dotted module paths (ComfyUI's own LoKr key style) rather than LyCORIS names.
_LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha",
                "dora_scale")


@dataclass(eq=False)
class Adapter:
    """One adapter read from disk; never changes after loading (jobs may share it)."""

    name: str
    format: str  # one of FORMATS
    path: Path
    sha256: str
    tensors: dict[str, torch.Tensor]
    lora_config: Any = None  # peft LoraConfig in our module names (LoRA formats)
    lokr_config: Optional[dict] = None  # the LyCORIS config from the file's metadata (LoKr)
    notes: list[str] = field(default_factory=list)
    # LoRA modules under ComfyUI's flat `lora_unet_...` names: only the decoder's module list tells
    # which dots the underscores stand for, so patch.py resolves them (see `lora_for`).
    flat_names: bool = False

    @property
    def kind(self) -> str:
        return "lokr" if self.format == "lokr" else "lora"

    @property
    def file_name(self) -> str:
        return self.path.name

    def describe(self) -> dict:
        return {"name": self.name, "file": self.file_name, "format": self.format, "sha256": self.sha256}


def load_adapter(path: str | Path, name: Optional[str] = None) -> Adapter:
    """Read a PEFT folder, a ComfyUI LoRA file or a LoKr file; raise AdapterError when it is none."""
    path = Path(path)
    if not path.exists():
        raise AdapterError(f"adapter not found: {path}. Give an official PEFT LoRA folder "
                           f"(with {PEFT_CONFIG}), a ComfyUI LoRA .safetensors or a LoKr .safetensors")
    if path.is_dir():
        if (path / PEFT_CONFIG).is_file():
            return _read_peft_folder(path, name or path.name)
        if (path / LOKR_WEIGHTS).is_file():
            return _read_lokr(path / LOKR_WEIGHTS, name or path.name)
        raise AdapterError(
            f"{path} has no {PEFT_CONFIG}: an official PEFT LoRA folder holds {PEFT_CONFIG} and "
            f"{PEFT_WEIGHTS} (a LoKr folder holds {LOKR_WEIGHTS}); point at the folder the trainer wrote")
    if path.suffix.lower() != ".safetensors":
        raise AdapterError(f"{path}: adapters are read from .safetensors files only (or a PEFT folder)")
    stem = name or path.name[: -len(".safetensors")]
    tensors = _read(path, stem)
    metadata = _metadata(path)
    dotted = any(".lokr_" in k and not k.startswith(LYCORIS_PREFIX + "_") for k in tensors)
    if dotted:
        tensors = _lycoris_keys(path, tensors)
    if any(k.startswith(LYCORIS_PREFIX + "_") for k in tensors) or LOKR_METADATA_KEY in metadata:
        return _read_lokr(path, stem, tensors, metadata)
    if any(k.endswith(_COMFY_DOWN + _COMFY_UP) for k in tensors):
        return _comfy_adapter(path, stem, tensors)
    raise AdapterError(f"{path} holds no LoRA or LoKr tensors (keys like {sorted(tensors)[:3]}); expected "
                       "`...lora_down.weight` / `lora_up.weight` (ComfyUI LoRA) or `...lokr_w1` (LoKr)")


# ---------------------------------------------------------------------------------------------
# files


def _read(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        tensors = read_safetensors(path)
    except CheckpointError as exc:
        raise AdapterError(str(exc)) from exc
    if not tensors:
        raise AdapterError(f"{path} holds no tensors")
    # A NaN / Inf weight would only show up minutes later, as a song that cannot be saved.
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise AdapterError(f"adapter {name!r} has non-finite weights in {bad[0]}{more} ({path}): NaN or Inf, "
                           "so the training diverged or the file is damaged")
    return tensors


def _once(seen: dict[str, str], tensor: str, key: str, path: Path, layer: str) -> None:
    """One file must name each layer once: two spellings of a layer would silently drop one."""
    first = seen.setdefault(tensor, key)
    if first != key:
        raise AdapterError(f"layer {layer} appears twice in {path.name} (keys {first} and {key}); "
                           "keep one of them")


def _metadata(path: Path) -> dict[str, str]:
    try:
        return safetensors_metadata(path)
    except CheckpointError as exc:
        raise AdapterError(str(exc)) from exc


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    # An adapter made on the whole model rather than its decoder names the decoder too.
    return key[len(_DECODER_PREFIX):] if key.startswith(_DECODER_PREFIX) else key


def _exact(name: str) -> str:
    """peft reads rank / alpha pattern keys as regular expressions: match this one module only."""
    return re.escape(name)


# ---------------------------------------------------------------------------------------------
# PEFT folder


def _read_peft_folder(folder: Path, name: str) -> Adapter:
    LoraConfig = require("peft").LoraConfig

    config_path = folder / PEFT_CONFIG
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise AdapterError(f"cannot parse {config_path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise AdapterError(f"{config_path} must hold a JSON object")
    peft_type = str(raw.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise AdapterError(f"{config_path}: peft_type {peft_type} is not supported; PEFT folders must hold a "
                           "LoRA (peft_type LORA). LoKr adapters come as a LyCORIS lokr_weights.safetensors")
    weights = folder / PEFT_WEIGHTS
    if not weights.is_file():
        other = "adapter_model.bin is a pickle, which is never loaded; convert it to safetensors. " \
            if (folder / "adapter_model.bin").is_file() else ""
        raise AdapterError(f"{folder} has {PEFT_CONFIG} but no {PEFT_WEIGHTS}. {other}Copy the whole folder the "
                           "trainer wrote")
    if raw.get("modules_to_save"):
        raise AdapterError(f"{config_path}: modules_to_save {raw['modules_to_save']} replaces whole modules; "
                           "only LoRA layers can be loaded")
    tensors, seen = {}, {}
    for key, value in _read(weights, name).items():
        module, sep, suffix = _strip(key, _PEFT_PREFIXES).partition(".lora_")
        if not sep:
            raise AdapterError(f"{weights}: key {key} is not a LoRA tensor (expected ...lora_A.weight / lora_B.weight)")
        ours = f"{our_module(module)}.lora_{suffix}"
        _once(seen, ours, key, weights, module)
        tensors[ours] = value
    fields = {f.name for f in dataclasses.fields(LoraConfig)}
    kwargs = {k: v for k, v in raw.items() if k in fields}
    kwargs.update(
        # Exactly the layers in the file, by our names; the file's own target list uses official names.
        target_modules=sorted({k.rsplit(".lora_", 1)[0] for k in tensors}),
        rank_pattern={_rename_pattern(k): v for k, v in (raw.get("rank_pattern") or {}).items()},
        alpha_pattern={_rename_pattern(k): v for k, v in (raw.get("alpha_pattern") or {}).items()},
        layers_to_transform=None, layers_pattern=None, exclude_modules=None, modules_to_save=None,
        # Initialisers such as PiSSA rewrite the base weights; the file's weights replace any init anyway.
        init_lora_weights=True, inference_mode=True, lora_dropout=0.0, task_type=None,
    )
    kwargs.pop("target_parameters", None)
    try:
        config = LoraConfig(**kwargs)
    except Exception as exc:
        raise AdapterError(f"{config_path} is not a valid LoRA config: {exc}") from exc
    _check_ranks(name, config_path, config, tensors)
    return Adapter(name=name, format="peft", path=folder, sha256=_sha256(config_path, weights),
                   tensors=tensors, lora_config=config)


def _check_ranks(name: str, config_path: Path, config, tensors: dict[str, torch.Tensor]) -> None:
    """peft builds each layer at the config's rank (r, or its rank_pattern entry): weights of another
    rank would fail at load_state_dict, in the middle of every later generation."""
    get_pattern_key = require("peft.utils.other").get_pattern_key

    wrong = []
    for module in sorted(config.target_modules):
        key = get_pattern_key(config.rank_pattern.keys(), module)
        rank = config.rank_pattern.get(key, config.r)
        a, b = tensors.get(f"{module}.lora_A.weight"), tensors.get(f"{module}.lora_B.weight")
        found = a.shape[0] if a is not None and a.ndim == 2 else b.shape[1] if b is not None and b.ndim == 2 else None
        if found is not None and found != rank:
            wrong.append((official_module(module), rank, found))
    if wrong:
        module, rank, found = wrong[0]
        more = f" (and {len(wrong) - 1} more layers)" if len(wrong) > 1 else ""
        raise AdapterError(f"adapter {name!r} ({config_path.parent.name}): layer {module}{more} has rank {found} in "
                           f"its weights but rank {rank} in {PEFT_CONFIG} (r / rank_pattern); the config does "
                           "not belong to these weights")


def _rename_pattern(key: str) -> str:
    """Rank / alpha patterns name official modules (`q_proj`, `layers.0.self_attn.q_proj`)."""
    return our_module(key) if "." in key else our_module(f"x.{key}")[2:]


# ---------------------------------------------------------------------------------------------
# ComfyUI single file


def _comfy_adapter(path: Path, name: str, tensors: dict[str, torch.Tensor]) -> Adapter:
    LoraConfig = require("peft").LoraConfig

    down, up, alpha, seen = {}, {}, {}, {}
    for key, value in tensors.items():
        plain = _strip(key, _COMFY_PREFIXES)
        for part, suffixes in ((down, _COMFY_DOWN), (up, _COMFY_UP), (alpha, (".alpha",))):
            suffix = next((s for s in suffixes if plain.endswith(s)), None)
            if suffix is not None:
                module = plain[: -len(suffix)]
                _once(seen, f"{_ours(module)}{suffixes[0]}", key, path, official_module(_ours(module)))
                part[module] = value
                break
        else:
            raise AdapterError(f"{path}: key {key} is not part of a LoRA (expected lora_down.weight, "
                               "lora_up.weight and alpha per layer)")
    unpaired = sorted(set(down) ^ set(up))
    if unpaired:
        raise AdapterError(f"{path}: layers with only one of lora_down / lora_up: {unpaired[:5]}")
    out, ranks, alphas = {}, {}, {}
    for module in sorted(down):
        ours = _ours(module)
        rank = int(down[module].shape[0])
        ranks[ours] = rank
        # ComfyUI's convention: no alpha tensor means alpha = rank (strength 1 = the raw delta).
        alphas[ours] = float(alpha[module].float().item()) if module in alpha else float(rank)
        out[f"{ours}.lora_A.weight"] = down[module]
        out[f"{ours}.lora_B.weight"] = up[module]
    rank = Counter(ranks.values()).most_common(1)[0][0]
    lora_alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = LoraConfig(
        r=rank, lora_alpha=lora_alpha, target_modules=sorted(ranks),
        rank_pattern={_exact(m): r for m, r in ranks.items() if r != rank},
        alpha_pattern={_exact(m): a for m, a in alphas.items() if a != lora_alpha},
        init_lora_weights=True, inference_mode=True, lora_dropout=0.0,
    )
    return Adapter(name=name, format="comfyui", path=path, sha256=_sha256(path), tensors=out, lora_config=config,
                   flat_names=any(m.startswith(KOHYA_PREFIX) for m in ranks))


def _ours(module: str) -> str:
    """Our module name; a flat `lora_unet_` name stays as it is until the decoder resolves it."""
    return module if module.startswith(KOHYA_PREFIX) else our_module(module)


# ---------------------------------------------------------------------------------------------
# LoKr (LyCORIS)


def _lycoris_keys(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LoKr tensors under dotted paths (`diffusion_model.decoder.layers.0.self_attn.q_proj.lokr_w1`)
    renamed to the LyCORIS names the official LoKr training writes (`lycoris_layers_0_self_attn_q_proj`)."""
    out, seen = {}, {}
    for key, value in tensors.items():
        module, _, param = key.rpartition(".")
        if not module.startswith(LYCORIS_PREFIX + "_") and param in _LOKR_PARAMS:
            module = _strip(module, _COMFY_PREFIXES)
            lycoris = f"{lycoris_name(module)}.{param}"
        else:
            lycoris = key
        _once(seen, lycoris, key, path, module)
        out[lycoris] = value
    return out


def _read_lokr(path: Path, name: str, tensors: Optional[dict] = None, metadata: Optional[dict] = None) -> Adapter:
    tensors = _read(path, name) if tensors is None else tensors
    metadata = _metadata(path) if metadata is None else metadata
    raw = metadata.get(LOKR_METADATA_KEY)
    config = None
    if raw and str(raw).strip():
        try:
            config = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AdapterError(f"{path}: the '{LOKR_METADATA_KEY}' metadata is not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise AdapterError(f"{path}: the '{LOKR_METADATA_KEY}' metadata must be a JSON object")
    else:
        # Without the LyCORIS config (ComfyUI's LoKr convention, and other trainers' files) the shapes
        # and each layer's `.alpha` are the whole config; LyCORIS builds the modules from them
        # (patch.py), scaled alpha / rank as ComfyUI does.
        no_alpha = sorted({k.split(".", 1)[0] for k in tensors if f"{k.split('.', 1)[0]}.alpha" not in tensors})
        if no_alpha:
            raise AdapterError(
                f"{path} is a LoKr file without its LyCORIS config (safetensors metadata '{LOKR_METADATA_KEY}') "
                f"and without an .alpha tensor per layer (none for {no_alpha[:3]}), so its scaling is unknown; "
                "use the file as the LoKr training wrote it")
    algo = str(metadata.get("algo") or (config or {}).get("algo") or "lokr").lower()
    if algo != "lokr":
        raise AdapterError(f"{path}: LyCORIS algorithm {algo!r} is not supported; only LoKr files load here")
    stray = sorted(k for k in tensors if not k.startswith(LYCORIS_PREFIX + "_"))
    if stray:
        raise AdapterError(f"{path}: keys outside the LyCORIS network: {stray[:5]}")
    return Adapter(name=name, format="lokr", path=path, sha256=_sha256(path), tensors=dict(tensors),
                   lokr_config=config)
