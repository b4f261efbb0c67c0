"""Constrained decoding state machine of the 5 Hz LM (docs/lm.md#constrained-decoding-state-machine).

Reproduces the reference's `MetadataConstrainedLogitsProcessor` token for token: field order,
prefix trees built from the real tokenization of `"<field>: <value>"`, user fields injected as
forced tokens, the caption-ending heuristic, the language top-1 rule and the code-count EOS rule.

What it costs per token: allowed-token sets are precomputed index tensors and the audio codes a
contiguous id range masked by one slice fill; Python only touches the handful of ids of the current state. When
the state admits one token only, `step` returns it without asking for logits, so the caller can
skip the vocabulary projection for that token.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Callable, Optional

import torch

from .constants import (
    AUDIO_CODE_BASE,
    BPM_MAX,
    BPM_MIN,
    DURATION_MAX,
    DURATION_MIN,
    NUM_VALID_CODES,
    VALID_KEYSCALES,
    VALID_LANGUAGES,
    VALID_TIME_SIGNATURES,
)
from .tokenizer import LMTokenizer

NEG_INF = float("-inf")
FIELDS = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")


class State(Enum):
    THINK_TAG = auto()
    NEWLINE_AFTER_THINK = auto()
    BPM_NAME = auto()
    BPM_VALUE = auto()
    CAPTION_NAME = auto()
    CAPTION_VALUE = auto()
    DURATION_NAME = auto()
    DURATION_VALUE = auto()
    GENRES_NAME = auto()
    GENRES_VALUE = auto()
    KEYSCALE_NAME = auto()
    KEYSCALE_VALUE = auto()
    LANGUAGE_NAME = auto()
    LANGUAGE_VALUE = auto()
    TIMESIG_NAME = auto()
    TIMESIG_VALUE = auto()
    THINK_END_TAG = auto()
    CODES_GENERATION = auto()
    COMPLETED = auto()


NAME_STATE = {
    "bpm": State.BPM_NAME, "caption": State.CAPTION_NAME, "duration": State.DURATION_NAME,
    "genres": State.GENRES_NAME, "keyscale": State.KEYSCALE_NAME, "language": State.LANGUAGE_NAME,
    "timesignature": State.TIMESIG_NAME,
}
VALUE_STATE = {
    "bpm": State.BPM_VALUE, "caption": State.CAPTION_VALUE, "duration": State.DURATION_VALUE,
    "genres": State.GENRES_VALUE, "keyscale": State.KEYSCALE_VALUE, "language": State.LANGUAGE_VALUE,
    "timesignature": State.TIMESIG_VALUE,
}
FIXED_STRINGS = {
    State.THINK_TAG: "<think>", State.NEWLINE_AFTER_THINK: "\n", State.BPM_NAME: "bpm:",
    State.CAPTION_NAME: "caption:", State.DURATION_NAME: "duration:", State.GENRES_NAME: "genres:",
    State.KEYSCALE_NAME: "keyscale:", State.LANGUAGE_NAME: "language:", State.TIMESIG_NAME: "timesignature:",
    State.THINK_END_TAG: "</think>",
}
# Fields whose value is built from a token-id prefix tree.
TREE_FIELDS = {State.BPM_VALUE: "bpm", State.DURATION_VALUE: "duration",
               State.KEYSCALE_VALUE: "keyscale", State.LANGUAGE_VALUE: "language",
               State.TIMESIG_VALUE: "timesignature"}


class Vocabulary:
    """Everything the state machine precomputes from the tokenizer once per (tokenizer, max duration)."""

    def __init__(self, tokenizer: LMTokenizer, max_duration: int = DURATION_MAX):
        self.tokenizer = tokenizer
        self.texts = tokenizer.token_texts
        self.vocab_size = len(tokenizer)
        self.max_duration = int(max_duration)
        enc = tokenizer.encode
        self.newline = enc("\n")[-1]
        self.backtick = enc("`")[-1]
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.digit = {d: enc(str(d))[-1] for d in range(10)}
        self.trees = {
            "bpm": self._tree("bpm", [str(v) for v in range(BPM_MIN, BPM_MAX + 1)]),
            "duration": self._tree("duration", [str(v) for v in range(DURATION_MIN, self.max_duration + 1)]),
            "timesignature": self._tree("timesignature", [str(v) for v in VALID_TIME_SIGNATURES]),
            "keyscale": self._tree("keyscale", sorted(VALID_KEYSCALES), first_must_be_note=True),
            "language": self._tree("language", VALID_LANGUAGES),
        }
        self._fixed_cache: dict[tuple[str, int], list[int]] = {}
        self._index_cache: dict[tuple[int, ...], torch.Tensor] = {}

    def _tree(self, field: str, values: list[str], first_must_be_note: bool = False) -> dict[tuple, set]:
        """Token-id prefix → allowed next ids, from the tokenization of `"<field>: <value>"` after `"<field>:"`."""
        context = self.tokenizer.encode(f"{field}:")
        tree: dict[tuple, set] = {}
        for value in values:
            ids = self.tokenizer.encode(f"{field}: {value}")
            if ids[: len(context)] != context:
                continue
            value_ids = ids[len(context):]
            if not value_ids:
                continue
            if first_must_be_note:
                first = self.texts[value_ids[0]].lstrip()
                if not first or first[0].upper() not in "ABCDEFG":
                    continue
            for i in range(len(value_ids) + 1):
                allowed = tree.setdefault(tuple(value_ids[:i]), set())
                allowed.add(value_ids[i] if i < len(value_ids) else self.newline)
        return tree

    def fixed_string_tokens(self, fixed: str, position: int) -> list[int]:
        """Longest prefix of the rest of `fixed` that is one token (the reference's forcing rule)."""
        key = (fixed, position)
        if key in self._fixed_cache:
            return self._fixed_cache[key]
        remaining = fixed[position:]
        result: list[int] = []
        if remaining:
            for end in range(len(remaining), 0, -1):
                ids = self.tokenizer.encode(remaining[:end])
                if len(ids) == 1:
                    result = ids
                    break
            else:
                candidates: dict[int, int] = {}
                for end in range(1, min(len(remaining) + 1, 20)):
                    prefix = remaining[:end]
                    ids = self.tokenizer.encode(prefix)
                    if ids:
                        decoded = self.texts[ids[0]].lstrip().lower()
                        norm = prefix.lstrip().lower()
                        if decoded.startswith(norm) or norm.startswith(decoded):
                            candidates[ids[0]] = max(end, candidates.get(ids[0], 0))
                result = [t for t, _ in sorted(candidates.items(), key=lambda kv: kv[1], reverse=True)]
        self._fixed_cache[key] = result
        return result

    @staticmethod
    def block_codes(scores: torch.Tensor) -> None:
        """In place: no valid audio code (a contiguous id range) may be sampled."""
        scores[AUDIO_CODE_BASE:AUDIO_CODE_BASE + NUM_VALID_CODES] = NEG_INF

    def index(self, ids, device) -> torch.Tensor:
        key = tuple(ids)
        tensor = self._index_cache.get(key)
        if tensor is None or tensor.device != torch.device(device):
            tensor = torch.tensor(key, dtype=torch.long, device=device)
            self._index_cache[key] = tensor
        return tensor


class MetadataFSM:
    """Per-generation state of the constrained decoder (one sequence; the CFG rows share it)."""

    def __init__(
        self,
        vocab: Vocabulary,
        *,
        phase: str = "cot",
        user_metadata: Optional[dict] = None,
        stop_at_reasoning: bool = False,
        skip_caption: bool = False,
        skip_language: bool = False,
        skip_genres: bool = True,
        target_codes: Optional[int] = None,
        enabled: bool = True,
    ):
        if phase not in ("cot", "codes", "understand"):
            raise ValueError(f"invalid generation phase {phase!r}")
        self.v = vocab
        self.phase = phase
        self.enabled = enabled
        self.user = {f: None for f in FIELDS}
        for name, value in (user_metadata or {}).items():
            if name in self.user and value is not None:
                self.user[name] = value
        self.stop_at_reasoning = stop_at_reasoning
        self.skip = {"caption": skip_caption, "language": skip_language, "genres": skip_genres}
        self.target_codes = target_codes
        self.codes_count = 0
        self.state = State.THINK_TAG
        self._reset_field()
        self.queue: list[int] = []
        self.queue_field: Optional[str] = None

    # ---- transitions -------------------------------------------------------------------------
    def _reset_field(self) -> None:
        self.position = 0
        self.text = ""  # accumulated value text
        self.ids: list[int] = []  # accumulated value ids (prefix-tree key)
        self.caption_after_newline = False
        self.caption_tokens = 0
        self.caption_ending = False
        self.pending_name = ""

    def next_field_state(self, field: str) -> State:
        order = FIELDS
        for name in order[order.index(field) + 1:]:
            if self.skip.get(name, False):
                continue
            return NAME_STATE[name]
        return State.THINK_END_TAG

    def _next_state(self, state: State) -> Optional[State]:
        if state == State.THINK_TAG:
            return State.NEWLINE_AFTER_THINK
        if state == State.NEWLINE_AFTER_THINK:
            return State.BPM_NAME
        if state == State.THINK_END_TAG:
            return State.COMPLETED if self.phase == "understand" else State.CODES_GENERATION
        if state == State.CODES_GENERATION:
            return State.COMPLETED
        for field, name_state in NAME_STATE.items():
            if state == name_state:
                if self.skip.get(field, False):
                    return None  # the reference has no transition for a skipped field
                return VALUE_STATE[field]
            if state == VALUE_STATE[field]:
                if self.skip.get(field, False):
                    return None
                return State.THINK_END_TAG if field == "timesignature" else self.next_field_state(field)
        return None

    def _transition(self) -> None:
        nxt = self._next_state(self.state)
        if nxt is None:
            return
        self.state = nxt
        self._reset_field()

    def _goto(self, state: State) -> None:
        self.state = state
        self._reset_field()

    # ---- masking -----------------------------------------------------------------------------
    def _whitelist(self, scores: torch.Tensor, allowed) -> torch.Tensor:
        out = torch.full_like(scores, NEG_INF)
        if allowed:
            idx = self.v.index(sorted(allowed), scores.device)
            out[idx] = scores[idx]
        return out

    def _start_user_field(self, field: str) -> Optional[int]:
        """Queue `" {value}\\n"` of a user-given field and return its first (forced) token."""
        value = self.user[field]
        tokens = self.v.tokenizer.encode(f" {value}\n")
        if not tokens:
            return None
        self.queue = list(tokens)
        self.queue_field = field
        return tokens[0]

    def step(self, get_scores: Callable[[], torch.Tensor]) -> tuple[Optional[int], Optional[torch.Tensor]]:
        """Decide the next token: `(forced_id, None)` or `(None, masked float scores [V])`.

        `get_scores()` returns the raw (CFG-combined) float32 logits of the next position, a fresh
        tensor the state machine may edit in place; it is called only when the decision needs it.
        """
        if not self.enabled:
            return None, get_scores()
        if self.state == State.COMPLETED:
            scores = get_scores()
            if self.phase == "understand":
                self.v.block_codes(scores)
            return None, scores
        if self.state == State.CODES_GENERATION:
            return self._codes_step(get_scores)
        return self._metadata_step(get_scores)

    def _codes_step(self, get_scores):
        if self.target_codes is not None and self.codes_count >= self.target_codes:
            return self.v.eos, None
        scores = get_scores()
        eos = scores[self.v.eos].clone()
        scores[:AUDIO_CODE_BASE] = NEG_INF
        scores[AUDIO_CODE_BASE + NUM_VALID_CODES:] = NEG_INF
        if self.target_codes is None:
            scores[self.v.eos] = eos
        return None, scores

    def _metadata_step(self, get_scores):
        v = self.v
        if self.queue:
            return self.queue[0], None
        state = self.state
        if state in FIXED_STRINGS:
            fixed = FIXED_STRINGS[state]
            allowed = v.fixed_string_tokens(fixed, self.position)
            if allowed:
                if state == State.THINK_END_TAG and self.stop_at_reasoning and len(fixed) - self.position <= 10:
                    return v.eos, None
                if len(allowed) == 1:
                    return allowed[0], None
                return None, self._whitelist(get_scores(), allowed)
            if state == State.THINK_END_TAG and self.stop_at_reasoning:
                return v.eos, None
            self._transition()
            if self.state in FIXED_STRINGS:
                return None, get_scores()
            # The reference re-enters with zeroed scores after this transition.
            zeros = torch.zeros_like(get_scores())
            return self._metadata_step(lambda: zeros)

        if state in TREE_FIELDS:
            field = TREE_FIELDS[state]
            if self.user[field] is not None and not self.ids:
                first = self._start_user_field(field)
                if first is not None:
                    return first, None
            tree = v.trees[field]
            prefix = tuple(self.ids)
            if state in (State.BPM_VALUE, State.DURATION_VALUE):
                allowed = sorted(tree.get(prefix, ()))
            elif state == State.LANGUAGE_VALUE and not self.ids:
                candidates = list(tree.get((), ()))
                if not candidates:
                    return v.newline, None
                scores = get_scores()
                best = int(torch.argmax(scores[v.index(candidates, scores.device)]))
                return candidates[best], None
            elif prefix in tree and v.newline in tree[prefix]:
                return v.newline, None
            else:
                allowed = sorted(tree.get(prefix, ()))
                if not allowed and state != State.TIMESIG_VALUE:
                    return v.newline, None
            if len(allowed) == 1:
                return allowed[0], None
            return None, self._whitelist(get_scores(), allowed)

        if state == State.CAPTION_VALUE:
            if self.user["caption"] is not None and not self.text:
                first = self._start_user_field("caption")
                if first is not None:
                    return first, None
            scores = get_scores()
            if self.caption_after_newline:
                top_text = v.texts[int(torch.argmax(scores))]
                self.caption_after_newline = False
                if top_text and top_text[0] not in " \t":
                    # The model starts the next field name: let it write it freely.
                    self.caption_ending = True
                    self.pending_name = ""
                    return None, scores
            if self.caption_ending:
                return None, scores
            scores[v.backtick] = NEG_INF
            v.block_codes(scores)
            if self.caption_tokens >= 512:
                return v.newline, None
            return None, scores

        if state == State.GENRES_VALUE:
            if self.user["genres"] is not None and not self.text:
                first = self._start_user_field("genres")
                if first is not None:
                    return first, None
            # No genres vocabulary ships with the checkpoints: the reference's probability rule.
            scores = get_scores()
            if self.text.strip():
                probs = torch.softmax(scores, dim=-1)
                newline_p = probs[v.newline].item()
                others = probs.clone()
                others[v.newline] = 0
                if newline_p > others.max().item():
                    self._transition()  # the reference transitions here, before the newline is seen
                    return v.newline, None
                return None, scores
            scores[v.newline] = NEG_INF
            return None, scores
        return None, get_scores()

    # ---- state update ------------------------------------------------------------------------
    def update(self, token: int) -> None:
        """Advance after `token` was appended (the reference's `update_state`)."""
        if not self.enabled or self.state == State.COMPLETED:
            return
        if self.state == State.CODES_GENERATION:
            self.codes_count += 1
            return
        if self.queue:
            self.queue.pop(0)
            if not self.queue:
                field, self.queue_field = self.queue_field, None
                self._goto(self.next_field_state(field))
            return
        text = self.v.texts[token]
        state = self.state
        if state in FIXED_STRINGS:
            self.position += len(text)
            if self.position >= len(FIXED_STRINGS[state]):
                if state == State.THINK_END_TAG and self.stop_at_reasoning:
                    self._goto(State.COMPLETED)
                else:
                    self._transition()
        elif state in (State.BPM_VALUE, State.DURATION_VALUE, State.TIMESIG_VALUE,
                       State.KEYSCALE_VALUE, State.LANGUAGE_VALUE):
            if token == self.v.newline:
                self._transition()
            else:
                self.ids.append(token)
                self.text += text
        elif state == State.GENRES_VALUE:
            if token == self.v.newline:
                self._transition()
            else:
                self.text += text
        elif state == State.CAPTION_VALUE:
            self.caption_tokens += 1
            self.text += text
            self.caption_after_newline = "\n" in text
            if self.caption_ending:
                self.pending_name += text
                if ":" in text:
                    name = self.pending_name.strip().rstrip(":").strip().lower()
                    if name in ("duration", "genres", "keyscale", "language", "timesignature"):
                        self._goto(VALUE_STATE[name])
                    else:
                        self.caption_ending = False
                        self.pending_name = ""
                        self._transition()

    def start_in_codes(self) -> None:
        """A codes-phase prompt already holds `</think>`: decode codes right away."""
        self.state = State.CODES_GENERATION
        self.codes_count = 0
