"""One /release_task job, run to completion on the worker thread.

Order of work (the official server's): simple mode (`sample_mode` / `sample_query`) asks the LM to
write caption, lyrics and metadata; `use_format` asks it to rewrite the caption and lyrics; `thinking`
asks it for the plan with audio codes (text2music only: the LM is skipped for cover, repaint,
continuation and extract, and plans only metadata for lego and complete); then the DiT generates, and every batch item is written to the job's folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..request import LM_METAS_ONLY_TASKS, LM_SKIPPED_TASKS
from .files import audio_url
from .models import LMUnavailableError, ModelProvider
from .params import ReleaseRequest

INSTRUMENTAL_WORDS = ("instrumental", "no vocals", "no vocal", "without vocals", "no singing")


@dataclass
class Song:
    """The text and metadata the DiT is given; filled by the user, then possibly by the LM."""

    caption: str
    lyrics: str
    bpm: Optional[int]
    keyscale: str
    timesignature: str
    duration: Optional[float]
    language: str

    def missing_metas(self) -> bool:
        return _missing(self)

    def apply_plan(self, plan: Any, *, caption: bool = True, language: bool = True, metas_override: bool = False):
        """Take the LM's values: caption/lyrics when given; metas only where the user left them empty."""
        if caption and plan.caption:
            self.caption = plan.caption
        if getattr(plan, "lyrics", None):
            self.lyrics = plan.lyrics
        if language and plan.language:
            self.language = plan.language
        if plan.bpm and (metas_override or self.bpm is None):
            self.bpm = int(plan.bpm)
        if plan.keyscale and (metas_override or not self.keyscale):
            self.keyscale = plan.keyscale
        if plan.timesignature and (metas_override or not self.timesignature):
            self.timesignature = str(plan.timesignature).split("/", 1)[0]
        if plan.duration and (metas_override or self.duration is None):
            self.duration = float(plan.duration)


def _missing(song: "Song") -> bool:
    return song.bpm is None or not song.keyscale or not song.timesignature or song.duration is None


def wants_instrumental(query: str) -> bool:
    text = query.lower()
    return any(word in text for word in INSTRUMENTAL_WORDS)


def lm_sampling(req: ReleaseRequest):
    from ..lm import LMSampling

    return LMSampling(
        temperature=req.lm_temperature,
        cfg_scale=req.lm_cfg_scale,
        top_k=req.lm_top_k or 0,
        top_p=req.lm_top_p,
        repetition_penalty=req.lm_repetition_penalty,
        negative_prompt=req.lm_negative_prompt,
        seed=req.lm_seed,
    )


def lm_duration_cap(req: ReleaseRequest) -> dict:
    """Let the LM plan no longer a song than this server may generate (its codes set the length)."""
    return {"max_duration": int(req.max_duration_s)} if req.max_duration_s else {}


