"""Stacking LoRAs is intended: peft's 'multiple adapters' UserWarning does not reach the user."""

import warnings

import torch

from engine_helpers import tiny_pipeline

from acestep_core.adapters import ScaledAdapter, decoder_adapters, load_adapter


def test_two_loras_stack_without_a_peft_warning(tiny_dir):
    transformer = tiny_pipeline().dit.transformer
    uses = [ScaledAdapter(load_adapter(tiny_dir / "loras" / "lora_a"), 1.0),
            ScaledAdapter(load_adapter(tiny_dir / "loras" / "lora_b"), 0.5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with decoder_adapters(transformer).applied(uses), torch.no_grad():
            pass
    assert [str(w.message) for w in caught if "peft_config" in str(w.message)] == []
