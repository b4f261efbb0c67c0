"""The OpenRouter-style music endpoint: `POST /v1/chat/completions` (the acestep skill's default
`completion` mode) and the OpenRouter model list of `GET /v1/models`.

A chat request is translated into the same fields /release_task takes, validated by the same table
(params.RELEASE_FIELDS) and run by the same job queue; the reply carries the audio inline as
`choices[0].message.audio[i].audio_url.url = "data:<mime>;base64,..."`.

Where the text comes from, as in the official adapter:
- `<prompt>...</prompt>` and `<lyrics>...</lyrics>` tags in user messages;
- untagged text that looks like lyrics (section markers, or many short lines) is the lyrics;
- any other untagged text, with no lyrics anywhere, is a simple-mode query for the 5 Hz LM;
- a top-level `lyrics` field makes the message text the caption; `sample_mode: true` makes it the query.
`input_audio` parts (base64) become the source audio for cover / repaint / continuation (a second one
is the reference), or the reference audio for text2music.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .params import FieldError, ReleaseRequest, parse_release_request, to_bool

MODEL_PREFIX = "acestep"
AUDIO_MIME = {"mp3": "audio/mpeg", "wav": "audio/wav", "wav32": "audio/wav", "flac": "audio/flac",
              "opus": "audio/ogg", "aac": "audio/aac"}
SOURCE_TASKS = ("cover", "repaint", "repainting", "continuation", "continue", "extend", "extract", "lego",
                "complete")
LYRIC_MARKERS = ("[verse", "[chorus", "[bridge", "[intro", "[outro", "[hook", "[pre-chorus", "[refrain",
                 "[inst")
_PROMPT_TAG = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL | re.IGNORECASE)
_LYRICS_TAG = re.compile(r"<lyrics>(.*?)</lyrics>", re.DOTALL | re.IGNORECASE)

# Release-field name -> where it sits in a chat request (so a 400 names the field the client sent).
CHAT_FIELD_NAMES = {
    "audio_duration": "audio_config.duration",
    "bpm": "audio_config.bpm",
    "key_scale": "audio_config.key_scale",
    "time_signature": "audio_config.time_signature",
    "vocal_language": "audio_config.vocal_language",
    "audio_format": "audio_config.format",
    "lm_temperature": "temperature",
    "lm_top_p": "top_p",
    "lm_top_k": "top_k",
}
# Top-level chat fields passed to /release_task's parser under the same name.
PASSTHROUGH_FIELDS = ("thinking", "use_format", "use_cot_caption", "use_cot_language", "guidance_scale",
                      "seed", "batch_size", "task_type", "repainting_start", "repainting_end",
                      "audio_cover_strength", "inference_steps", "infer_method", "shift", "lm_seed",
                      "lm_cfg_scale", "track_name", "track_classes", "instruction", "cover_noise_strength")
AUDIO_CONFIG_FIELDS = {"duration": "audio_duration", "bpm": "bpm", "key_scale": "key_scale",
                       "time_signature": "time_signature", "vocal_language": "vocal_language",
                       "format": "audio_format"}


@dataclass
class ChatInput:
    """What the messages said: caption, lyrics, simple-mode query and decoded input audio."""

    prompt: str = ""
    lyrics: str = ""
    query: str = ""
    audio: list[tuple[str, bytes, str]] = field(default_factory=list)  # (field path, bytes, format)


def looks_like_lyrics(text: str) -> bool:
    lowered = text.lower()
    if any(marker in lowered for marker in LYRIC_MARKERS):
        return True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) >= 4 and sum(len(line) for line in lines) / len(lines) < 60


def _decode_audio_part(part: dict, where: str) -> tuple[str, bytes, str]:
    data = part.get("input_audio")
    if not isinstance(data, dict) or not isinstance(data.get("data"), str) or not data["data"].strip():
        raise FieldError(where + ".input_audio", 'must be {"data": "<base64>", "format": "mp3"}')
    text = data["data"].strip()
    if text.startswith("data:") and "," in text:  # a data URL is accepted as well
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(where + ".input_audio.data", "is not valid base64") from None
    if not raw:
        raise FieldError(where + ".input_audio.data", "decodes to an empty file")
    fmt = str(data.get("format") or "mp3").strip().lower().lstrip(".")
    return where + ".input_audio", raw, fmt


def parse_messages(messages: Any) -> tuple[ChatInput, bool]:
    """Read the user messages; returns the input and whether <prompt>/<lyrics> tags were used."""
    if not isinstance(messages, list) or not messages:
        raise FieldError("messages", "must be a non-empty list of {role, content} objects")
    texts: list[str] = []
    lyrics = ""
    tagged = False
    audio: list[tuple[str, bytes, str]] = []

    def take_text(text: str) -> None:
        nonlocal lyrics, tagged
        text = text.strip()
        prompt_match, lyrics_match = _PROMPT_TAG.search(text), _LYRICS_TAG.search(text)
        if prompt_match or lyrics_match:
            tagged = True
            rest = text
            for match in (prompt_match, lyrics_match):
                if match:
                    rest = rest.replace(match.group(0), "")
            if prompt_match and prompt_match.group(1).strip():
                texts.append(prompt_match.group(1).strip())
            if lyrics_match and lyrics_match.group(1).strip():
                lyrics = lyrics_match.group(1).strip()
            if rest.strip():
                texts.append(rest.strip())
        elif looks_like_lyrics(text):
            lyrics = text
        elif text:
            texts.append(text)

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise FieldError(where, "must be an object with role and content")
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise FieldError(where + ".role", f"must be system, user or assistant, got {role!r}")
        if role != "user":  # instructions and earlier replies carry no song input
            continue
        content = message.get("content")
        if isinstance(content, str):
            take_text(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                part_where = f"{where}.content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise FieldError(part_where + ".text", "must be a string")
                    take_text(part["text"])
                elif kind == "input_audio":
                    audio.append(_decode_audio_part(part, part_where))
                else:
                    raise FieldError(part_where + ".type", f"must be text or input_audio, got {kind!r}")
        elif content is not None:
            raise FieldError(where + ".content", "must be a string or a list of content parts")
    return ChatInput(prompt=" ".join(texts).strip(), lyrics=lyrics, audio=audio), tagged


def release_fields(body: dict) -> tuple[dict, ChatInput]:
    """The /release_task fields equivalent to a chat completion request, and the parsed messages."""
    if not isinstance(body.get("model", ""), str):
        raise FieldError("model", "must be a string such as 'acestep/acestep-v15-turbo'")
    chat, tagged = parse_messages(body.get("messages"))
    try:  # the yes / no words /release_task takes (switches.py), not only JSON true / false
        sample_mode = to_bool(body.get("sample_mode", False) or False)
    except ValueError as exc:
        raise FieldError("sample_mode", str(exc)) from None
    explicit_lyrics = body.get("lyrics")
    if explicit_lyrics is not None and not isinstance(explicit_lyrics, str):
        raise FieldError("lyrics", "must be a string")

    if explicit_lyrics:  # the message text is the caption
        chat.prompt, chat.lyrics = (chat.prompt or chat.query), explicit_lyrics
    elif sample_mode:  # the message text is the query
        chat.query, chat.prompt, chat.lyrics = chat.prompt, "", ""
    elif not tagged and not chat.lyrics and chat.prompt:  # plain words: let the LM write the song
        chat.query, chat.prompt = chat.prompt, ""
    if not (chat.prompt or chat.lyrics or chat.query or sample_mode or chat.audio):
        raise FieldError("messages", "no caption, lyrics, description or input audio found; send e.g. "
                                     "'<prompt>Pop music</prompt><lyrics>[Verse] ...</lyrics>'")

    config = body.get("audio_config") or {}
    if not isinstance(config, dict):
        raise FieldError("audio_config", "must be an object")
    fields: dict[str, Any] = {
        "prompt": chat.prompt,
        "lyrics": chat.lyrics,
        "sample_mode": bool(sample_mode or chat.query),
        "sample_query": chat.query,
        # The official completion endpoint makes one song unless asked for more.
        "batch_size": 1,
        "model": _model_name(body.get("model") or ""),
    }
    for name in PASSTHROUGH_FIELDS:
        if body.get(name) is not None:
            fields[name] = body[name]
    for name, target in AUDIO_CONFIG_FIELDS.items():
        if config.get(name) is not None:
            fields[target] = config[name]
    if config.get("instrumental") is True and not fields["lyrics"]:
        fields["lyrics"] = "[inst]"
    for name, target in (("temperature", "lm_temperature"), ("top_p", "lm_top_p"), ("top_k", "lm_top_k")):
        if body.get(name) is not None:
            fields[target] = body[name]
    return fields, chat


def parse_chat_request(body: dict, *, max_batch_size: int) -> tuple[ReleaseRequest, ChatInput]:
    """Validate a chat request with /release_task's rules; a FieldError names the chat field."""
    fields, chat = release_fields(body)
    try:
        req = parse_release_request(fields, default_batch_size=1, max_batch_size=max_batch_size)
    except FieldError as exc:
        reason = str(exc)[len(exc.field) + 2:]
        raise FieldError(CHAT_FIELD_NAMES.get(exc.field, exc.field), reason) from None
    return req, chat


