"""ACE-Step 1.5 Studio nodes (ComfyUI V3 API)."""

from __future__ import annotations

from .host import ComfyExtension, io
from .generate_nodes import Continue, Cover, Repaint, Text2Music
from .lm_nodes import DescribeAudio, FormatInput, LMThinking, SimpleMode
from .loader_node import LoadModel
from .lora_node import LoadLoRA
from .save_node import SaveAudio
from .track_nodes import AddTrack, CompleteTrack, ExtractTrack

NODE_PREFIX = "ACE15S_"
NODES: list[type[io.ComfyNode]] = [
    LoadModel, LMThinking, FormatInput, SimpleMode, Text2Music, Continue, Repaint, Cover, SaveAudio,
    ExtractTrack, AddTrack, CompleteTrack, DescribeAudio, LoadLoRA,
]


class ACEStepStudioExtension(ComfyExtension):
    async def on_load(self) -> None:
        from . import model_files

        model_files.register_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
