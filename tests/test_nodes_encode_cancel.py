"""Inside ComfyUI the VAE encode of a node's source audio shows on the node's bar and stops on Cancel
before any diffusion step: Repaint, Continue, Cover and Describe Audio (the track nodes share
Repaint's path)."""

from __future__ import annotations

import json

import pytest

import nodes_harness as h
from nodes_models import node_env, shorten_for_tiny


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_dir, comfy_tiny_dir):
    node_map, dirs, _ = node_env(tmp_path_factory.mktemp("comfy"), tiny_dir, comfy_tiny_dir)
    return node_map, dirs


@pytest.mark.parametrize("name", ["repaint", "continue", "cover", "describe_and_rerender"])
def test_cancel_while_the_source_encodes_stops_the_node_before_any_step(env, monkeypatch, name):
    import comfy.model_management as mm
    import comfy.utils

    node_map, _ = env
    prompt = shorten_for_tiny(json.loads((h.REPO_ROOT / "workflows" / "api" / f"{name}.api.json").read_text()))
    comfy.utils.updates.clear()
    # The user presses Cancel as the first bar appears: the encode's start, (0 tiles, 1).
    monkeypatch.setattr(comfy.utils, "hook", lambda value, total: mm.interrupt_current_processing(True))
    try:
        with pytest.raises(mm.InterruptProcessingException):
            h.execute_prompt(prompt, node_map)
        assert comfy.utils.updates == [(0, 1)]  # no tile finished, no LM token, no diffusion step
        assert not mm.processing_interrupted()  # taken, as ComfyUI's own interrupt is
    finally:
        mm.interrupt_current_processing(False)
