"""The plan the 5 Hz LM writes for a song, in a form the engine's generate accepts directly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class Plan:
    caption: Optional[str] = None
    lyrics: Optional[str] = None
    bpm: Optional[int] = None
    keyscale: Optional[str] = None
    timesignature: Optional[str] = None
    duration: Optional[float] = None
    language: Optional[str] = None
    audio_codes: list[int] = field(default_factory=list)
    cot_text: str = ""
    lm_seed: Optional[int] = None

    def audio_code_string(self) -> str:
        return "".join(f"<|audio_code_{c}|>" for c in self.audio_codes)

    def to_dict(self) -> dict:
        return asdict(self)
