"""Patching adapters into the DiT decoder for one generation, and taking them out again.

LoRA layers come from peft (`inject_adapter_in_model`, one peft adapter per loaded adapter, each
with its own scale through diffusers' `set_weights_and_activate_adapters`); LoKr modules come
from LyCORIS (`create_lycoris` with the file's own config, as the official handler builds them).
Neither merges anything into the base weights, so taking the adapters out (peft layers replaced
by the very Linear they wrapped, LyCORIS forwards restored) gives back the base decoder bit for
bit. Every fit check runs before the decoder is touched, and a failure while patching undoes
what was patched, so the decoder is never left half-adapted.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import threading
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import AdapterError
from .deps import require
from .formats import Adapter
from .naming import linear_shapes, lycoris_name, lycoris_renames, official_module

# The official LoKr training config's defaults (used for keys its metadata leaves out).
OFFICIAL_LOKR_DEFAULTS = {
    "linear_dim": 64, "linear_alpha": 128, "factor": -1, "decompose_both": False, "use_tucker": False,
    "use_scalar": False, "weight_decompose": False, "full_matrix": False, "bypass_mode": False,
    "rs_lora": False, "unbalanced_factorization": False,
}
_PRESET_NAME = "acestep15-lokr-file-modules"
# LyCORIS keeps its target preset on the network class: one build at a time.
_LYCORIS_LOCK = threading.Lock()
_MAX_LISTED = 5


@dataclass(frozen=True)
class ScaledAdapter:
    """An adapter at one strength (the user's scale; the engine allows negative and above 1)."""

    adapter: Adapter
    scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.adapter, Adapter):
            raise AdapterError(f"expected a loaded Adapter, got {type(self.adapter).__name__}")
        try:
            value = float(self.scale)
        except (TypeError, ValueError):
            raise AdapterError(f"adapter scale must be a number, got {self.scale!r}") from None
        if not math.isfinite(value):
            raise AdapterError(f"adapter scale must be finite, got {self.scale!r}")
        object.__setattr__(self, "scale", value)

    def describe(self) -> dict:
        return dict(self.adapter.describe(), scale=self.scale)


def _listed(items: list[str]) -> str:
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return "; ".join(items[:_MAX_LISTED]) + more


def check_lora_fits(adapter: Adapter, shapes: dict[str, tuple[int, int]]) -> None:
    """Every LoRA layer must sit on a Linear of this decoder with matching sizes."""
    problems = []
    for module in adapter.lora_config.target_modules:
        label = official_module(module)
        if module not in shapes:
            problems.append(f"{label}: no such layer in this decoder")
            continue
        out_features, in_features = shapes[module]
        a = adapter.tensors.get(f"{module}.lora_A.weight")
        b = adapter.tensors.get(f"{module}.lora_B.weight")
        if a is None or b is None:
            problems.append(f"{label}: lora_A and lora_B must both be present")
            continue
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_features or b.shape[0] != out_features \
                or a.shape[0] != b.shape[1]:
            problems.append(f"{label}: adapter A {list(a.shape)} / B {list(b.shape)} vs layer "
                            f"[out {out_features}, in {in_features}]")
    if problems:
        raise AdapterError(f"adapter {adapter.name!r} ({adapter.file_name}) does not fit this ACE-Step 1.5 "
                           f"decoder: {_listed(problems)}. Was it trained for another model or size?")


def lokr_tensors_for(adapter: Adapter, transformer: nn.Module) -> dict[str, torch.Tensor]:
    """The LoKr file's tensors renamed onto our modules; unknown modules are refused by name."""
    renames = lycoris_renames(transformer)
    out, unknown = {}, []
    for key, value in adapter.tensors.items():
        module, _, param = key.partition(".")
        if module not in renames:
            unknown.append(module)
            continue
        out[f"{renames[module]}.{param}"] = value
    if unknown:
        raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}) does not fit this ACE-Step 1.5 "
                           f"decoder: no layer for {_listed(sorted(set(unknown)))}")
    return out


def check_adapter_fits(transformer: nn.Module, adapter: Adapter) -> None:
    """Raise AdapterError unless `adapter` fits this decoder; the decoder is not touched."""
    if adapter.kind == "lora":
        check_lora_fits(adapter, linear_shapes(transformer))
        return
    tensors = lokr_tensors_for(adapter, transformer)
    net = build_lokr_network(transformer, adapter, tensors)  # built, never applied
    for lora in net.loras:
        prefix = lora.lora_name + "."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            result = lora.load_state_dict(own, strict=False)
        except RuntimeError as exc:
            raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}) does not match its own "
                               f"config (metadata 'lokr_config'): {exc}") from None
        missing = [k for k in result.missing_keys if k != "scalar"]
        if missing or result.unexpected_keys:
            raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}) does not match its own "
                               f"config (metadata 'lokr_config') at {lora.lora_name}: missing {missing}, "
                               f"unexpected {list(result.unexpected_keys)}")


