"""Former home of the safetensors readers; they live in acestep_core/checkpoints.py now."""

from .checkpoints import (  # noqa: F401  (re-exported for existing imports)
    check_safetensors_header,
    check_state_dict,
    iter_safetensors,
    read_config_json,
    read_safetensors,
    read_sharded_or_single,
    safetensors_keys,
    safetensors_metadata,
)
