"""ACE-Step 1.5 generation: check inputs → encode → prepare latents → denoise → decode.

The models come from diffusers (DiT, condition encoder, audio tokenizer/detokenizer,
AutoencoderOobleck) and transformers (Qwen3); the orchestration follows the official handler.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .adapters import decoder_adapters
from .codes import codes_per_item, codes_to_hints, format_audio_codes, latents_to_codes, latents_to_hints
from .conditioning import encode_caption_only, encode_condition, encode_texts, timbre_inputs
from .dit import DiTModel, load_dit, load_dit_file
from .errors import CancelledError, CheckpointError, InputError
from .latent_mask import frame_mask
from .memory.dtypes import resolve_dtype  # the one `auto` rule (docs/memory.md#dtypes)
from .memory.offload import OffloadManager
from .memory.policy import system_ram
from .prompts import TEXT2MUSIC_INSTRUCTION, TRACK_TASKS, metas_string, track_instruction
from .request import MAX_SEED, GenerationRequest
from .switches import env_flag
from .checkpoints import read_safetensors, safetensors_keys
from .sources import source_waveform
from .sampling import SamplerSettings, denoise, prepare_noise
from .schedules import base_schedule, nearest_turbo_shift, parse_timesteps, start_from_source, turbo_note, turbo_schedule
from .tasks import (
    DEFAULT_DURATION,
    FRAMES_PER_SECOND,
    HOP,
    MIN_FRAMES,
    SAMPLE_RATE,
    TaskInputs,
    codes_cover_inputs,
    cover_audio_inputs,
    full_source_inputs,
    pad_for_window,
    repaint_inputs,
    text2music_inputs,
)
from .text_encoder import TextEncoder, load_text_encoder
from .repaint import RepaintGuide, crossfade_latents, resolve_window, splice_waveform
from .memory.vae_fallback import decode_with_fallback, official_vae_decode_fn
from .vae import cpu_decode_window, decode_chunk_frames, load_vae, polled_inside_tiles, vae_encode

logger = logging.getLogger(__name__)

DEFAULT_DIT = "acestep-v15-turbo"
DEFAULT_VAE = "vae"
DEFAULT_TEXT_ENCODER = "Qwen3-Embedding-0.6B"
TIMBRE_SECONDS = 30.0
TIMBRE_SEGMENT_SECONDS = 10.0


def mask_padded_frames_switch(env=None) -> bool:
    """ACESTEP_MASK_PADDED_FRAMES (default off, the official behaviour); a word that is not yes / no is
    an InputError, which the loaders raise before any model loads."""
    return bool(env_flag("ACESTEP_MASK_PADDED_FRAMES", False, "set 1 to hide padded latent frames from the DiT, "
                         "or 0 (or leave it unset) for the official behaviour", env))


@dataclass
class GenerationResult:
    audio: torch.Tensor  # [B, 2, samples] float32 CPU, 48 kHz
    latents: torch.Tensor  # [B, T, 64] float32 CPU
    seeds: list[int]
    params: dict[str, Any]
    sample_rate: int = SAMPLE_RATE
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # what the run changed of the request, for the user


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N, mps or xpu") from None
    _check_device_available(resolved)
    return resolved


def _check_device_available(device: torch.device) -> None:
    """Say so up front when the asked device is not there, instead of failing inside the first model."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} asked for, but no CUDA GPU is available to this torch "
                             f"(torch {torch.__version__}); use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s), numbered from 0")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device 'mps' asked for, but Apple's Metal backend is not available; use cpu (or auto)")
    elif device.type == "xpu":
        if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            raise InputError("device 'xpu' asked for, but no Intel GPU is available to this torch; use cpu (or auto)")


def _resolve_component(explicit, checkpoint_dir: Optional[Path], default_name: str, what: str) -> Path:
    if explicit is not None:
        path = Path(explicit)
        if not path.exists() and checkpoint_dir is not None and (checkpoint_dir / path).exists():
            path = checkpoint_dir / path
        return path
    if checkpoint_dir is None:
        raise CheckpointError(
            f"no {what} given: pass a checkpoint directory (holding {default_name}/) or the {what} path itself"
        )
    return checkpoint_dir / default_name


def _vae_callbacks(what: str, progress: Optional[Callable[[int, int], None]],
                   cancel: Optional[Callable[[], bool]]):
    """(poll, at_tile) for a tiled VAE pass: `poll()` raises CancelledError when `cancel()` says so;
    `at_tile(done, total)` reports progress, then polls."""
    def poll() -> None:
        if cancel is not None and cancel():
            raise CancelledError(f"{what} cancelled")

    def at_tile(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        poll()

    return poll, at_tile


class ACEStepPipeline:
    def __init__(
        self,
        dit: DiTModel,
        vae: torch.nn.Module,
        text_encoder: TextEncoder,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: Optional[OffloadManager] = None,
        vae_chunk_frames: Optional[int] = None,
        vae_chunk_fixed: Optional[bool] = None,
    ):
        self.dit = dit
        self.vae = vae
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload = offload or OffloadManager(self.device)
        self.vae_chunk_frames = vae_chunk_frames
        # A window the caller gave is kept as given; else on the CPU it grows to what RAM holds.
        self.vae_chunk_fixed = vae_chunk_frames is not None if vae_chunk_fixed is None else vae_chunk_fixed
        # The official DiT discards the latent mask its handler passes (its forward sets the attention
        # mask to None), so by default padded frames stay visible, as there. Opting in hides them, so
        # each item of a mixed-length batch comes out as if it had run alone.
        # None: follow ACESTEP_MASK_PADDED_FRAMES at each generation; True / False: fixed.
        self.mask_padded_frames: Optional[bool] = None
        for name, module in self.components.items():
            self.offload.place(self._offload_group(name), module)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path | None = None,
        dit: str | Path | None = None,
        vae: str | Path | None = None,
        text_encoder: str | Path | None = None,
        text_tokenizer: str | Path | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype = "auto",
        config_override: Optional[dict] = None,
        vae_config_override: Optional[dict] = None,
        offload_to_cpu: bool = False,
        offload_dit_to_cpu: bool = False,
        vae_chunk_frames: Optional[int] = None,
        vae_chunk_fixed: Optional[bool] = None,
    ) -> "ACEStepPipeline":
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        root = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if root is not None and not root.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {root}")
        dit_path = _resolve_component(dit, root, DEFAULT_DIT, "DiT")

        bundle: dict[str, torch.Tensor] | None = None
        if dit_path.is_file():
            keys = safetensors_keys(dit_path)
            if any(k.startswith("vae.") for k in keys) or any(k.startswith("text_encoders.") for k in keys):
                bundle = read_safetensors(dit_path)  # all-in-one checkpoint: DiT, text encoders and VAE in one file
            # A DiT-only file is read inside the loader, so its tensors are released as they are converted.
            dit_model = load_dit_file(dit_path, dtype=torch_dtype, config_override=config_override, tensors=bundle)
        else:
            dit_model = load_dit(dit_path, dtype=torch_dtype, config_override=config_override)

        if vae is None and bundle is not None:
            vae_model = load_vae(dit_path, dtype=torch.float32 if torch_dtype == torch.float32 else torch_dtype,
                                 state_dict={k[4:]: v for k, v in bundle.items() if k.startswith("vae.")},
                                 config_override=vae_config_override)
        else:
            vae_path = _resolve_component(vae, root, DEFAULT_VAE, "VAE")
            vae_model = load_vae(vae_path, dtype=torch_dtype, config_override=vae_config_override)

        tokenizer_path = Path(text_tokenizer) if text_tokenizer is not None else None
        if tokenizer_path is None and root is not None and (root / DEFAULT_TEXT_ENCODER / "tokenizer.json").is_file():
            tokenizer_path = root / DEFAULT_TEXT_ENCODER
        if text_encoder is None and bundle is not None:
            te_tensors = {k: v for k, v in bundle.items() if k.startswith("text_encoders.qwen3_06b.")}
            if not te_tensors:
                raise CheckpointError(f"{dit_path} holds no text_encoders.qwen3_06b.* weights; give the text encoder separately")
            te = load_text_encoder(dit_path, tokenizer_path=tokenizer_path, dtype=torch_dtype, tensors=te_tensors)
        else:
            te_path = _resolve_component(text_encoder, root, DEFAULT_TEXT_ENCODER, "text encoder")
            te = load_text_encoder(te_path, tokenizer_path=tokenizer_path, dtype=torch_dtype)
        offload = OffloadManager(device, offload_to_cpu=offload_to_cpu, offload_dit_to_cpu=offload_dit_to_cpu)
        return cls(dit_model, vae_model, te, device=device, dtype=torch_dtype, offload=offload, vae_chunk_frames=vae_chunk_frames,
                   vae_chunk_fixed=vae_chunk_fixed)

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        mods = dict(self.dit.modules())
        mods["vae"] = self.vae
        mods["text_encoder"] = self.text_encoder.model
        return mods

    @staticmethod
    def _offload_group(name: str) -> str:
        return "dit" if name in ("transformer",) else name

    @property
    def default_steps(self) -> int:
        """The official step count of this model: 8 for turbo, 32 for base / sft."""
        return 8 if self.is_turbo else 32

    @property
    def is_turbo(self) -> bool:
        return self.dit.is_turbo

    @property
    def config(self) -> dict:
        return self.dit.config

    @property
    def model_name(self) -> str:
        return self.dit.name

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        request: GenerationRequest,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Optional[Callable[[], bool]] = None,
        latents: Optional[torch.Tensor] = None,
        decode_progress: Optional[Callable[[int, int], None]] = None,
        encode_progress: Optional[Callable[[int, int], None]] = None,
    ) -> GenerationResult:
        """Run one request. `latents` optionally replaces the seeded initial noise [B, T, 64].

        `progress(step, total)` is called after each diffusion step, `decode_progress(tile, total)`
        after each VAE decode tile, and `encode_progress(tile, total)` with 0 before and after each
        tile of every VAE encode of a source or timbre reference (a stage of its own before the steps,
        one run per encode). `cancel()` is polled in all three, inside VAE tiles too."""
        timings: dict[str, float] = {}
        started = time.perf_counter()

        # 1. check inputs
        request = self._apply_plan(request)
        request.validate()
        seeds = [s if s is not None else random.randint(0, MAX_SEED) for s in request.seeds()]
        batch = request.batch_size
        device, dtype = self.device, self.dtype
        item_codes = codes_per_item(request.audio_code_string, batch)
        codes = item_codes[0]

        def encode(wave: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return self.encode_audio(wave, generator, progress=encode_progress, cancel=cancel)

        # 2. prepare the task's source latents and masks
        task_inputs = self._prepare_task(request, item_codes, seeds, encode)
        caption = request.caption or ""
        metas = metas_string(request.bpm, request.time_signature, request.key_scale, task_inputs.metas_duration)
        language = request.vocal_language or "unknown"
        timings["prepare"] = time.perf_counter() - started

        # 3. encode text, lyrics, timbre → condition
        t0 = time.perf_counter()
        with self.offload.use("text_encoder", self.text_encoder.model):
            texts = encode_texts(self.text_encoder, task_inputs.instruction, [caption] * batch, [metas] * batch,
                                 [request.lyrics or ""] * batch, [language] * batch, device, dtype)
            non_cover_caption = None
            switch = task_inputs.is_cover and request.audio_cover_strength < 1.0
            if switch:
                nc_hidden, nc_mask, _ = encode_caption_only(self.text_encoder, TEXT2MUSIC_INSTRUCTION, [caption] * batch,
                                                            [metas] * batch, device, dtype)
                # The reference reuses the cover caption's token length for the non-cover caption.
                non_cover_caption = fit_length(nc_hidden, nc_mask, texts.caption_hidden.shape[1])
        reference_latents = self._reference_latents(request, seeds, batch, encode)
        with self.offload.use("condition_encoder", self.dit.condition_encoder), \
                self.offload.use("audio_tokenizer", self.dit.audio_tokenizer), \
                self.offload.use("detokenizer", self.dit.detokenizer):
            refer_packed, refer_order = timbre_inputs(self.dit, batch, reference_latents, device, dtype)
            src_latents = task_inputs.src_latents.to(device=device, dtype=dtype).expand(batch, -1, -1)
            if task_inputs.task == "cover" and not codes:
                # Cover from audio: the source passes through the 5 Hz tokenizer bottleneck.
                src_latents = latents_to_hints(self.dit, src_latents)
            chunk_mask = task_inputs.chunk_mask.to(device=device).expand(batch, -1)
            condition = encode_condition(self.dit, texts, None, None, refer_packed, refer_order, src_latents, chunk_mask)
            non_cover = None
            if switch:
                silence_src = self.dit.silence_latent[:, : task_inputs.frames].to(device=device, dtype=dtype).expand(batch, -1, -1)
                non_cover = encode_condition(self.dit, texts, non_cover_caption[0], non_cover_caption[1], refer_packed,
                                             refer_order, silence_src, chunk_mask)
        timings["encode"] = time.perf_counter() - t0

        # 4. prepare latents and the schedule
        noise, generators = prepare_noise(seeds, task_inputs.frames, 64, device, dtype)
        if latents is not None:
            if tuple(latents.shape) != tuple(noise.shape):
                raise InputError(f"initial latents must have shape {list(noise.shape)}, got {list(latents.shape)}")
            noise = latents.to(device=device, dtype=dtype)
        settings, schedule_info = self._sampler_settings(request)
        start = None
        if request.cover_noise_strength > 0:
            # Start part-way: the task's source latents re-noised to the nearest schedule step (the
            # reference does this for every task, with the seeded noise), then the remaining steps.
            settings.timesteps, t_start = start_from_source(settings.timesteps, request.cover_noise_strength)
            source = task_inputs.src_latents.to(device=device, dtype=dtype).expand(batch, -1, -1)
            start = t_start * noise + (1 - t_start) * source
            schedule_info.update(inference_steps=settings.num_steps, start_timestep=round(t_start, 6),
                                 timesteps=[round(float(t), 6) for t in settings.timesteps[:-1]])
        if switch:
            settings.cover_steps = int(settings.num_steps * request.audio_cover_strength)
        repaint_guide = None
        clean = None
        if task_inputs.repaint is not None:
            clean = task_inputs.clean_latents.to(device=device, dtype=dtype).expand(batch, -1, -1)
            repaint_guide = RepaintGuide.for_window(task_inputs.repaint, clean, settings.num_steps)

        # 5. denoise
        t0 = time.perf_counter()
        null_emb = self.dit.condition_encoder.null_condition_emb
        valid = self._valid_frames(task_inputs, batch, device)
        # Adapters are patched in for this request only: the decoder is bare again afterwards.
        with self.offload.use("dit", self.dit.transformer), decoder_adapters(self.dit.transformer).applied(request.adapters):
            latents = denoise(self.dit.transformer, noise, condition, settings, null_condition_emb=null_emb,
                              non_cover_condition=non_cover, repaint=repaint_guide, generators=generators,
                              progress=progress, cancel=cancel, start=start, valid=valid)
        if task_inputs.repaint is not None and task_inputs.repaint.settings.crossfade_frames > 0:
            latents = crossfade_latents(latents, clean, task_inputs.repaint.start_frame, task_inputs.repaint.end_frame,
                                        task_inputs.repaint.settings.crossfade_frames)
        timings["denoise"] = time.perf_counter() - t0

        # 6. decode and post-process
        t0 = time.perf_counter()
        audio = self.decode(latents, progress=decode_progress, cancel=cancel)
        if task_inputs.repaint is not None and task_inputs.source_waveform is not None \
                and task_inputs.repaint.settings.splice_seconds > 0:
            audio = splice_waveform(audio, task_inputs.source_waveform.unsqueeze(0).expand(batch, -1, -1),
                                    task_inputs.repaint.start_seconds, task_inputs.repaint.end_seconds,
                                    task_inputs.repaint.settings.splice_seconds)
        timings["decode"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started

        params = self._resolved_params(request, task_inputs, seeds, schedule_info, caption, metas, language, item_codes)
        # What the file holds, whatever was asked (automatic, a source length, a window past the end).
        params["requested_duration"] = request.audio_duration
        params["audio_duration"] = round(audio.shape[-1] / SAMPLE_RATE, 3)
        if request.task_type == "text2music" and not codes:
            if request.audio_duration is None:
                params["duration_note"] = f"no duration given: {DEFAULT_DURATION:g} s, the official default"
            elif abs(params["audio_duration"] - request.audio_duration) > 1 / FRAMES_PER_SECOND:
                params["duration_note"] = (f"{request.audio_duration:g} s asked for; the DiT's shortest output is "
                                           f"{MIN_FRAMES * HOP / SAMPLE_RATE:g} s")
        # The notices are what was asked but not done (a default filled in is not one).
        changed_duration = params.get("duration_note") if request.audio_duration is not None else None
        notices = [note for note in (params.get("schedule_note"), changed_duration) if note]
        return GenerationResult(audio=audio, latents=latents.float().cpu(), seeds=seeds, params=params, timings=timings,
                                notices=notices)

    def _valid_frames(self, task_inputs: TaskInputs, batch: int, device) -> Optional[torch.Tensor]:
        """[B, T] bool over each item's own frames, or None when no item is padded."""
        lengths = task_inputs.valid_frames
        enabled = self.mask_padded_frames
        if enabled is None:
            enabled = mask_padded_frames_switch()
        if lengths is None or not enabled:
            return None
        if len(lengths) == 1:
            lengths = lengths * batch
        return frame_mask(lengths, task_inputs.frames, device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, progress: Optional[Callable[[int, int], None]] = None,
               cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """Latents [B, T, 64] → audio [B, 2, T·1920] float32 CPU, divided by its peak when above 1.

        `progress(tile, total)` is called after every VAE tile; `cancel()` is polled after every tile
        and before every block of the decoder inside one (CancelledError when it returns True)."""
        chunk = self.vae_chunk_frames or decode_chunk_frames(None, self.device.type)
        poll, after_tile = _vae_callbacks("VAE decode", progress, cancel)
        with self.offload.use("vae", self.vae), polled_inside_tiles(self.vae, poll if cancel else None):
            weight = next(self.vae.parameters())
            if weight.device.type == "cpu" and not self.vae_chunk_fixed:
                total, available = system_ram()
                chunk = cpu_decode_window(latents.shape[1], chunk, weight.dtype, available, total)
            # Out of memory → smaller windows → CPU, each step reported; never a silent failure.
            audio = decode_with_fallback(official_vae_decode_fn(self.vae, progress=after_tile), latents, chunk,
                                         self.device, log=logger.warning)
        self.vae.to(self.offload.home("vae"))
        peak = audio.abs().amax(dim=(1, 2), keepdim=True)
        return torch.where(peak > 1.0, audio / peak, audio)

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor, generator: Optional[torch.Generator] = None, sample: bool = True,
                     progress: Optional[Callable[[int, int], None]] = None,
                     cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
        """48 kHz stereo [2, N] → latents [1, T, 64] float32 CPU (posterior sample, as the reference).

        `progress(tile, total)` is called with 0 before the first VAE tile and after each; `cancel()` is
        polled then and before every block of the encoder inside a tile (CancelledError when it returns
        True), since one CPU tile can take tens of seconds."""
        poll, at_tile = _vae_callbacks("VAE encode", progress, cancel)
        with self.offload.use("vae", self.vae), polled_inside_tiles(self.vae, poll if cancel else None):
            latents, _, _ = vae_encode(self.vae, audio.unsqueeze(0) if audio.dim() == 2 else audio, sample=sample,
                                       generator=generator, progress=at_tile)
        return latents.float().cpu()

    # ------------------------------------------------------------------ steps
    def _apply_plan(self, request: GenerationRequest) -> GenerationRequest:
        """A plan still attached to the request fills it by the one rule (acestep_core.planning), and
        steps left unset become the model's own."""
        from .planning import fill_request

        request = fill_request(request, request.plan)
        if request.inference_steps is None:
            request = replace(request, inference_steps=self.default_steps)
        return request

    @torch.no_grad()
    def audio_to_codes(self, audio, seed: int = 0, progress: Optional[Callable[[int, int], None]] = None,
                       cancel: Optional[Callable[[], bool]] = None) -> list[int]:
        """Audio (a path, or 48 kHz [channels, N]) → its 5 Hz semantic codes, what the LM's `understand`
        reads: VAE encode, then the DiT's own audio tokenizer (docs/lm.md#auxiliary-functions). 5 latent frames per
        code; the last code covers the tail padded with silence. `progress` and `cancel`: as for `encode_audio`."""
        wave = self._waveform(audio, "the audio")
        latents = self.encode_audio(wave, torch.Generator(device="cpu").manual_seed(seed), progress=progress, cancel=cancel)
        with self.offload.use("audio_tokenizer", self.dit.audio_tokenizer):
            _, indices = latents_to_codes(self.dit, latents.to(device=self.device, dtype=self.dtype))
        return [int(c) for c in indices.reshape(-1).tolist()]

    def _load_source(self, request: GenerationRequest) -> Optional[torch.Tensor]:
        return None if request.src_audio is None else self._waveform(request.src_audio, "src_audio")

    @staticmethod
    def _waveform(src, what: str) -> torch.Tensor:
        """A path or a tensor → float32 [2, N] at 48 kHz on the CPU, at least one latent frame long."""
        return source_waveform(src, what)

    def _prepare_task(self, request: GenerationRequest, item_codes: list[list[int]], seeds: list[int],
                      encode: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None) -> TaskInputs:
        """`encode(wave, generator)`: the VAE encode of the source (default `encode_audio`, no progress)."""
        inputs = self._task_inputs(request, item_codes, seeds, encode or self.encode_audio)
        if request.instruction.strip():
            inputs.instruction = request.instruction.strip()
        return inputs

    def _check_track_task(self, task: str) -> None:
        """extract / lego / complete were trained into the base model only (turbo and SFT lack them)."""
        if self.is_turbo or self.dit.is_sft:
            kind = "turbo" if self.is_turbo else "SFT"
            raise InputError(
                f"task {task!r} needs the ACE-Step 1.5 base model, but the loaded DiT {self.model_name!r} is {kind}; "
                "load acestep-v15-base (ComfyUI: acestep_v1.5_base.safetensors) for extract, lego and complete"
            )

    def _task_inputs(self, request: GenerationRequest, item_codes: list[list[int]], seeds: list[int],
                     encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> TaskInputs:
        silence = self.dit.silence_latent
        task = request.task_type
        if task in TRACK_TASKS:
            self._check_track_task(task)
        if task == "text2music":
            if item_codes[0]:
                distinct = item_codes if any(c != item_codes[0] for c in item_codes) else item_codes[:1]
                with self.offload.use("audio_tokenizer", self.dit.audio_tokenizer), \
                        self.offload.use("detokenizer", self.dit.detokenizer):
                    hints = [codes_to_hints(self.dit, c, self.device, self.dtype).float().cpu() for c in distinct]
                return codes_cover_inputs(silence, hints, request.audio_duration)
            return text2music_inputs(silence, request.audio_duration)

        waveform = self._load_source(request)
        source_seconds = (waveform.shape[-1] / SAMPLE_RATE) if waveform is not None else request.src_latents.shape[1] / FRAMES_PER_SECOND
        request.check_window_against_source(source_seconds)
        generator = torch.Generator(device="cpu").manual_seed(seeds[0])

        if task in ("cover", "extract", "complete"):
            latents = request.src_latents.float() if request.src_latents is not None else encode(waveform, generator)
            if task == "cover":
                return cover_audio_inputs(latents[:1], source_seconds)
            return full_source_inputs(task, track_instruction(task, request.tracks()), latents[:1], source_seconds)

        # repaint / continuation / lego: a window, possibly past either end of the source
        start, end = resolve_window(task, request.repainting_start, request.repainting_end,
                                    request.continuation_seconds, source_seconds)
        padded, start_s, end_s = None, start, end
        if waveform is not None:
            padded, start_s, end_s = pad_for_window(waveform, start, end)
        else:
            start_s, end_s = start + max(0.0, -start), end + max(0.0, -start)
        target_frames = (padded.shape[-1] // HOP) if padded is not None else int(end_s * SAMPLE_RATE // HOP)
        if request.src_latents is not None:
            # Given latents are the encoded source; pad with silence where the window runs past them
            # (those frames are regenerated anyway).
            latents = request.src_latents.float()[:1]
            left = int(round(max(0.0, -start) * FRAMES_PER_SECOND))
            right = max(0, target_frames - latents.shape[1] - left)
            if left or right:
                latents = torch.cat([silence[:, :left], latents, silence[:, :right]], dim=1)
        else:
            latents = encode(padded, generator)
        lego = dict(task="lego", instruction=track_instruction("lego", request.tracks())) if task == "lego" else {}
        return repaint_inputs(latents, silence, start_s, end_s, source_seconds, request.chunk_mask_mode,
                              request.repaint_mode, request.repaint_strength, source_waveform=padded, **lego)

    def _reference_latents(self, request: GenerationRequest, seeds: list[int], batch: int,
                           encode: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None):
        if request.reference_audio is None:
            return None
        wave = source_waveform(request.reference_audio, "reference_audio")
        rng = random.Random(seeds[0])
        clip = timbre_clip(wave, rng)
        generator = torch.Generator(device="cpu").manual_seed(seeds[0])
        latents = (encode or self.encode_audio)(clip, generator)[0]
        frames = int(self.dit.config.get("timbre_fix_frame", 750))
        latents = latents[:frames]
        if latents.shape[0] < frames:
            latents = torch.cat([latents, self.dit.silence_latent[0, latents.shape[0]:frames]], dim=0)
        return [latents] * batch

    def _sampler_settings(self, request: GenerationRequest) -> tuple[SamplerSettings, dict]:
        custom = parse_timesteps(request.timesteps)
        if self.is_turbo:
            shift = nearest_turbo_shift(request.shift)
            timesteps = turbo_schedule(shift, custom, self.dtype, self.device)
            info = {"shift": shift, "guidance_scale": 1.0, "inference_steps": timesteps.shape[0] - 1}
            note = turbo_note(request.inference_steps, request.shift, custom, request.use_adg)
            if note:
                info["schedule_note"] = note
            settings = SamplerSettings(timesteps=timesteps, guidance_scale=1.0, infer_method=request.infer_method, is_turbo=True)
        else:
            if custom and self.dit.is_sft:
                values = custom if custom[-1] == 0 else custom + [0.0]
                timesteps = torch.tensor(values, dtype=self.dtype, device=self.device)
            else:
                timesteps = base_schedule(request.inference_steps, request.shift, self.dtype, self.device)
            info = {"shift": request.shift, "guidance_scale": request.guidance_scale, "inference_steps": timesteps.shape[0] - 1}
            settings = SamplerSettings(
                timesteps=timesteps, guidance_scale=request.guidance_scale, cfg_interval_start=request.cfg_interval_start,
                cfg_interval_end=request.cfg_interval_end, infer_method=request.infer_method, is_turbo=False,
                use_adg=request.use_adg)
        info["timesteps"] = [round(float(t), 6) for t in timesteps[:-1]]
        return settings, info

    def _resolved_params(self, request, task_inputs: TaskInputs, seeds, schedule_info, caption, metas, language, item_codes):
        codes = item_codes[0]
        params = request.to_public_dict()
        params.pop("plan", None)
        params.update(schedule_info)
        params.update(
            caption=caption,
            vocal_language=language,
            seed=seeds[0],
            seeds=seeds,
            task=task_inputs.task,
            instruction=task_inputs.instruction,
            metas=metas,
            latent_frames=task_inputs.frames,
            output_seconds=task_inputs.frames * HOP / SAMPLE_RATE,
            audio_code_count=len(codes),
            dit_model=self.model_name,
            model_version=self.dit.model_version,
            is_turbo=self.is_turbo,
            dtype=str(self.dtype).replace("torch.", ""),
            device=str(self.device),
            sample_rate=SAMPLE_RATE,
        )
        if codes:
            strings = [format_audio_codes(item) for item in item_codes]
            params["audio_code_string"] = strings[0] if len(set(strings)) == 1 else strings
        if task_inputs.valid_frames is not None:
            params["valid_frames"] = list(task_inputs.valid_frames)
        if request.plan is not None:
            params["plan"] = request.plan.to_dict()
        if task_inputs.repaint is not None:
            r = task_inputs.repaint
            params.update(repainting_start=r.start_seconds, repainting_end=r.end_seconds,
                          repaint_window_frames=[r.start_frame, r.end_frame],
                          repaint_injection_ratio=r.settings.injection_ratio,
                          repaint_crossfade_frames=r.settings.crossfade_frames,
                          repaint_splice_seconds=r.settings.splice_seconds)
        if isinstance(params.get("src_audio"), str):
            params["src_audio"] = str(params["src_audio"])
        return params


def fit_length(hidden: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop or zero-pad a [B, L, D] sequence (and its mask) to `length` tokens."""
    if hidden.shape[1] >= length:
        return hidden[:, :length], mask[:, :length]
    pad = length - hidden.shape[1]
    return (torch.nn.functional.pad(hidden, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad)))


def timbre_clip(wave: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """30 s of reference audio: three 10 s segments from the front, middle and back thirds
    (looped when shorter), at offsets drawn from the request's seed."""
    total = int(TIMBRE_SECONDS * SAMPLE_RATE)
    segment = int(TIMBRE_SEGMENT_SECONDS * SAMPLE_RATE)
    if wave.shape[-1] < total:
        reps = -(-total // max(1, wave.shape[-1]))
        return wave.repeat(1, reps)[:, :total]
    third = wave.shape[-1] // 3
    pieces = []
    for k in range(3):
        lo = k * third
        hi = max(lo, min(wave.shape[-1], (k + 1) * third) - segment)
        offset = rng.randint(lo, hi) if hi > lo else lo
        pieces.append(wave[:, offset: offset + segment])
    return torch.cat(pieces, dim=-1)