class DecoderAdapters:
    """The adapters patched into one decoder while a generation runs."""

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer
        self._lock = threading.RLock()
        self._lokr_nets: list = []
        self._lora_slots: list[str] = []
        self._had_peft_config = False

    @contextmanager
    def applied(self, adapters: Sequence[ScaledAdapter]) -> Iterator[None]:
        """Patch `adapters` in (in order, each at its scale) for the body; always taken out after."""
        with self._lock:
            if not adapters:
                yield
                return
            self.apply(adapters)
            try:
                yield
            finally:
                self.remove()

    @property
    def active(self) -> bool:
        return bool(self._lokr_nets or self._lora_slots)

    def apply(self, adapters: Sequence[ScaledAdapter]) -> None:
        with self._lock:
            if self.active:
                raise RuntimeError("adapters are already patched into this decoder; remove() them first")
            # 1. every check before the decoder is touched
            shapes = linear_shapes(self.transformer)
            plans = []
            for use in adapters:
                if not isinstance(use, ScaledAdapter):
                    raise AdapterError(f"expected a ScaledAdapter, got {type(use).__name__}")
                if use.adapter.kind == "lokr":
                    plans.append((use, lokr_tensors_for(use.adapter, self.transformer)))
                else:
                    check_lora_fits(use.adapter, shapes)
                    plans.append((use, None))
            # 2. patch; anything failing undoes everything
            current = None
            try:
                for use, tensors in plans:
                    if tensors is not None:
                        current = use.adapter
                        self._apply_lokr(use, tensors)
                slots, scales = [], []
                for use, tensors in plans:
                    if tensors is None:
                        current = use.adapter
                        slots.append(self._inject_lora(use.adapter))
                        scales.append(use.scale)
                current = None
                if slots:
                    from diffusers.utils.peft_utils import set_weights_and_activate_adapters

                    set_weights_and_activate_adapters(self.transformer, slots, scales)
                    for name, param in self.transformer.named_parameters():
                        if ".lora_" in name:
                            param.requires_grad_(False)
            except BaseException as exc:
                self.remove()
                if isinstance(exc, AdapterError) or not isinstance(exc, Exception):
                    raise
                label = f"adapter {current.name!r} ({current.file_name})" if current else "the adapters"
                raise AdapterError(f"{label} could not be applied to this decoder: {exc}") from exc

    def remove(self) -> None:
        """Take every adapter out; the decoder is the base decoder again, bit for bit."""
        with self._lock:
            if self._lora_slots:
                from diffusers.utils.peft_utils import recurse_remove_peft_layers

                recurse_remove_peft_layers(self.transformer)
                if not self._had_peft_config:
                    self.transformer.__dict__.pop("peft_config", None)
                self._lora_slots = []
            while self._lokr_nets:
                net = self._lokr_nets.pop()
                net.restore()
                for lora in net.loras:
                    _drop_bound_forward(lora.org_module[0])

    # ------------------------------------------------------------------ LoRA (peft)

    def _inject_lora(self, adapter: Adapter) -> str:
        peft = require("peft")
        inject_adapter_in_model, set_peft_model_state_dict = peft.inject_adapter_in_model, peft.set_peft_model_state_dict

        if not self._lora_slots:
            self._had_peft_config = "peft_config" in self.transformer.__dict__
        # peft adapter names are module keys: slots, not user names (which may hold dots).
        slot = f"acestep_adapter_{len(self._lora_slots)}"
        self._lora_slots.append(slot)
        # peft rewrites the config it is given (target names shortened): the adapter keeps its own.
        with warnings.catch_warnings():
            # Stacking is intended here: peft warns about a second adapter on any model ("Make sure to
            # know what you are doing!"), which a user stacking --lora flags should not have to read.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            inject_adapter_in_model(copy.deepcopy(adapter.lora_config), self.transformer, adapter_name=slot)
        result = set_peft_model_state_dict(self.transformer, adapter.tensors, adapter_name=slot)
        unexpected = [k for k in result.unexpected_keys if slot in k or ".lora_" in k]
        missing = [k for k in result.missing_keys if f".{slot}." in k or k.endswith(f".{slot}")]
        if unexpected or missing:
            raise AdapterError(f"adapter {adapter.name!r} ({adapter.file_name}) does not fit this decoder: "
                               f"unused tensors {unexpected[:_MAX_LISTED]}, unfilled layers {missing[:_MAX_LISTED]}")
        return slot

    # ------------------------------------------------------------------ LoKr (LyCORIS)

    def _apply_lokr(self, use: ScaledAdapter, tensors: dict[str, torch.Tensor]) -> None:
        net = build_lokr_network(self.transformer, use.adapter, tensors)
        net.apply_to()
        self._lokr_nets.append(net)
        result = net.load_state_dict(tensors, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith(".scalar")]
        if missing or result.unexpected_keys:
            raise AdapterError(
                f"LoKr adapter {use.adapter.name!r} ({use.adapter.file_name}) does not match its own config "
                f"(metadata 'lokr_config'): missing {missing[:_MAX_LISTED]}, "
                f"unexpected {list(result.unexpected_keys)[:_MAX_LISTED]}")
        weight = next(p for p in self.transformer.parameters())
        net.to(device=weight.device, dtype=weight.dtype)
        net.requires_grad_(False)
        net.set_multiplier(use.scale)


