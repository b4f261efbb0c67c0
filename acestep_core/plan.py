"""The plan the 5 Hz LM writes for a song, with the request's field names.

How a plan fills a request is `acestep_core.planning.fill_request` (one rule for every door).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

# The LM's own spellings (its CoT writes `keyscale:`, `timesignature:` ...), kept readable and writable
# on a Plan for scripts written against them.
LEGACY_NAMES = {"keyscale": "key_scale", "timesignature": "time_signature", "duration": "audio_duration",
                "language": "vocal_language"}


@dataclass
class Plan:
    caption: Optional[str] = None
    lyrics: Optional[str] = None
    bpm: Optional[int] = None
    key_scale: Optional[str] = None
    time_signature: Optional[str] = None
    audio_duration: Optional[float] = None
    vocal_language: Optional[str] = None
    audio_codes: list[int] = field(default_factory=list)
    cot_text: str = ""
    lm_seed: Optional[int] = None

    def audio_code_string(self) -> str:
        from .codes import format_audio_codes

        return format_audio_codes(self.audio_codes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """A plan from `to_dict` output, also accepting the LM's spellings (keyscale, duration, ...)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {}
        for key, value in (data or {}).items():
            key = LEGACY_NAMES.get(key, key)
            if key in known:
                values[key] = value
        return cls(**values)


def _legacy(name: str) -> property:
    def get(self):
        return getattr(self, name)

    def set(self, value):
        setattr(self, name, value)

    return property(get, set, doc=f"The LM's spelling of `{name}`.")


for _old, _new in LEGACY_NAMES.items():
    setattr(Plan, _old, _legacy(_new))
