"""Fixed vocabularies, instruction strings and token ids of the ACE-Step 1.5 5 Hz LM (docs/lm.md#token-ids)."""

from __future__ import annotations

DEFAULT_LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
DEFAULT_LM_UNDERSTAND_INSTRUCTION = (
    "Understand the given musical conditions and describe the audio semantics accordingly:"
)
DEFAULT_LM_INSPIRED_INSTRUCTION = (
    "Expand the user's input into a more detailed and specific musical description:"
)
DEFAULT_LM_REWRITE_INSTRUCTION = (
    "Format the user's input into a more detailed and specific musical description:"
)
DEFAULT_NEGATIVE_PROMPT = "NO USER INPUT"

VALID_LANGUAGES = [
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en",
    "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu", "id",
    "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no",
    "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw",
    "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh",
    "unknown",
]

KEYSCALE_NOTES = ["A", "B", "C", "D", "E", "F", "G"]
KEYSCALE_ACCIDENTALS = ["", "#", "b", "♯", "♭"]
KEYSCALE_MODES = ["major", "minor"]
VALID_KEYSCALES = [f"{n}{a} {m}" for n in KEYSCALE_NOTES for a in KEYSCALE_ACCIDENTALS for m in KEYSCALE_MODES]

BPM_MIN, BPM_MAX = 30, 300
DURATION_MIN, DURATION_MAX = 10, 600
VALID_TIME_SIGNATURES = [2, 3, 4, 6]

CODES_PER_SECOND = 5
AUDIO_CODE_BASE = 151669  # id of <|audio_code_0|>
NUM_VALID_CODES = 64000  # codes 0..63999; the tokenizer has 65535 slots
NUM_CODE_SLOTS = 65535

ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645  # EOS of every LM call
THINK_ID = 151667
THINK_END_ID = 151668
