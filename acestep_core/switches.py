"""The yes / no words every boolean the engine reads understands: ACESTEP_* environment flags, CLI
`true` / `false` values and REST request booleans (any case, surrounding spaces ignored)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from .errors import InputError

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "off"})


def parse_switch(value: Any) -> Optional[bool]:
    """True or False for a yes / no word, None for anything else."""
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


def env_flag(name: str, default: Optional[bool], hint: str, env: Optional[Mapping[str, str]] = None) -> Optional[bool]:
    """Environment flag `name`: `default` when unset, empty or `auto`, else its yes / no word.

    Any other value is an InputError ending in `hint` (what to set instead), so a typo never turns
    a switch silently on or off."""
    raw = ((os.environ if env is None else env).get(name) or "").strip()
    if not raw or raw.lower() == "auto":
        return default
    parsed = parse_switch(raw)
    if parsed is None:
        raise InputError(f"{name}={raw!r} is not understood: {hint}")
    return parsed
