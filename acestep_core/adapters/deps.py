"""The adapter libraries, imported on first use with an error that says how to install them."""

from __future__ import annotations

import importlib

from ..errors import AdapterError

_PACKAGES = {"peft": "peft", "lycoris": "lycoris-lora"}


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise AdapterError(f"adapters need the {_PACKAGES.get(top, top)} package, which is not installed "
                           f"({exc}); install the pack's requirements: pip install -r requirements.txt") from None
