"""Prompt builders, CoT formatting and output parsing of the 5 Hz LM (docs/lm.md#two-phase-generation).

The strings are rendered with the standard Qwen3 chat template (the `chat_template.jinja` of the
official LM folders). Only the message shapes the planner uses occur, so the template is
reproduced here directly: the same text for the official folders and for ComfyUI's repacked
files, which carry no template.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import yaml

from .constants import (
    DEFAULT_LM_INSPIRED_INSTRUCTION,
    DEFAULT_LM_INSTRUCTION,
    DEFAULT_LM_REWRITE_INSTRUCTION,
    DEFAULT_LM_UNDERSTAND_INSTRUCTION,
    DEFAULT_NEGATIVE_PROMPT,
)

COT_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")


def render_chat(messages: list[dict], add_generation_prompt: bool) -> str:
    """Qwen3 chat template for system / user / final-assistant messages."""
    out = []
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role != "assistant":
            out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
            continue
        reasoning = ""
        if "</think>" in content:
            reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
        if index == last or reasoning:
            body = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
        else:
            body = content
        out.append(f"<|im_start|>assistant\n{body}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _system(instruction: str) -> dict:
    return {"role": "system", "content": f"# Instruction\n{instruction}\n\n"}


def has_meaningful_negative_prompt(negative_prompt: Optional[str]) -> bool:
    return bool(negative_prompt and negative_prompt.strip() and negative_prompt.strip() != DEFAULT_NEGATIVE_PROMPT)


def cot_prompt(caption: str, lyrics: str) -> str:
    """Phase 1 (chain of thought) prompt."""
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    return render_chat([_system(DEFAULT_LM_INSTRUCTION), {"role": "user", "content": user}], True)


def cot_uncond_prompt(lyrics: str, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT) -> str:
    """Phase 1 unconditional prompt: the caption is dropped or replaced by a real negative prompt."""
    if has_meaningful_negative_prompt(negative_prompt):
        user = f"# Caption\n{negative_prompt}\n\n# Lyric\n{lyrics}\n"
    else:
        user = f"# Lyric\n{lyrics}\n"
    return render_chat([_system(DEFAULT_LM_INSTRUCTION), {"role": "user", "content": user}], True)


def codes_prompt(caption: str, lyrics: str, cot_text: str) -> str:
    """Phase 2 prompt: the CoT as a finished assistant turn; the model continues after `<|im_end|>\\n`."""
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    text = render_chat(
        [_system(DEFAULT_LM_INSTRUCTION), {"role": "user", "content": user}, {"role": "assistant", "content": cot_text}],
        False,
    )
    return text if text.endswith("\n") else text + "\n"


def codes_uncond_prompt(caption: str, lyrics: str, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT) -> str:
    """Phase 2 unconditional prompt: empty CoT; the caption is replaced only by a real negative prompt."""
    caption_for_prompt = negative_prompt if has_meaningful_negative_prompt(negative_prompt) else caption
    return codes_prompt(caption_for_prompt, lyrics, "<think>\n</think>")


def format_prompt(caption: str, lyrics: str) -> str:
    """Format / rewrite prompt (no trailing newline after the lyrics)."""
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}"
    return render_chat([_system(DEFAULT_LM_REWRITE_INSTRUCTION), {"role": "user", "content": user}], True)


def inspiration_prompt(query: str, instrumental: bool) -> str:
    """Create-sample (simple mode) prompt."""
    user = f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}"
    return render_chat([_system(DEFAULT_LM_INSPIRED_INSTRUCTION), {"role": "user", "content": user}], True)


def understand_prompt(audio_code_string: str) -> str:
    """Codes → description prompt."""
    return render_chat(
        [_system(DEFAULT_LM_UNDERSTAND_INSTRUCTION), {"role": "user", "content": audio_code_string}], True
    )


def format_metadata_as_cot(metadata: dict[str, Any]) -> str:
    """`<think>\\n{yaml}\\n</think>` with sorted keys; digit strings become ints, `3/4` becomes `3`."""
    items = {}
    for key in COT_FIELDS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
            value = value.split("/")[0]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        items[key] = value
    cot_yaml = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{cot_yaml}\n</think>"


def postprocess_caption(caption: str) -> str:
    """Join a YAML multi-line caption into one line."""
    if not caption:
        return caption
    return " ".join(line.strip() for line in caption.split("\n") if line.strip())


_CODE_RE = re.compile(r"<\|audio_code_(\d+)\|>")


def parse_lm_output(text: str) -> tuple[dict[str, Any], list[int]]:
    """Metadata from the `key: value` lines of the CoT (multi-line values joined) and the audio codes."""
    codes = [int(c) for c in _CODE_RE.findall(text)]
    metadata: dict[str, Any] = {}
    match = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    reasoning = match.group(1).strip() if match else None
    if not reasoning:
        reasoning = (text.split("<|audio_code_")[0] if "<|audio_code_" in text else text).strip()
    key: Optional[str] = None
    lines: list[str] = []

    def save() -> None:
        nonlocal key, lines
        if key and lines:
            value = "\n".join(lines)
            if key in ("bpm", "duration"):
                try:
                    metadata[key] = int(value.strip())
                except ValueError:
                    metadata[key] = value.strip()
            elif key == "caption":
                metadata["caption"] = postprocess_caption(value)
            elif key in ("genres", "keyscale", "language", "timesignature"):
                metadata[key] = value.strip()
        key, lines = None, []

    for line in reasoning.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            save()
            name, first = line.split(":", 1)
            key = name.strip().lower()
            if first.strip():
                lines.append(first)
        elif line.startswith((" ", "\t")) and key:
            lines.append(line)
    save()
    return metadata, codes


def extract_lyrics(text: str) -> str:
    """Free text after `</think>` (format / create-sample / understand), without a `# Lyric` header."""
    match = re.search(r"</think>", text)
    if not match:
        return ""
    after = text[match.end():].strip()
    if not after:
        return ""
    after = re.sub(r"^#\s*Lyri[c|cs]?\s*\n", "", after, flags=re.IGNORECASE)
    after = re.sub(r"<\|im_end\|>\s*$", "", after)
    return after.strip()
