"""Test stand-in for comfy_api.latest (see tests/fake_comfyui/README.md)."""

from abc import ABC, abstractmethod

from . import _io as io  # noqa: F401
from . import _ui as ui  # noqa: F401


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        pass

    @abstractmethod
    async def get_node_list(self):
        ...
