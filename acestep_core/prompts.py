"""Exact prompt templates and instruction strings of the official implementation (docs/tasks.md#text-templates)."""

from __future__ import annotations

from typing import Optional

TEXT2MUSIC_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
REPAINT_INSTRUCTION = "Repaint the mask area based on the given conditions:"
# The base model's track tasks; a named track is written in upper case, several joined by " | ".
EXTRACT_INSTRUCTION = "Extract the {track} track from the audio:"
EXTRACT_DEFAULT_INSTRUCTION = "Extract the track from the audio:"
LEGO_INSTRUCTION = "Generate the {track} track based on the audio context:"
LEGO_DEFAULT_INSTRUCTION = "Generate the track based on the audio context:"
COMPLETE_INSTRUCTION = "Complete the input track with {track}:"
COMPLETE_DEFAULT_INSTRUCTION = "Complete the input track:"

TASK_INSTRUCTIONS = {
    "text2music": TEXT2MUSIC_INSTRUCTION,
    "cover": COVER_INSTRUCTION,
    "repaint": REPAINT_INSTRUCTION,
    "extract": EXTRACT_DEFAULT_INSTRUCTION,
    "lego": LEGO_DEFAULT_INSTRUCTION,
    "complete": COMPLETE_DEFAULT_INSTRUCTION,
}
TRACK_TASKS = ("extract", "lego", "complete")
TRACK_NAMES = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion", "keyboard", "guitar", "bass", "drums",
    "backing_vocals", "vocals",
)
_TRACK_TEMPLATES = {
    "extract": (EXTRACT_INSTRUCTION, EXTRACT_DEFAULT_INSTRUCTION),
    "lego": (LEGO_INSTRUCTION, LEGO_DEFAULT_INSTRUCTION),
    "complete": (COMPLETE_INSTRUCTION, COMPLETE_DEFAULT_INSTRUCTION),
}

CAPTION_TEMPLATE = "# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}<|endoftext|>\n"
LYRICS_TEMPLATE = "# Languages\n{language}\n\n# Lyric\n{lyrics}<|endoftext|>"

CAPTION_MAX_TOKENS = 256
LYRICS_MAX_TOKENS = 2048

VALID_LANGUAGES = (
    "ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no pa pl pt "
    "ro ru sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown"
).split()


def _meta_value(value) -> str:
    if value is None:
        return "N/A"
    text = str(value).strip()
    return text if text else "N/A"


def metas_string(bpm=None, time_signature=None, key_scale=None, duration: Optional[float] = None) -> str:
    seconds = 30 if duration is None else int(duration)
    return (
        f"- bpm: {_meta_value(bpm)}\n"
        f"- timesignature: {_meta_value(time_signature)}\n"
        f"- keyscale: {_meta_value(key_scale)}\n"
        f"- duration: {seconds} seconds\n"
    )


def caption_prompt(instruction: str, caption: str, metas: str) -> str:
    return CAPTION_TEMPLATE.format(instruction=instruction, caption=caption, metas=metas)


def lyrics_prompt(lyrics: str, language: str) -> str:
    return LYRICS_TEMPLATE.format(language=language, lyrics=lyrics)


def track_instruction(task: str, tracks: list[str]) -> str:
    """The DiT instruction of a track task: extract / lego name one track, complete names any number."""
    named, default = _TRACK_TEMPLATES[task]
    if not tracks:
        return default
    return named.format(track=" | ".join(t.upper() for t in tracks))
