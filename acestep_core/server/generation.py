"""One /release_task job, run to completion on the worker thread.

The LM stages (simple mode, format, thinking, missing metas) are the engine's one planning step,
`acestep_core.planning.plan_request`, with the REST defaults; then the DiT generates, and every batch
item is written to the job's folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from .. import schema
from ..planning import METAS, PlanOptions, plan_request
from ..request import LM_METAS_ONLY_TASKS, LM_SKIPPED_TASKS  # noqa: F401 (re-exported)
from .files import audio_url
from .models import LMUnavailableError, ModelProvider
from .params import RELEASE_FIELDS, ReleaseRequest

# REST name -> schema name for the fields the engine's request takes.
_REQUEST_FIELDS = {f.name: f.engine_name for f in RELEASE_FIELDS
                   if f.engine_name and schema.spec(f.engine_name).target == "request"}
_PLAN_FIELDS = {f.name: f.engine_name for f in RELEASE_FIELDS
                if f.engine_name and schema.spec(f.engine_name).target == "plan"}


def optional_planner(provider: ModelProvider):
    """The LM for optional work (CoT metadata): None when absent or broken, like the official server."""
    if provider.lm_name() is None:
        return None
    try:
        return provider.planner()
    except LMUnavailableError:
        return None


def plan_options(req: ReleaseRequest) -> PlanOptions:
    """The REST request's LM settings; thinking=false still lets the server's LM fill missing metas."""
    values = {engine: req.values[rest] for rest, engine in _PLAN_FIELDS.items()}
    return PlanOptions.from_values(values, "rest", fill_missing_metas=True, max_duration=req.max_duration_s)


def typed_metas(req: ReleaseRequest) -> set[str]:
    """The metas the client sent (the REST default vocal_language "en" is not the client's choice)."""
    return {_REQUEST_FIELDS.get(name, name) for name in req.explicit} & set(METAS)


GENERATING = "generating"
ENCODING = "encoding audio (VAE)"


def encode_stage(progress: Optional[Callable[[int, int], None]], set_stage: Callable[[str], None]):
    """The job's view of a VAE encode (of the source or the timbre reference): a stage of its own
    with its tiles as the progress, then "generating" again from 0, so the fraction a client reads
    while "generating" stays the diffusion's."""
    def report(done: int, total: int) -> None:
        finished = done >= total
        set_stage(GENERATING if finished else ENCODING)
        if progress is not None:
            progress(0 if finished else done, total)

    return report


def run_job(
    req: ReleaseRequest,
    provider: ModelProvider,
    job_dir: Path,
    task_id: str,
    *,
    progress: Optional[Callable[[int, int], None]] = None,
    set_stage: Callable[[str], None] = lambda stage: None,
    cancel: Optional[Callable[[], bool]] = None,
) -> dict:
    """Generate, save and describe the audio for one request. Blocking; raises on failure.

    `cancel()` is polled at every LM token, diffusion step and VAE tile; when it returns True the
    engine raises CancelledError and nothing is saved.
    """
    from .analysis import mode_of, run_analysis

    mode = mode_of(req)
    if mode is not None:  # an analysis answers from the LM instead of making audio
        return run_analysis(mode, req, provider, progress=progress, set_stage=set_stage, cancel=cancel)
    gen, report = plan_request(engine_request(req), plan_options(req), provider.planner, typed=typed_metas(req),
                               optional_planner=lambda: optional_planner(provider), progress=progress,
                               cancel=cancel, set_stage=set_stage)
    timings = dict(report.timings)
    notices = list(req.notices) + report.notices

    set_stage("loading models")
    pipe, dit_name = provider.pipeline(req.model)
    set_stage(GENERATING)
    t0 = time.perf_counter()
    result = pipe.generate(gen, progress=progress, cancel=cancel,
                           encode_progress=encode_stage(progress, set_stage))
    timings["dit_s"] = time.perf_counter() - t0
    notices += result.notices

    set_stage("saving")
    files = save_batch(result, job_dir, task_id, req.audio_format, gen.caption, gen.lyrics)
    params = dict(getattr(result, "params", {}) or {})
    # The length of the audio actually written, whatever was asked for.
    duration = result.audio.shape[-1] / result.sample_rate
    seeds_used = [int(s) for s in result.seeds]
    return {
        "files": [str(f) for f in files],
        "audio_urls": [audio_url(f) for f in files],
        # The caption and lyrics as the client knows them: its own, or what simple mode / format wrote.
        # The chain of thought's rewrite of the caption goes to the DiT only (as on the official server).
        **dict(zip(("prompt", "lyrics"), report.written_text(req.prompt, req.lyrics))),
        "metas": {
            "bpm": gen.bpm if gen.bpm is not None else "N/A",
            "duration": round(float(duration), 3),
            "genres": "N/A",
            "keyscale": gen.key_scale or "N/A",
            "timesignature": gen.time_signature or "N/A",
            "prompt": req.prompt,
            "lyrics": req.lyrics,
        },
        "vocal_language": gen.vocal_language,
        "seed_value": ",".join(str(s) for s in seeds_used),
        "lm_seed": report.lm_seed,
        "generation_info": generation_info(timings, seeds_used, params.get("inference_steps", req.inference_steps),
                                           len(files), params.get("audio_code_count", 0)),
        "dit_model": dit_name,
        "lm_model": provider.lm_name(),  # the server's LM, used or not, as the official server reports it
        "params": params,
        "notices": notices,
    }


def engine_request(req: ReleaseRequest):
    """The engine's GenerationRequest for a REST request, field by field from the schema.

    Built in one place so the check at submit sees exactly what the job will run; validated, so its
    vocabulary fields are in the models' spelling ('C Major' -> 'C major') before the LM is told them.
    """
    from ..request import GenerationRequest

    values = {engine: req.values[rest] for rest, engine in _REQUEST_FIELDS.items()}
    seeds = [-1] if req.use_random_seed else req.seed
    values["seed"] = seeds[0] if len(seeds) == 1 else seeds
    values["src_audio"] = req.uploads.get("src_audio") or req.src_audio_path
    values["reference_audio"] = req.uploads.get("reference_audio") or req.reference_audio_path
    request = GenerationRequest(**values, adapters=list(req.adapters))
    request.validate()
    return request


def save_batch(result, job_dir: Path, task_id: str, fmt: str, caption: str, lyrics: str) -> list[Path]:
    """Write every batch item; each file appears under its final name only once it is complete."""
    import os

    from ..audio_io import save_audio

    job_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"title": caption[:120], "comment": caption, "lyrics": lyrics}
    paths = []
    # wav32 is the official name for 32-bit float WAV.
    fmt, ext, quality = ("wav", "wav", 32) if fmt == "wav32" else (fmt, fmt, None)
    for i in range(result.audio.shape[0]):
        path = job_dir / f"{task_id}_{i + 1}.{ext}"
        partial = job_dir / f".{task_id}_{i + 1}.partial.{ext}"
        save_audio(partial, result.audio[i], sample_rate=result.sample_rate, format=fmt, quality=quality,
                   metadata=metadata)
        os.replace(partial, path)
        paths.append(path)
    return paths


def generation_info(timings: dict[str, float], seeds: list[int], steps, n_audio: int, n_codes: int) -> str:
    parts = [f"{n_audio} audio(s)", f"steps={steps}", f"seeds={','.join(map(str, seeds))}",
             f"audio_codes={n_codes}"]
    parts += [f"{k}={v:.2f}" for k, v in timings.items()]
    return "; ".join(parts)
