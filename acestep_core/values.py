"""Value rules every door shares (CLI, REST server, ComfyUI nodes): text, vocabularies, numbers, tensors.

Each check raises InputError naming the field, what is wrong and what it accepts; the vocabulary
checks return the canonical spelling. The vocabularies are the 5 Hz LM's own (`lm/constants.py`),
so the DiT path accepts exactly what the LM's constrained decoder could have written.
"""

from __future__ import annotations

import codecs
import math
import re
import unicodedata
from pathlib import Path
from typing import Optional

import torch

from .errors import InputError
from .lm.constants import VALID_KEYSCALES, VALID_LANGUAGES, VALID_TIME_SIGNATURES

# Longer text is cut by the model anyway (caption 256 tokens, lyrics 2048 tokens); this only stops
# megabytes of text from reaching the tokenizers.
MAX_TEXT_CHARS = 64 * 1024
_ALLOWED_CONTROLS = {"\n", "\t", "\r"}  # \r: lyrics files saved with Windows line ends
_KEYSCALES_BY_FOLDED = {k.casefold(): k for k in VALID_KEYSCALES}
_TIME_SIGNATURE_NAMES = tuple(str(v) for v in VALID_TIME_SIGNATURES)


def check_text(name: str, value, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A text field: a string without NUL or other control characters (newline and tab are fine)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InputError(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    for position, char in enumerate(value):
        if char in _ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(char)
        if category == "Cc" or category == "Cs":
            what = "a NUL character" if char == "\0" else f"the control character U+{ord(char):04X}"
            raise InputError(f"{name} contains {what} at position {position}; remove it "
                             "(only newlines and tabs are allowed)")
    return value


# Short spellings of a key, as chord charts and the official API docs write them ('Am', 'C#m', 'Bb',
# 'F# min', 'Eb maj'): a note A-G, an optional accidental, then an optional mode (none = major).
_KEY_SHORT = re.compile(r"([A-Ga-g])\s*([#b♯♭]?)\s*(major|minor|maj|min|m|)", re.IGNORECASE)
_KEY_SHORT_MODES = {"": "major", "maj": "major", "major": "major", "m": "minor", "min": "minor", "minor": "minor"}


def key_scale(value, name: str = "key_scale") -> str:
    """'' (let the model choose) or a key, returned in the LM's spelling ('F# minor').

    Any capitalisation of the LM's spelling ('c MAJOR') and the short forms ('Am', 'C#m', 'Bb',
    'F# min') are accepted."""
    text = " ".join(str(value or "").split())
    if not text:
        return ""
    canonical = _KEYSCALES_BY_FOLDED.get(text.casefold())
    if canonical is None:
        short = _KEY_SHORT.fullmatch(text)
        if short is not None:
            note, accidental, mode = short.groups()
            # A capital M alone is major in chord symbols ('CM'); a small m (or any other case of
            # min / minor) is minor.
            mode = "major" if mode == "M" else _KEY_SHORT_MODES[mode.lower()]
            canonical = f"{note.upper()}{accidental} {mode}"
    if canonical is None:
        raise InputError(f"{name} {value!r} is not a key: use a note A-G, optionally followed by # or b "
                         "(or ♯ ♭), then major or minor, e.g. 'C major' or 'F# minor' (short forms such as "
                         "'Am' or 'Bb' work too)")
    return canonical


def time_signature(value, name: str = "time_signature") -> str:
    """'' or the beats per bar as the LM writes them: '2', '3', '4' or '6' ('4/4', '6/8' give the numerator)."""
    text = str(value if value is not None else "").strip()
    if not text:
        return ""
    numerator = text.split("/", 1)[0].strip() if text.count("/") == 1 else text
    if numerator not in _TIME_SIGNATURE_NAMES:
        raise InputError(f"{name} {value!r} is not supported: use 2, 3, 4 or 6 (or 2/4, 3/4, 4/4, 6/8)")
    return numerator


def language(value, name: str = "vocal_language") -> str:
    """'' or one of the LM's language codes, lower case."""
    code = str(value or "").strip().lower()
    if code and code not in VALID_LANGUAGES:
        raise InputError(f"{name} {value!r} is not supported; use one of: {' '.join(VALID_LANGUAGES)}")
    return code


def finite_number(name: str, value) -> float:
    """A real number (not NaN, not infinite); bools are not numbers here."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return number


def check_finite_tensor(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Refuse NaN / infinite values up front: they would survive to the end of the run and spoil it."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise InputError(f"{name} contains {bad} NaN or infinite value(s) out of {tensor.numel()}; "
                         "the data is damaged: re-export or re-encode it")
    return tensor


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_text_file(path, what: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A text file as UTF-8, or UTF-16 / UTF-32 with a byte-order mark (what Notepad writes as 'Unicode')."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                         "re-save it as UTF-8") from None
    return check_text(f"{what} file {path}", text, max_chars)


def optional_duration(name: str, value, minimum: float, maximum: float) -> Optional[float]:
    """None, -1 and 0 mean 'automatic' (None); otherwise a finite number of seconds in [minimum, maximum]."""
    if value is None:
        return None
    seconds = finite_number(name, value)
    if seconds in (0.0, -1.0):
        return None
    if seconds < 0:
        raise InputError(f"{name} must be -1 or 0 (automatic) or from {minimum:g} to {maximum:g} seconds, got {value!r}")
    if not minimum <= seconds <= maximum:
        raise InputError(f"{name} must be from {minimum:g} to {maximum:g} seconds (or -1 for automatic), got {value!r}")
    return seconds
