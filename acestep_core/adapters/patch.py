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
import dataclasses
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

from ..constants import ADAPTER_SCALE_MAX
from ..errors import AdapterError
from .deps import require
from .formats import Adapter
from .naming import kohya_renames, linear_shapes, lycoris_name, lycoris_renames, official_module

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
    """An adapter at one strength (the user's scale; negative and above 1 allowed, up to ±ADAPTER_SCALE_MAX)."""

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
        # Far beyond any useful strength the song turns to NaN, and only saving it would say so.
        if abs(value) > ADAPTER_SCALE_MAX:
            raise AdapterError(f"adapter scale {value:g} for {self.adapter.name!r} is out of range: give "
                               f"-{ADAPTER_SCALE_MAX:g} to {ADAPTER_SCALE_MAX:g} (1 = as trained, 0 = off)")
        object.__setattr__(self, "scale", value)

    def describe(self) -> dict:
        return dict(self.adapter.describe(), scale=self.scale)


def _listed(items: list[str]) -> str:
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return "; ".join(items[:_MAX_LISTED]) + more


def _first_line(exc: BaseException) -> str:
    """A library error's first line: torch's state_dict errors run to one line per tensor."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def lora_for(adapter: Adapter, transformer: nn.Module) -> Adapter:
    """The adapter with ComfyUI's flat `lora_unet_` names resolved onto this decoder's modules."""
    if not adapter.flat_names:
        return adapter
    names = kohya_renames(transformer)
    modules = dict(transformer.named_modules())
    renames, problems, seen = {}, [], {}
    for module in adapter.lora_config.target_modules:
        found = names.get(module, [module] if module in modules else [])
        if len(found) != 1:
            problems.append(f"{module}: " + ("no such layer in this decoder" if not found else
                                             f"could be any of {', '.join(map(official_module, found))}"))
            continue
        ours = renames[module] = found[0]
        if ours in seen:
            raise AdapterError(f"layer {official_module(ours)} appears twice in {adapter.file_name} "
                               f"(as {seen[ours]} and as {module}); keep one of them")
        seen[ours] = module
    if problems:
        raise AdapterError(f"adapter {adapter.name!r} ({adapter.file_name}) does not fit this ACE-Step 1.5 "
                           f"decoder: {_listed(problems)}. Was it trained for another model or size?")
    config = copy.deepcopy(adapter.lora_config)
    config.target_modules = sorted(renames.values())
    config.rank_pattern = {re.escape(renames[k]): v for k, v in config.rank_pattern.items()}
    config.alpha_pattern = {re.escape(renames[k]): v for k, v in config.alpha_pattern.items()}
    tensors = {}
    for key, value in adapter.tensors.items():
        module, _, part = key.partition(".")
        tensors[f"{renames[module]}.{part}"] = value
    return dataclasses.replace(adapter, tensors=tensors, lora_config=config, flat_names=False)


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
    """The LoKr file's tensors renamed onto our modules; unknown modules and layers whose size the
    file's Kronecker factors do not give are refused by name."""
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
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in out.items():
        module, _, param = key.partition(".")
        layers.setdefault(module, {})[param] = value
    wrong = []
    for name, (out_features, in_features) in linear_shapes(transformer).items():
        shape = _kron_shape(layers.get(lycoris_name(name), {}))
        if shape is not None and shape != (out_features, in_features):
            wrong.append(f"{official_module(name)} (adapter [{shape[0]}, {shape[1]}], "
                         f"layer [{out_features}, {in_features}])")
    if wrong:
        raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}) does not fit this ACE-Step 1.5 "
                           f"decoder: {_others(wrong)}. Was it trained for another model or size?")
    return out


def _others(items: list[str]) -> str:
    more = f" and {len(items) - 2} other layer{'s' if len(items) > 3 else ''}" if len(items) > 2 else ""
    return ", ".join(items[:2]) + more


def _kron_shape(own: dict[str, torch.Tensor]):
    """(out, in) of the weight a LoKr layer's w1 ⊗ w2 makes; None when its factors are not plain."""
    def factor(n):
        if f"lokr_w{n}" in own:
            return tuple(own[f"lokr_w{n}"].shape)
        a, b = own.get(f"lokr_w{n}_a"), own.get(f"lokr_w{n}_b")
        return None if a is None or b is None else (a.shape[0], b.shape[-1])

    one, two = factor(1), factor(2)
    if one is None or two is None or len(one) != 2 or len(two) != 2 or "lokr_t2" in own:
        return None
    return one[0] * two[0], one[1] * two[1]