def optional_planner(provider: ModelProvider):
    """The LM for optional work (CoT metadata): None when absent or broken, like the official server."""
    if provider.lm_name() is None:
        return None
    try:
        return provider.planner()
    except LMUnavailableError:
        return None


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
    timings: dict[str, float] = {}
    notices: list[str] = list(req.notices)
    song = user_song(req)
    task = req.task_type
    query = req.sample_query.strip()
    lm_plan = None

    if req.sample_mode or query:
        set_stage("lm: writing a song from the description")
        t0 = time.perf_counter()
        planner = provider.planner()
        language = req.vocal_language if req.vocal_language not in ("", "en", "unknown") else None
        plan = planner.create_sample(query or "NO USER INPUT", instrumental=wants_instrumental(query),
                                     language=language, sampling=lm_sampling(req), cancel=cancel,
                                     **lm_duration_cap(req))
        song.apply_plan(plan, metas_override=True)
        timings["lm_sample_s"] = time.perf_counter() - t0

    if req.use_format and (song.caption or song.lyrics):
        set_stage("lm: formatting caption and lyrics")
        t0 = time.perf_counter()
        planner = provider.planner()
        plan = planner.format_input(song.caption, song.lyrics, bpm=song.bpm, keyscale=song.keyscale or None,
                                    timesignature=song.timesignature or None, duration=song.duration,
                                    language=song.language or None, sampling=lm_sampling(req), cancel=cancel)
        song.apply_plan(plan)
        timings["lm_format_s"] = time.perf_counter() - t0

    wants_cot = req.use_cot_caption or req.use_cot_language
    if req.thinking and task not in LM_SKIPPED_TASKS:
        set_stage("lm: planning audio codes")
        t0 = time.perf_counter()
        lm_plan = provider.planner().think(
            song.caption, song.lyrics, bpm=song.bpm, keyscale=song.keyscale or None,
            timesignature=song.timesignature or None, duration=song.duration, language=song.language or None,
            sampling=lm_sampling(req), use_cot_caption=req.use_cot_caption,
            use_cot_language=req.use_cot_language, constrained_decoding=req.constrained_decoding,
            generate_codes=task not in LM_METAS_ONLY_TASKS, cancel=cancel, **lm_duration_cap(req))
        song.apply_plan(lm_plan, caption=req.use_cot_caption, language=req.use_cot_language)
        timings["lm_think_s"] = time.perf_counter() - t0
    elif task == "text2music" and wants_cot and song.missing_metas() and not timings:
        # thinking=false: the LM may still fill missing metadata (no codes), if the server has one.
        planner = optional_planner(provider)
        if planner is not None:
            set_stage("lm: filling missing metadata")
            t0 = time.perf_counter()
            metas_plan = planner.think(
                song.caption, song.lyrics, bpm=song.bpm, keyscale=song.keyscale or None,
                timesignature=song.timesignature or None, duration=song.duration,
                language=song.language or None, sampling=lm_sampling(req), use_cot_caption=req.use_cot_caption,
                use_cot_language=req.use_cot_language, constrained_decoding=req.constrained_decoding,
                generate_codes=False, cancel=cancel, **lm_duration_cap(req))
            song.apply_plan(metas_plan, caption=req.use_cot_caption, language=req.use_cot_language)
            timings["lm_metas_s"] = time.perf_counter() - t0

    if req.max_duration_s is not None and song.duration is not None and song.duration > req.max_duration_s:
        # The LM may plan a longer song than this machine's memory decision allows.
        notices.append(f"The planned duration {song.duration:g} s is more than this server's limit of "
                       f"{req.max_duration_s:g} s; generating {req.max_duration_s:g} s instead.")
        song.duration = float(req.max_duration_s)

    set_stage("loading models")
    pipe, dit_name = provider.pipeline(req.model)
    gen = engine_request(req, song, lm_plan)
    set_stage("generating")
    t0 = time.perf_counter()
    result = pipe.generate(gen, progress=progress, cancel=cancel)
    timings["dit_s"] = time.perf_counter() - t0

    set_stage("saving")
    files = save_batch(result, job_dir, task_id, req.audio_format, song)
    params = dict(getattr(result, "params", {}) or {})
    # The length of the audio actually written, whatever was asked for.
    duration = result.audio.shape[-1] / result.sample_rate
    seeds_used = [int(s) for s in result.seeds]
    return {
        "files": [str(f) for f in files],
        "audio_urls": [audio_url(f) for f in files],
        "prompt": song.caption,
        "lyrics": song.lyrics,
        "metas": {
            "bpm": song.bpm if song.bpm is not None else "N/A",
            "duration": round(float(duration), 3),
            "genres": "N/A",
            "keyscale": song.keyscale or "N/A",
            "timesignature": song.timesignature or "N/A",
            "prompt": req.prompt,
            "lyrics": req.lyrics,
        },
        "vocal_language": song.language,
        "seed_value": ",".join(str(s) for s in seeds_used),
        "lm_seed": getattr(lm_plan, "lm_seed", None),
        "generation_info": generation_info(timings, seeds_used, req, len(files), params.get("audio_code_count", 0)),
        "dit_model": dit_name,
        "lm_model": provider.lm_name() if any(k.startswith("lm_") for k in timings) else None,
        "params": params,
        "notices": notices,
    }


def user_song(req: ReleaseRequest) -> Song:
    return Song(req.prompt, req.lyrics, req.bpm, req.key_scale, req.time_signature, req.audio_duration,
                req.vocal_language)


def engine_request(req: ReleaseRequest, song: Optional[Song] = None, plan: Any = None):
    """The engine's GenerationRequest for a REST request (the song as the LM left it, if it ran).

    Built in one place so the check at submit (`GenerationRequest.validate`) sees exactly what the
    job will run.
    """
    from ..request import GenerationRequest

    song = song or user_song(req)
    seeds = [-1] if req.use_random_seed else req.seed
    return GenerationRequest(
        caption=song.caption,
        lyrics=song.lyrics,
        bpm=song.bpm,
        key_scale=song.keyscale,
        time_signature=song.timesignature,
        vocal_language=song.language,
        audio_duration=song.duration,
        inference_steps=req.inference_steps,
        guidance_scale=req.guidance_scale,
        shift=req.shift,
        seed=seeds[0] if len(seeds) == 1 else seeds,
        infer_method=req.infer_method,
        timesteps=req.timesteps,
        task_type=req.task_type,
        src_audio=req.uploads.get("src_audio") or req.src_audio_path,
        reference_audio=req.uploads.get("reference_audio") or req.reference_audio_path,
        repainting_start=req.repainting_start,
        repainting_end=req.repainting_end,
        audio_cover_strength=req.audio_cover_strength,
        cover_noise_strength=req.cover_noise_strength,
        audio_code_string=req.audio_code_string,
        cfg_interval_start=req.cfg_interval_start,
        cfg_interval_end=req.cfg_interval_end,
        chunk_mask_mode=req.chunk_mask_mode,
        repaint_mode=req.repaint_mode,
        repaint_strength=req.repaint_strength,
        track_name=req.track_name,
        track_classes=req.track_classes,
        instruction=req.instruction,
        batch_size=req.batch_size,
        plan=plan,
        adapters=list(req.adapters),
    )


def save_batch(result, job_dir: Path, task_id: str, fmt: str, song: Song) -> list[Path]:
    """Write every batch item; each file appears under its final name only once it is complete."""
    import os

    from ..audio_io import save_audio

    job_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"title": song.caption[:120], "comment": song.caption, "lyrics": song.lyrics}
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


def generation_info(timings: dict[str, float], seeds: list[int], req: ReleaseRequest, n_audio: int,
                    n_codes: int) -> str:
    parts = [f"{n_audio} audio(s)", f"steps={req.inference_steps}", f"seeds={','.join(map(str, seeds))}",
             f"audio_codes={n_codes}"]
    parts += [f"{k}={v:.2f}" for k, v in timings.items()]
    return "; ".join(parts)
