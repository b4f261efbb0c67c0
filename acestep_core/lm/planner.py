"""`LMPlanner`: the 5 Hz LM as a song planner (think, format, create sample, understand).

Follows the reference's `LLMHandler` flow (docs/lm.md#two-phase-generation): phase 1 writes the chain of thought
under the constrained decoder (skipped when bpm, key, time signature and duration are all given),
phase 2 writes exactly duration × 5 audio codes with LM CFG over a cond / uncond batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..checkpoints import find_lm  # noqa: F401  (re-exported: the one LM finder lives there)
from ..codes import MAX_CODES, format_audio_codes
from ..errors import CheckpointError, InputError
from ..plan import Plan
from . import prompts
from .constants import (
    BPM_MAX, BPM_MIN, CODES_PER_SECOND, DURATION_MAX, DURATION_MIN, THINK_END_ID, VALID_KEYSCALES,
    VALID_LANGUAGES, VALID_TIME_SIGNATURES,
)
from .constraints import MetadataFSM, Vocabulary
from .generation import decode_codes, decode_with_fsm
from .model import StaticCacheDecoder, load_lm
from .sampling import LMSampling
from .tokenizer import LMTokenizer

LM_SIZES = ("0.6B", "1.7B", "4B")


@dataclass
class PhaseOutput:
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str
    margins: list[float] = field(default_factory=list)
    uncond_prompt_ids: Optional[list[int]] = None


@dataclass
class TwoPhaseOutput:
    metadata: dict[str, Any]
    audio_codes: list[int]
    phases: list[PhaseOutput]
    cot_text: str = ""


def _clean_timesignature(value) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.lower() == "n/a":
        return None
    return text.split("/")[0] if text.endswith("/4") or text.endswith("/8") else text


def validate_user_fields(bpm=None, keyscale=None, timesignature=None, duration=None, language=None,
                         max_duration: int = DURATION_MAX) -> None:
    """The values the constrained decoder could produce itself; anything else is a user mistake."""
    if bpm is not None and not (BPM_MIN <= int(bpm) <= BPM_MAX):
        raise InputError(f"bpm {bpm} is out of range: use {BPM_MIN}..{BPM_MAX}")
    if keyscale is not None and keyscale not in VALID_KEYSCALES:
        raise InputError(f"unknown key {keyscale!r}: use a note A-G, optional #/b/♯/♭, then major or minor (e.g. 'F# minor')")
    ts = _clean_timesignature(timesignature)
    if ts is not None and ts not in {str(v) for v in VALID_TIME_SIGNATURES}:
        raise InputError(f"time signature {timesignature!r} is not supported: use 2, 3, 4 or 6")
    if duration is not None and not (0 < float(duration) <= max_duration):
        raise InputError(f"duration {duration} s is out of range: use up to {max_duration} s")
    if language is not None and language not in VALID_LANGUAGES:
        raise InputError(f"unknown language {language!r}: use one of {', '.join(VALID_LANGUAGES)}")


class LMPlanner:
    def __init__(self, model, tokenizer: LMTokenizer, source: Optional[Path] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.decoder = StaticCacheDecoder(model)
        self._vocabularies: dict[int, Vocabulary] = {}
        # The most tokens a free-running phase (chain of thought, format, sample, understand) writes;
        # None = the official budget (max duration x 5 + 500). The codes phase is never capped.
        self.free_text_token_cap: Optional[int] = None

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, tokenizer_path=None, device="cpu", dtype="auto") -> "LMPlanner":
        from ..pipeline import resolve_device

        device = resolve_device(device)  # a missing GPU is a one-line error, not a failure inside the model
        path = Path(path).expanduser()
        if tokenizer_path is None:
            if path.is_dir():
                tokenizer_path = path
            else:
                raise CheckpointError(
                    f"{path.name} carries no tokenizer: pass tokenizer_path= (the official "
                    "acestep-5Hz-lm-* folder, or the Qwen tokenizer folder of your ComfyUI install, "
                    "comfy/text_encoders/qwen25_tokenizer)"
                )
        tokenizer = LMTokenizer(Path(tokenizer_path).expanduser())
        model, source = load_lm(path, dtype, device)
        if model.config.vocab_size != len(tokenizer):
            raise CheckpointError(
                f"tokenizer ({len(tokenizer)} tokens) does not match the LM vocabulary ({model.config.vocab_size})"
            )
        return cls(model, tokenizer, source)

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    def vocabulary(self, max_duration: int = DURATION_MAX) -> Vocabulary:
        max_duration = int(max(DURATION_MIN, min(DURATION_MAX, max_duration)))
        if max_duration not in self._vocabularies:
            self._vocabularies[max_duration] = Vocabulary(self.tokenizer, max_duration)
        return self._vocabularies[max_duration]

    def _free_text_budget(self, vocab: Vocabulary) -> int:
        budget = vocab.max_duration * CODES_PER_SECOND + 500
        return min(budget, self.free_text_token_cap) if self.free_text_token_cap else budget

    def _generator(self, seed: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    # ---- low level: the reference's generate_with_stop_condition -------------------------------
    def generate_with_stop_condition(
        self, caption: str, lyrics: str, *, infer_type: str = "llm_dit", sampling: LMSampling,
        user_metadata: Optional[dict] = None, target_duration: Optional[float] = None,
        use_cot_metas: bool = True, use_cot_caption: bool = True, use_cot_language: bool = True,
        constrained_decoding: bool = True, max_duration: int = DURATION_MAX, generator=None,
        progress=None, cancel=None, record_margins: bool = False, cot_max_new_tokens: Optional[int] = None,
    ) -> TwoPhaseOutput:
        vocab = self.vocabulary(max_duration)
        # Both phases in one decoder session: where the code count is known up front, the CoT
        # phase runs on the packed weights the codes phase needs anyway.
        known_codes = int(target_duration * CODES_PER_SECOND) if target_duration and infer_type != "dit" else 0
        with self.decoder.session(steps=known_codes):
            metadata, phases, cot_text = self._cot_phase(
                caption, lyrics, vocab, sampling, user_metadata, use_cot_metas, use_cot_caption, use_cot_language,
                constrained_decoding, generator, progress, cancel, record_margins, cot_max_new_tokens)
            if infer_type == "dit":
                return TwoPhaseOutput(metadata, [], phases, cot_text)
            phase = self._codes_phase(caption, lyrics, vocab, sampling, metadata, target_duration,
                                      constrained_decoding, generator, progress, cancel, record_margins)
        phases.append(phase)
        _, codes = prompts.parse_lm_output(phase.text)
        return TwoPhaseOutput(metadata, codes, phases, cot_text)

    def _cot_phase(self, caption, lyrics, vocab, sampling, user_metadata, use_cot_metas, use_cot_caption,
                   use_cot_language, constrained_decoding, generator, progress, cancel, record_margins,
                   cot_max_new_tokens) -> tuple[dict, list[PhaseOutput], str]:
        """Phase 1: the metadata the user did not set, as CoT (metadata, [its phase] or [], CoT text)."""
        user_metadata = {k: v for k, v in (user_metadata or {}).items() if v is not None}
        has_all = all(k in user_metadata for k in ("bpm", "keyscale", "timesignature", "duration"))
        if has_all or not use_cot_metas:
            return dict(user_metadata), [], ""
        fsm = MetadataFSM(
            vocab, phase="cot", user_metadata=user_metadata, stop_at_reasoning=True,
            skip_caption=not use_cot_caption, skip_language=not use_cot_language, skip_genres=True,
            enabled=constrained_decoding,
        )
        prompt = self.tokenizer.encode(prompts.cot_prompt(caption, lyrics))
        # CFG is off for the CoT: it distorts captions (the current reference forces 1.0 here).
        result = decode_with_fsm(
            self.decoder, [prompt], fsm, sampling, cot_max_new_tokens or self._free_text_budget(vocab),
            generator, 1.0, progress, cancel, record_margins,
        )
        cot_text = self.tokenizer.decode(result.generated_ids)
        metadata, _ = prompts.parse_lm_output(cot_text)
        return metadata, [PhaseOutput(result.prompt_ids, result.generated_ids, cot_text, result.margins)], cot_text

    def _codes_phase(self, caption, lyrics, vocab, sampling, metadata, target_duration, constrained_decoding,
                     generator, progress, cancel, record_margins) -> PhaseOutput:
        """Phase 2: the audio codes, conditioned on the metadata as CoT (with CFG: a second, uncond row)."""
        cot = prompts.format_metadata_as_cot(metadata)
        rows = [self.tokenizer.encode(prompts.codes_prompt(caption, lyrics, cot))]
        cfg_scale = sampling.cfg_scale if sampling.cfg_scale and sampling.cfg_scale > 1.0 else 1.0
        if cfg_scale > 1.0:
            rows.append(self.tokenizer.encode(prompts.codes_uncond_prompt(caption, lyrics, sampling.negative_prompt)))
        duration = target_duration
        if duration is None:
            cot_duration = metadata.get("duration")
            if isinstance(cot_duration, (int, float)):
                duration = max(DURATION_MIN, min(vocab.max_duration, cot_duration))
        target_codes = int(duration * CODES_PER_SECOND) if duration is not None and duration > 0 else None
        if constrained_decoding and target_codes is not None:
            result = decode_codes(self.decoder, rows, target_codes, sampling, generator, cfg_scale,
                                  progress, cancel, record_margins)
        else:
            fsm = MetadataFSM(vocab, phase="codes", target_codes=target_codes, enabled=constrained_decoding)
            if THINK_END_ID in rows[0]:
                fsm.start_in_codes()
            max_new = (target_codes if target_codes is not None else vocab.max_duration * CODES_PER_SECOND) + 10
            # Never more codes than generation takes (600 s): without a duration the +10 slack made 3010.
            max_new = min(max_new, MAX_CODES)
            result = decode_with_fsm(self.decoder, rows, fsm, sampling, max_new, generator, cfg_scale,
                                     progress, cancel, record_margins)
        phase = PhaseOutput(result.prompt_ids, result.generated_ids, self.tokenizer.decode(result.generated_ids),
                            result.margins)
        if len(rows) > 1:
            phase.uncond_prompt_ids = rows[1]
        return phase

    def run_understand_phase(self, prompt_text: str, sampling: LMSampling, *, user_metadata=None,
                             skip_language=False, constrained_decoding=True, max_duration=DURATION_MAX,
                             generator=None, progress=None, cancel=None, record_margins=False,
                             max_new_tokens: Optional[int] = None) -> PhaseOutput:
        """CoT metadata, then free text after `</think>` (format, create sample, understand)."""
        vocab = self.vocabulary(max_duration)
        fsm = MetadataFSM(vocab, phase="understand", user_metadata=user_metadata, stop_at_reasoning=False,
                          skip_caption=False, skip_language=skip_language, skip_genres=False,
                          enabled=constrained_decoding)
        prompt = self.tokenizer.encode(prompt_text)
        limit = max_new_tokens or self._free_text_budget(vocab)
        result = decode_with_fsm(self.decoder, [prompt], fsm, sampling, limit, generator, 1.0,
                                 progress, cancel, record_margins)
        return PhaseOutput(result.prompt_ids, result.generated_ids,
                           self.tokenizer.decode(result.generated_ids), result.margins)

    # ---- public API ----------------------------------------------------------------------------
    def think(self, caption: str, lyrics: str, *, bpm=None, keyscale=None, timesignature=None, duration=None,
              language=None, sampling: Optional[LMSampling] = None, use_cot_caption: bool = True,
              use_cot_language: bool = True, constrained_decoding: bool = True, generate_codes: bool = True,
              max_duration: int = DURATION_MAX, progress=None, cancel=None) -> Plan:
        sampling = sampling or LMSampling()
        sampling.validate()
        timesignature = _clean_timesignature(timesignature)
        keyscale = keyscale.strip() if isinstance(keyscale, str) and keyscale.strip() else None
        language = language.strip() if isinstance(language, str) and language.strip() else None
        validate_user_fields(bpm, keyscale, timesignature, duration, language, max_duration)
        user = {}
        if bpm is not None:
            user["bpm"] = int(bpm)
        if keyscale is not None:
            user["keyscale"] = keyscale
        if timesignature is not None:
            user["timesignature"] = timesignature
        if duration is not None:
            user["duration"] = int(float(duration))
        if language is not None and use_cot_language:
            user["language"] = language
        seed = sampling.resolved_seed()
        out = self.generate_with_stop_condition(
            caption or "", lyrics or "", infer_type="llm_dit" if generate_codes else "dit", sampling=sampling,
            user_metadata=user, target_duration=float(duration) if duration is not None else None,
            use_cot_caption=use_cot_caption, use_cot_language=use_cot_language,
            constrained_decoding=constrained_decoding, max_duration=max_duration,
            generator=self._generator(seed), progress=progress, cancel=cancel,
        )
        md = out.metadata
        plan_caption = md.get("caption") if use_cot_caption and md.get("caption") else caption
        plan_language = language or (md.get("language") if use_cot_language else None)
        plan_duration = float(duration) if duration is not None else (
            float(len(out.audio_codes)) / CODES_PER_SECOND if out.audio_codes else _as_float(md.get("duration")))
        return Plan(
            caption=plan_caption, lyrics=lyrics, bpm=bpm if bpm is not None else _as_int(md.get("bpm")),
            key_scale=keyscale or md.get("keyscale"),
            time_signature=timesignature or _as_str(md.get("timesignature")),
            audio_duration=plan_duration, vocal_language=plan_language, audio_codes=out.audio_codes,
            cot_text=out.cot_text, lm_seed=seed,
        )

    def format_input(self, caption: str, lyrics: str, *, bpm=None, keyscale=None, timesignature=None,
                     duration=None, language=None, sampling: Optional[LMSampling] = None,
                     constrained_decoding: bool = True, max_duration: int = DURATION_MAX,
                     progress=None, cancel=None) -> Plan:
        sampling = sampling or LMSampling()
        sampling.validate()
        timesignature = _clean_timesignature(timesignature)
        validate_user_fields(bpm, keyscale or None, timesignature, duration, language or None, max_duration)
        caption = caption if caption and caption.strip() else "NO USER INPUT"
        lyrics = lyrics if lyrics and lyrics.strip() else "[Instrumental]"
        user = {}
        if bpm is not None and int(bpm) > 0:
            user["bpm"] = int(bpm)
        if duration is not None and int(float(duration)) > 0:
            user["duration"] = int(float(duration))
        if keyscale:
            user["keyscale"] = keyscale
        if timesignature:
            user["timesignature"] = timesignature
        if language:
            user["language"] = language
        seed = sampling.resolved_seed()
        phase = self.run_understand_phase(
            prompts.format_prompt(caption, lyrics), sampling, user_metadata=user or None,
            skip_language=bool(language), constrained_decoding=constrained_decoding, max_duration=max_duration,
            generator=self._generator(seed), progress=progress, cancel=cancel,
        )
        md, _ = prompts.parse_lm_output(phase.text)
        # What the user gave is the plan's, even when the LM stopped before writing it back.
        for key, value in user.items():
            md.setdefault(key, value)
        new_lyrics = prompts.extract_lyrics(phase.text) or lyrics
        return self._plan_from_metadata(md, new_lyrics, phase.text, seed, fallback_caption=caption,
                                        language=language)

    def create_sample(self, query: str, *, instrumental: bool = False, language=None,
                      sampling: Optional[LMSampling] = None, constrained_decoding: bool = True,
                      max_duration: int = DURATION_MAX, progress=None, cancel=None) -> Plan:
        sampling = sampling or LMSampling()
        sampling.validate()
        query = query if query and query.strip() else "NO USER INPUT"
        user = None
        if language and language.strip() and language.strip().lower() != "unknown":
            validate_user_fields(language=language.strip())
            user = {"language": language.strip()}
        seed = sampling.resolved_seed()
        phase = self.run_understand_phase(
            prompts.inspiration_prompt(query, instrumental), sampling, user_metadata=user,
            constrained_decoding=constrained_decoding, max_duration=max_duration,
            generator=self._generator(seed), progress=progress, cancel=cancel,
        )
        md, _ = prompts.parse_lm_output(phase.text)
        lyrics = prompts.extract_lyrics(phase.text) or ("[Instrumental]" if instrumental else "")
        return self._plan_from_metadata(md, lyrics, phase.text, seed, fallback_caption=None,
                                        language=user["language"] if user else None)

    def understand(self, audio_codes: list[int], *, sampling: Optional[LMSampling] = None,
                   constrained_decoding: bool = True, max_duration: int = DURATION_MAX,
                   progress=None, cancel=None) -> Plan:
        sampling = sampling or LMSampling(temperature=0.3, cfg_scale=1.0)
        sampling.validate()
        if not audio_codes:
            raise InputError("no audio codes given: pass the 5 Hz codes (ints 0..63999) to describe")
        bad = [c for c in audio_codes if not 0 <= int(c) < 64000]
        if bad:
            raise InputError(f"audio codes must be 0..63999, got {bad[:3]}")
        code_string = format_audio_codes(audio_codes)
        seed = sampling.resolved_seed()
        phase = self.run_understand_phase(
            prompts.understand_prompt(code_string), sampling, constrained_decoding=constrained_decoding,
            max_duration=max_duration, generator=self._generator(seed), progress=progress, cancel=cancel,
        )
        md, _ = prompts.parse_lm_output(phase.text)
        plan = self._plan_from_metadata(md, prompts.extract_lyrics(phase.text), phase.text, seed, None, None)
        plan.audio_codes = [int(c) for c in audio_codes]
        return plan

    @staticmethod
    def _plan_from_metadata(md: dict, lyrics: str, raw: str, seed: int, fallback_caption, language) -> Plan:
        return Plan(
            caption=md.get("caption") or fallback_caption, lyrics=lyrics, bpm=_as_int(md.get("bpm")),
            key_scale=md.get("keyscale"), time_signature=_as_str(md.get("timesignature")),
            audio_duration=_as_float(md.get("duration")), vocal_language=language or md.get("language"),
            audio_codes=[], cot_text=raw, lm_seed=seed,
        )


def _as_int(value) -> Optional[int]:
    return value if isinstance(value, int) else None


def _as_float(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) else None


def _as_str(value) -> Optional[str]:
    return None if value is None else str(value)
