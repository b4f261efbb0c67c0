"""Bundled examples for /create_random_sample (shipped under acestep_core/server/examples/).

`simple_mode` examples are `{description, instrumental, vocal_language}` (a query for simple mode);
`custom_mode` examples are `{think, caption, lyrics, bpm, duration, keyscale, language,
timesignature}` (a ready text2music form), as in the official server.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
SAMPLE_TYPES = {"simple_mode": "simple_mode", "custom_mode": "text2music", "text2music": "text2music"}


@lru_cache(maxsize=None)
def load_examples(folder: str) -> tuple[dict, ...]:
    examples = []
    for path in sorted((EXAMPLES_DIR / folder).glob("example_*.json")):
        examples.append(json.loads(path.read_text(encoding="utf-8")))
    return tuple(examples)


def random_example(sample_type: str, rng: random.Random | None = None) -> dict:
    """A copy of one random example; raises KeyError for an unknown sample_type."""
    examples = load_examples(SAMPLE_TYPES[sample_type])
    if not examples:
        raise FileNotFoundError(f"no bundled examples in {EXAMPLES_DIR / SAMPLE_TYPES[sample_type]}")
    return dict((rng or random).choice(examples))
