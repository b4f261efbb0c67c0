"""Builds engine requests from golden-case manifests, shared by the engine tests."""

from __future__ import annotations

import functools

from conftest import TINY_DIR, load_golden

from acestep_core import GenerationRequest

GENERATION_CASES = [
    "t2m_turbo",
    "t2m_base_apg",
    "t2m_base_apg_interval",
    "repaint_explicit_balanced",
    "repaint_auto_default",
    "repaint_explicit_aggressive",
    "continuation_turbo",
    "cover_codes_turbo",
    "cover_codes_strength_turbo",
    "cover_codes_base_apg_strength",
    "cover_audio_turbo",
]


@functools.lru_cache(maxsize=None)
def tiny_pipeline(model: str = "acestep-v15-turbo-tiny"):
    from acestep_core.pipeline import ACEStepPipeline

    return ACEStepPipeline.from_pretrained(
        dit=TINY_DIR / model,
        vae=TINY_DIR / "vae-tiny",
        text_encoder=TINY_DIR / "Qwen3-Embedding-tiny",
        dtype="float32",
    )


def request_for_case(case: dict, golden: dict) -> GenerationRequest:
    kw = case["kwargs"]
    request = GenerationRequest(
        caption=kw.get("captions", ""),
        lyrics=kw.get("lyrics", ""),
        bpm=kw.get("bpm"),
        key_scale=kw.get("key_scale", ""),
        time_signature=kw.get("time_signature", ""),
        vocal_language=kw.get("vocal_language", "en"),
        audio_duration=kw.get("audio_duration"),
        inference_steps=kw.get("inference_steps", 8),
        guidance_scale=kw.get("guidance_scale", 7.0),
        shift=kw.get("shift", 3.0),
        seed=kw["seed"],
        task_type=kw["task_type"],
        repainting_start=kw.get("repainting_start", 0.0),
        repainting_end=kw.get("repainting_end"),
        audio_cover_strength=kw.get("audio_cover_strength", 1.0),
        audio_code_string=case.get("audio_code_string") or "",
        cfg_interval_start=kw.get("cfg_interval_start", 0.0),
        cfg_interval_end=kw.get("cfg_interval_end", 1.0),
        chunk_mask_mode=kw.get("chunk_mask_mode", "auto"),
        repaint_mode=kw.get("repaint_mode", "balanced"),
        repaint_strength=kw.get("repaint_strength", 0.5),
    )
    if case.get("src_audio"):
        source = load_golden("source_audio")["src_a"]
        if case["src_audio"] == "src_a_prefix":
            source = source[:, :211200]
        request.src_audio = source
        # The reference sampled the VAE posterior with its global RNG; feed its sample (README §2 step 6).
        request.src_latents = golden["mid.target_latents"]
    return request
