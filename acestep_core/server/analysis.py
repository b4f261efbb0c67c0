"""The official /release_task analysis modes: answers from the LM (and the DiT's audio tokenizer)
without generating audio (docs/rest-api.md#analysis-modes).

- `extract_codes_only`: the source audio's 5 Hz semantic codes (VAE encode + the DiT's tokenizer).
- `full_analysis_only`: those codes described by the LM (caption, lyrics, bpm, key, time signature,
  duration, genre, language), as the Describe Audio node and `understand --src-audio` do.
- `analysis_only`: the LM's metadata chain of thought for the request's caption and lyrics (no codes).

When several are set the first in that order runs, as on the official server. Each returns the job's
result record; `query_result_item` turns it into the item /query_result answers, in the official shape.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from ..codes import format_audio_codes
from .models import ModelProvider
from .params import ReleaseRequest

MODES = ("extract_codes_only", "full_analysis_only", "analysis_only")
SOURCE_MODES = ("extract_codes_only", "full_analysis_only")
LM_MODES = ("full_analysis_only", "analysis_only")
CODES_DONE = "Audio Codes Extraction Success"
FULL_DONE = "Full Hardware Analysis Success"
ANALYSIS_DONE = "Success"
# The official server describes audio at temperature 0.3 (docs/lm.md#auxiliary-functions).
UNDERSTAND_TEMPERATURE = 0.3


def mode_of(req: ReleaseRequest) -> Optional[str]:
    """The analysis mode this request asks for, or None for a normal generation."""
    return next((mode for mode in MODES if req.values.get(mode)), None)


def run_analysis(mode: str, req: ReleaseRequest, provider: ModelProvider, *,
                 progress: Optional[Callable[[int, int], None]] = None,
                 set_stage: Callable[[str], None] = lambda stage: None,
                 cancel: Optional[Callable[[], bool]] = None) -> dict:
    """Run one analysis mode to completion (blocking, on the model thread); the job's result record."""
    t0 = time.perf_counter()
    if mode in SOURCE_MODES:
        codes = _source_codes(req, provider, set_stage, progress, cancel)
        code_string = format_audio_codes(codes)
        if mode == "extract_codes_only":
            item = {"status_message": CODES_DONE, "audio_codes": code_string, "audio_paths": [],
                    "raw_audio_paths": [], "first_audio_path": None, "metas": {}}
            return _record(item, req, t0)
        item = _describe(codes, code_string, req, provider, progress, set_stage, cancel)
        return _record(item, req, t0)
    return _record(_analyse_text(req, provider, progress, set_stage, cancel), req, t0)


def _record(item: dict, req: ReleaseRequest, started: float) -> dict:
    return {"analysis": item, "notices": list(req.notices), "seconds": round(time.perf_counter() - started, 3)}


def _source_codes(req: ReleaseRequest, provider: ModelProvider, set_stage, progress=None, cancel=None) -> list[int]:
    set_stage("loading models")
    pipe, _ = provider.pipeline(req.model)
    set_stage("encoding the source audio to codes")
    source = req.uploads.get("src_audio") or req.src_audio_path
    seed = req.seed[0] if not req.use_random_seed and req.seed and req.seed[0] >= 0 else 0
    return pipe.audio_to_codes(source, seed=seed, progress=progress, cancel=cancel)


def _sampling(req: ReleaseRequest, **overrides):
    from .generation import plan_options

    options = plan_options(req)
    for name, value in overrides.items():
        setattr(options, name, value)
    return options.sampling()


def _duration_cap(req: ReleaseRequest) -> dict:
    """The LM plans no song longer than this server's limit (as for a generation)."""
    return {"max_duration": int(req.max_duration_s)} if req.max_duration_s else {}


def _describe(codes, code_string, req, provider, progress, set_stage, cancel) -> dict:
    from ..lm.prompts import parse_lm_output

    planner = provider.planner()
    set_stage("lm: describing the audio")
    # Temperature 0.3 without CFG, as the official analysis; the request's LM seed is kept.
    sampling = _sampling(req, lm_temperature=UNDERSTAND_TEMPERATURE, lm_cfg_scale=1.0)
    plan = planner.understand(codes, sampling=sampling, progress=progress, cancel=cancel, **_duration_cap(req))
    metadata, _ = parse_lm_output(plan.cot_text)
    metas = {"bpm": plan.bpm, "keyscale": plan.key_scale, "timesignature": plan.time_signature,
             "duration": plan.audio_duration, "genres": metadata.get("genres"), "caption": plan.caption or "",
             "lyrics": plan.lyrics or "", "language": plan.vocal_language or "unknown"}
    return {"status_message": FULL_DONE, "bpm": plan.bpm, "keyscale": plan.key_scale,
            "timesignature": plan.time_signature, "duration": plan.audio_duration, "genre": metas["genres"],
            "prompt": metas["caption"], "lyrics": metas["lyrics"], "language": metas["language"], "metas": metas,
            "audio_codes": code_string, "audio_paths": [], "lm_model": provider.lm_name(),
            "lm_seed": plan.lm_seed}


def _analyse_text(req, provider, progress, set_stage, cancel) -> dict:
    planner = provider.planner()
    set_stage("lm: analysing the caption and lyrics")
    # The official analysis reads only the caption and lyrics: the metas come from the LM.
    plan = planner.think(req.prompt, req.lyrics, use_cot_caption=req.use_cot_caption,
                         use_cot_language=req.use_cot_language,
                         constrained_decoding=req.constrained_decoding, generate_codes=False,
                         sampling=_sampling(req), progress=progress, cancel=cancel, **_duration_cap(req))
    caption = plan.caption or req.prompt
    metas = {"bpm": plan.bpm, "keyscale": plan.key_scale, "timesignature": plan.time_signature,
             "duration": plan.audio_duration, "caption": caption, "language": plan.vocal_language}
    return {"status_message": ANALYSIS_DONE, "generation_info": "Analysis Only Mode Complete",
            "first_audio_path": None, "audio_paths": [], "raw_audio_paths": [], "metas": metas,
            "bpm": plan.bpm, "keyscale": plan.key_scale, "duration": plan.audio_duration, "prompt": caption,
            "lyrics": req.lyrics, "lm_model": provider.lm_name(), "dit_model": "None (Analysis Only)",
            "lm_seed": plan.lm_seed}


def query_result_item(record: dict, base: dict) -> dict:
    """The /query_result item of a finished analysis: the official server answers the full-analysis
    and code-extraction results as they are, and the text analysis as a song item without a file."""
    item = dict(record["analysis"])
    extra = {"progress": 1.0, "stage": "succeeded", "notices": record.get("notices", [])}
    if item.get("status_message") in (FULL_DONE, CODES_DONE):
        return dict(base, **item, **extra)
    metas = item.get("metas") or {}
    return dict(base, file="", prompt=item.get("prompt", ""), lyrics=item.get("lyrics", ""),
                metas={"bpm": metas.get("bpm"), "duration": metas.get("duration"), "genres": metas.get("genres", ""),
                       "keyscale": metas.get("keyscale", ""), "timesignature": metas.get("timesignature", "")},
                generation_info=item["generation_info"], status_message=item["status_message"],
                lm_model=item.get("lm_model"), dit_model=item.get("dit_model"), lm_seed=item.get("lm_seed"),
                seed_value="", **extra)
