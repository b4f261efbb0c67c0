"""How much work one request may ask of this server, and what the server says about it.

- Duration and batch are clamped to the memory decision with the same `clamp_request` the CLI uses;
  the messages travel with the job (submit response, result items, generation_info).
- Source audio may be at most as long as the engine can generate (600 s, or the memory decision's
  duration limit when lower): cover, repaint, extract, lego and complete keep the source's length.
  Reference audio is only sampled for 30 s of timbre, but it is decoded whole, so it gets the
  engine's 600 s limit too.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..request import MAX_DURATION
from .params import MAX_TEXT_CHARS, ReleaseRequest

logger = logging.getLogger(__name__)


def active(config, decision: Any) -> Any:
    """The decision requests are held to, or None when there is none or ACESTEP_MEMORY_LIMITS=off."""
    return decision if config.memory_limits else None


def source_limit_s(config, decision: Any) -> float:
    limit = float(config.max_source_seconds or MAX_DURATION)
    decision = active(config, decision)
    if decision is not None:
        limit = min(limit, float(decision.max_duration_s))
    return limit


def reference_limit_s(config) -> float:
    return float(config.max_source_seconds or MAX_DURATION)


def clamp_to_decision(req: ReleaseRequest, config, decision: Any) -> list[str]:
    """Apply the memory decision's duration and batch limits to `req` (in place); returns the notices.

    An analysis mode makes no audio: it only gets the duration cap for what the LM plans, no notices."""
    decision = active(config, decision)
    if decision is None:
        return []
    from .analysis import mode_of

    if mode_of(req) is not None:
        req.max_duration_s = float(decision.max_duration_s)
        return []
    from ..memory.policy import clamp_request

    duration, batch, messages = clamp_request(decision, req.audio_duration, req.batch_size)
    req.values["audio_duration"] = duration
    req.values["batch_size"] = batch
    req.max_duration_s = float(decision.max_duration_s)
    req.notices.extend(messages)
    for message in messages:
        logger.info(message)
    return messages


def describe(config, decision: Any) -> dict:
    """The limits block of /v1/stats."""
    held = active(config, decision)
    out: dict[str, Any] = {
        "memory_limits": "on" if held is not None else "off",
        "max_duration_s": float(held.max_duration_s) if held is not None else MAX_DURATION,
        "max_batch_size": min(config.max_batch_size, held.max_batch) if held is not None
        else config.max_batch_size,
        "max_source_seconds": source_limit_s(config, decision),
        "max_reference_seconds": reference_limit_s(config),
        "max_upload_mb": round(config.max_upload_bytes / (1024 * 1024), 2),
        "max_body_bytes": config.max_json_body_bytes,
        "max_text_chars": dict(MAX_TEXT_CHARS),
        "queue_maxsize": config.queue_maxsize,
    }
    return out


def decision_block(decision: Any) -> Optional[dict]:
    if decision is None:
        return None
    block = decision.to_dict()
    return {k: block[k] for k in ("summary", "tier", "device_type", "device_name", "total_gb", "simulated",
                                  "max_duration_s", "max_batch", "lm_model", "init_lm", "offload_to_cpu",
                                  "offload_dit_to_cpu", "vae_chunk_frames", "dtype", "reasons")}