def build_lokr_network(transformer: nn.Module, adapter: Adapter, tensors: dict[str, torch.Tensor]):
    """The official handler's `create_lycoris(...)` call with the file's config, targeting exactly
    the layers the file holds (by our names)."""
    create_lycoris = require("lycoris").create_lycoris
    wrapper = require("lycoris.wrapper")
    PRESET, LycorisNetwork = wrapper.PRESET, wrapper.LycorisNetwork

    config = dict(OFFICIAL_LOKR_DEFAULTS)
    config.update({k: v for k, v in (adapter.lokr_config or {}).items() if k in OFFICIAL_LOKR_DEFAULTS})
    targets = sorted({key.split(".", 1)[0] for key in tensors})
    names = {lycoris_name(name): name for name, _ in transformer.named_modules() if name}
    preset = {"enable_conv": True, "target_module": [], "module_algo_map": {}, "name_algo_map": {},
              "use_fnmatch": False, "lora_prefix": "lycoris", "exclude_name": [],
              "target_name": [re.escape(names[t]) + "$" for t in targets]}
    saved = {attr: getattr(LycorisNetwork, attr) for attr in (
        "ENABLE_CONV", "TARGET_REPLACE_MODULE", "TARGET_REPLACE_NAME", "LORA_PREFIX", "MODULE_ALGO_MAP",
        "NAME_ALGO_MAP", "USE_FNMATCH", "TARGET_EXCLUDE_NAME")}
    lycoris_logger = require("lycoris.logging").logger

    with _LYCORIS_LOCK:
        PRESET[_PRESET_NAME] = preset
        level = lycoris_logger.level
        lycoris_logger.setLevel(max(level, logging.WARNING))  # its per-build INFO lines are noise here
        try:
            net = create_lycoris(
                transformer, 1.0, linear_dim=config["linear_dim"], linear_alpha=config["linear_alpha"],
                algo="lokr", factor=config["factor"], decompose_both=config["decompose_both"],
                use_tucker=config["use_tucker"], use_scalar=config["use_scalar"], full_matrix=config["full_matrix"],
                bypass_mode=config["bypass_mode"], rs_lora=config["rs_lora"],
                unbalanced_factorization=config["unbalanced_factorization"], dora_wd=config["weight_decompose"],
                preset=_PRESET_NAME, warn_on_unmatched=False)
        finally:
            lycoris_logger.setLevel(level)
            PRESET.pop(_PRESET_NAME, None)
            for attr, value in saved.items():
                setattr(LycorisNetwork, attr, value)
    built = {lora.lora_name for lora in net.loras}
    if built != set(targets):
        raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}): LyCORIS could not adapt "
                           f"{_listed(sorted(set(targets) - built))}")
    return net


def _drop_bound_forward(module: nn.Module) -> None:
    """LyCORIS leaves the original bound `forward` as an instance attribute; the class has it."""
    bound = module.__dict__.get("forward")
    if bound is not None and getattr(bound, "__func__", None) is type(module).forward \
            and getattr(bound, "__self__", None) is module:
        del module.__dict__["forward"]


_HOSTS: "weakref.WeakKeyDictionary[nn.Module, DecoderAdapters]" = weakref.WeakKeyDictionary()
_HOSTS_LOCK = threading.Lock()


def decoder_adapters(transformer: nn.Module) -> DecoderAdapters:
    """The one DecoderAdapters of a decoder (shared by every pipeline and node using it)."""
    with _HOSTS_LOCK:
        host = _HOSTS.get(transformer)
        if host is None:
            host = _HOSTS[transformer] = DecoderAdapters(transformer)
        return host
