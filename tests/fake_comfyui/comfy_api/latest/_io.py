"""Test stand-in for comfy_api.latest.io: schema builders that record their kwargs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace
from typing import Any


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


class _Input:
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, **options):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.options = options

    @property
    def default(self):
        return self.options.get("default")


class _Output:
    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id = id
        self.display_name = display_name or id
        self.tooltip = tooltip
        self.is_output_list = is_output_list


def _comfytype(io_type: str, widget: bool):
    class Input(_Input):
        pass

    class Output(_Output):
        pass

    Input.io_type = Output.io_type = io_type
    Input.is_widget = widget
    return type(io_type, (), {"io_type": io_type, "Input": Input, "Output": Output})


Int = _comfytype("INT", True)
Float = _comfytype("FLOAT", True)
String = _comfytype("STRING", True)
Boolean = _comfytype("BOOLEAN", True)
Combo = _comfytype("COMBO", True)
Audio = _comfytype("AUDIO", False)
Latent = _comfytype("LATENT", False)


def Custom(io_type: str):
    return _comfytype(io_type, False)


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    not_idempotent: bool = False

    def validate(self):
        ids = [i.id for i in self.inputs]
        out_ids = [o.id for o in self.outputs]
        if len(set(ids)) != len(ids) or len(set(out_ids)) != len(out_ids):
            raise ValueError(f"{self.node_id}: input / output ids must be unique")


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand=None, block_execution=None):
        self.args = args
        self.ui = ui

    @property
    def result(self):
        return self.args if self.args else None


class ComfyNode:
    hidden = SimpleNamespace(prompt=None, extra_pnginfo=None, unique_id=None)

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError
