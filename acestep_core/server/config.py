"""Server settings: one dataclass, filled from the official ACE-Step environment variables.

The variable names and defaults follow the official API server so existing deployments keep their
meaning (queue size, average-job window, API key); a few extra knobs (result expiry, upload and
source-length limits, state folder, shutdown grace) use the same `ACESTEP_` prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from ..switches import env_flag

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


@dataclass
class ServerConfig:
    # Where finished audio lives; /v1/audio serves files below this folder and nothing else.
    result_dir: Path
    # Extra folders a JSON request may name in src_audio_path / reference_audio_path
    # (ComfyUI's input folder); results of earlier jobs are always allowed too.
    input_dirs: tuple[Path, ...] = ()
    api_key: Optional[str] = None
    queue_maxsize: int = 200
    avg_job_seconds: float = 5.0
    avg_window: int = 50
    default_batch_size: int = 2
    max_batch_size: int = 8
    # Finished jobs (and their files) older than this are deleted by the cleanup task.
    result_max_age_s: float = 24 * 3600.0
    cleanup_interval_s: float = 300.0
    max_upload_bytes: int = 50 * 1024 * 1024
    # Longest source / reference audio accepted (seconds); None = what the engine can use (600 s, or
    # less where the memory decision says so).
    max_source_seconds: Optional[float] = None
    # JSON / form bodies of every route except /v1/chat/completions (which carries audio inline).
    max_json_body_bytes: int = 1024 * 1024
    # Where the job records live (default <result_dir>/.state).
    state_dir: Optional[Path] = None
    # How long SIGTERM waits for the running job to reach a cancel point.
    shutdown_grace_s: float = 5.0
    # Clamp duration / batch / source length to the memory decision (ACESTEP_MEMORY_LIMITS=off keeps
    # only the request table's 600 s x 8: for tiny test checkpoints, or a machine the policy misjudges).
    memory_limits: bool = True
    # How long /v1/chat/completions waits for its job before answering 504 (the job keeps running).
    generation_timeout_s: float = 600.0
    env_name: str = "development"
    # Refuse non-loopback clients unless an API key is set (for routes on a host server such as
    # ComfyUI's, which may listen on every interface).
    loopback_only: bool = False
    # /v1/lora/load reads adapters from these folders only (ACESTEP_LORA_DIR); none refuses every load.
    lora_dirs: tuple = ()
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, result_dir: Path, env: Optional[Mapping[str, str]] = None, **overrides) -> "ServerConfig":
        env = os.environ if env is None else env
        api_key = (env.get("ACESTEP_API_KEY") or "").strip() or None
        values = dict(
            result_dir=Path(result_dir),
            api_key=api_key,
            queue_maxsize=_env_int(env, "ACESTEP_QUEUE_MAXSIZE", 200),
            avg_job_seconds=_env_float(env, "ACESTEP_AVG_JOB_SECONDS", 5.0),
            avg_window=_env_int(env, "ACESTEP_AVG_WINDOW", 50),
            default_batch_size=_env_int(env, "ACESTEP_BATCH_SIZE", 2),
            result_max_age_s=_env_float(env, "ACESTEP_RESULT_MAX_AGE", 24 * 3600.0),
            cleanup_interval_s=_env_float(env, "ACESTEP_CLEANUP_INTERVAL", 300.0),
            max_upload_bytes=int(_env_float(env, "ACESTEP_MAX_UPLOAD_MB", 50.0) * 1024 * 1024),
            generation_timeout_s=_env_float(env, "ACESTEP_GENERATION_TIMEOUT", 600.0),
            lora_dirs=(Path(env["ACESTEP_LORA_DIR"]),) if (env.get("ACESTEP_LORA_DIR") or "").strip() else (),
            max_source_seconds=_env_float(env, "ACESTEP_MAX_SOURCE_SECONDS", 0.0) or None,
            max_json_body_bytes=int(_env_float(env, "ACESTEP_MAX_BODY_MB", 1.0) * 1024 * 1024),
            state_dir=Path(env["ACESTEP_STATE_DIR"]) if (env.get("ACESTEP_STATE_DIR") or "").strip() else None,
            shutdown_grace_s=_env_float(env, "ACESTEP_SHUTDOWN_GRACE", 5.0),
            memory_limits=env_flag("ACESTEP_MEMORY_LIMITS", True, "set 0 to turn the memory limits off, or 1", env),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.queue_maxsize < 1:
            raise ValueError("ACESTEP_QUEUE_MAXSIZE must be at least 1")
        if self.avg_window < 1:
            raise ValueError("ACESTEP_AVG_WINDOW must be at least 1")
        if not 1 <= self.default_batch_size <= self.max_batch_size:
            raise ValueError(f"ACESTEP_BATCH_SIZE must be between 1 and {self.max_batch_size}")
        if self.generation_timeout_s <= 0:
            raise ValueError("ACESTEP_GENERATION_TIMEOUT must be positive")
        if self.max_upload_bytes < 1:
            raise ValueError("ACESTEP_MAX_UPLOAD_MB must be positive")
        if self.max_json_body_bytes < 1024:
            raise ValueError("ACESTEP_MAX_BODY_MB must be at least 0.001 (1 KiB)")
        if self.max_source_seconds is not None and self.max_source_seconds <= 0:
            raise ValueError("ACESTEP_MAX_SOURCE_SECONDS must be positive")
        if self.shutdown_grace_s < 0:
            raise ValueError("ACESTEP_SHUTDOWN_GRACE must not be negative")
