"""Command-line flags derived from the request schema (acestep_core/schema.py): one flag per field.

The flag is the field's name in kebab-case (`key_scale` -> `--key-scale`), its default the CLI's
default from the schema, its help the schema's help with the range; so no flag can drift from the
REST field or the node widget of the same name. Values are range-checked by the engine's request
(`GenerationRequest.validate`, `PlanOptions.validate`) with the same messages for every door.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable, Optional

from .. import schema
from ..switches import parse_switch

# Switches: present = on (the LM stages a user asks for).
SWITCHES = ("thinking", "sample_mode", "use_format")
# Fields whose choices argparse can check as given (time_signature also takes "4/4" and is checked later).
ARGPARSE_CHOICES = ("infer_method", "chunk_mask_mode", "repaint_mode", "task_type", "audio_format")
_TYPES = {"int": int, "float": float}


def parse_bool(text: str) -> bool:
    parsed = parse_switch(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return parsed


def _help(spec: schema.Field, default: Any) -> str:
    text = spec.help
    if spec.low is not None and spec.high is not None and spec.kind in ("int", "float") and not spec.choices:
        text += f" [{spec.low:g} to {spec.high:g}]"
    if spec.name in SWITCHES:
        return text
    shown = "unset" if default in (None, "") else default
    return f"{text} (default: {shown})"


def add_fields(group, names: Iterable[str], door: str = "cli", *, defaults: Optional[dict] = None,
               legacy: Optional[dict] = None) -> None:
    """Add one flag per schema field. `defaults` overrides a default for this command (the LM commands
    leave every meta unset); `legacy` maps a field to a hidden older flag that still works."""
    defaults = defaults or {}
    legacy = legacy or {}
    for name in names:
        spec = schema.spec(name)
        default = defaults.get(name, spec.default_for(door))
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": _help(spec, default)}
        if name in SWITCHES:
            kwargs.update(action="store_true")
        elif spec.kind == "bool":
            kwargs.update(type=parse_bool, metavar="BOOL")
        else:
            if spec.kind in _TYPES:
                kwargs["type"] = _TYPES[spec.kind]
            if name in ARGPARSE_CHOICES:
                kwargs["choices"] = list(schema.choices_for(name, door))
        group.add_argument(spec.flag, **kwargs)
        if name in legacy:
            hidden = {k: v for k, v in kwargs.items() if k in ("dest", "type", "choices", "action")}
            group.add_argument(legacy[name], help=argparse.SUPPRESS, default=argparse.SUPPRESS, **hidden)


def values_of(args: argparse.Namespace, target: str, door: str = "cli") -> dict[str, Any]:
    """{field: value} of the schema fields for `target` ("request" / "plan") that this command has."""
    return {f.name: getattr(args, f.name) for f in schema.fields_for(target, door) if hasattr(args, f.name)}


def request_field_names(door: str = "cli") -> list[str]:
    return [f.name for f in schema.fields_for("request", door)]


def plan_field_names(door: str = "cli") -> list[str]:
    return [f.name for f in schema.fields_for("plan", door)]