def _check_lokr_state(adapter: Adapter, net, tensors: dict[str, torch.Tensor], transformer: nn.Module) -> None:
    """The modules LyCORIS built from the file's config must take the file's tensors as they are."""
    # Each module's own state dict: the network registers its modules only when applied.
    expected = {f"{lora.lora_name}.{k}": tuple(v.shape) for lora in net.loras for k, v in lora.state_dict().items()}
    labels = {lycoris_name(n): official_module(n) for n, _ in transformer.named_modules() if n}

    def label(key):
        module, _, param = key.partition(".")
        return f"{labels.get(module, module)}.{param}"

    wrong = [f"{label(k)} [{', '.join(map(str, v.shape))}] in the file, [{', '.join(map(str, expected[k]))}] "
             "from the config" for k, v in tensors.items() if k in expected and tuple(v.shape) != expected[k]]
    wrong += [f"{label(k)} missing" for k in expected if k not in tensors and not k.endswith(".scalar")]
    wrong += [f"{label(k)} not in the config's modules" for k in tensors if k not in expected]
    if wrong:
        raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}) does not match its own config "
                           f"(metadata 'lokr_config'): {_others(wrong)}")


def check_adapter_fits(transformer: nn.Module, adapter: Adapter) -> None:
    """Raise AdapterError unless `adapter` fits this decoder; the decoder is not touched."""
    if adapter.kind == "lora":
        check_lora_fits(lora_for(adapter, transformer), linear_shapes(transformer))
        return
    tensors = lokr_tensors_for(adapter, transformer)
    net = build_lokr_network(transformer, adapter, tensors)  # built, never applied
    _check_lokr_state(adapter, net, tensors, transformer)


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
                    lora = lora_for(use.adapter, self.transformer)
                    check_lora_fits(lora, shapes)
                    plans.append((dataclasses.replace(use, adapter=lora), None))
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
                raise AdapterError(f"{label} could not be applied to this decoder: {_first_line(exc)}") from exc

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
        _check_lokr_state(use.adapter, net, tensors, self.transformer)
        net.apply_to()
        self._lokr_nets.append(net)
        net.load_state_dict(tensors, strict=False)
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

    targets = sorted({key.split(".", 1)[0] for key in tensors})
    lycoris_logger = require("lycoris.logging").logger
    if adapter.lokr_config is None:
        # No config (ComfyUI's dotted LoKr files): LyCORIS builds each module from its tensors.
        with _LYCORIS_LOCK:
            level = lycoris_logger.level
            lycoris_logger.setLevel(max(level, logging.WARNING))
            try:
                net, _ = wrapper.create_lycoris_from_weights(1.0, None, transformer, weights_sd=tensors)
            except (RuntimeError, TypeError, ValueError) as exc:
                raise AdapterError(f"LoKr adapter {adapter.name!r} ({adapter.file_name}): LyCORIS cannot build "
                                   f"its layers from the weights: {_first_line(exc)}") from None
            finally:
                lycoris_logger.setLevel(level)
        return _all_built(adapter, net, targets)
    config = dict(OFFICIAL_LOKR_DEFAULTS)
    config.update({k: v for k, v in adapter.lokr_config.items() if k in OFFICIAL_LOKR_DEFAULTS})
    names = {lycoris_name(name): name for name, _ in transformer.named_modules() if name}
    preset = {"enable_conv": True, "target_module": [], "module_algo_map": {}, "name_algo_map": {},
              "use_fnmatch": False, "lora_prefix": "lycoris", "exclude_name": [],
              "target_name": [re.escape(names[t]) + "$" for t in targets]}
    saved = {attr: getattr(LycorisNetwork, attr) for attr in (
        "ENABLE_CONV", "TARGET_REPLACE_MODULE", "TARGET_REPLACE_NAME", "LORA_PREFIX", "MODULE_ALGO_MAP",
        "NAME_ALGO_MAP", "USE_FNMATCH", "TARGET_EXCLUDE_NAME")}

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
    return _all_built(adapter, net, targets)


def _all_built(adapter: Adapter, net, targets: list[str]):
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