def _model_name(model_id: str) -> Optional[str]:
    """'acestep/acestep-v15-turbo' -> 'acestep-v15-turbo' (any prefix before '/' is dropped)."""
    name = model_id.strip().split("/", 1)[-1]
    return name or None


def model_id(name: str) -> str:
    return f"{MODEL_PREFIX}/{name}"


def route_audio(chat: ChatInput, task_type: str) -> dict[str, tuple[str, bytes, str]]:
    """Which input audio fills which request slot (official routing)."""
    if not chat.audio:
        return {}
    if task_type in ("cover", "repaint", "continuation", "extract", "lego", "complete"):
        slots = {"src_audio": chat.audio[0]}
        if len(chat.audio) > 1:
            slots["reference_audio"] = chat.audio[1]
        return slots
    return {"reference_audio": chat.audio[0]}


# ---------------------------------------------------------------------------------------------
# Responses


def song_text(result: dict) -> str:
    """The assistant's text: the metadata used and the lyrics sung (Markdown, as the official one)."""
    metas = result.get("metas") or {}
    lines = []
    if result.get("prompt"):
        lines.append(f"**Caption:** {result['prompt']}")
    for key, label, unit in (("bpm", "BPM", ""), ("duration", "Duration", "s"), ("keyscale", "Key", ""),
                             ("timesignature", "Time Signature", "")):
        value = metas.get(key)
        if value not in (None, "", "N/A"):
            lines.append(f"**{label}:** {value}{unit}")
    parts = ["## Metadata\n" + "\n".join(lines)] if lines else []
    lyrics = (result.get("lyrics") or "").strip()
    if lyrics and lyrics.lower() not in ("[inst]", "[instrumental]"):
        parts.append("## Lyrics\n" + lyrics)
    return "\n\n".join(parts) or "Music generated successfully."


def data_url(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    mime = AUDIO_MIME.get(fmt, "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def audio_parts(result: dict) -> list[dict]:
    """Every batch item, inline (the official adapter sends the first only; clients loop over all)."""
    return [{"type": "audio_url", "audio_url": {"url": data_url(Path(p))}} for p in result.get("files", [])]


def completion_body(completion_id: str, model: str, result: dict) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": song_text(result), "audio": audio_parts(result)},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def chunk(completion_id: str, model: str, created: int, delta: dict, finish_reason: Optional[str] = None) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def openrouter_model(name: str, created: int) -> dict:
    return {
        "id": model_id(name),
        "name": f"ACE-Step {name}",
        "created": created,
        "input_modalities": ["text", "audio"],
        "output_modalities": ["audio", "text"],
        "context_length": 4096,
        "max_output_length": 600,
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "description": "AI music generation model",
        "architecture": None,
    }
