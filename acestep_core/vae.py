"""Oobleck VAE: loading (diffusers folder or ComfyUI single file) and the official tiled encode/decode.

The VAE maps 48 kHz stereo audio to 64-channel latents at 25 frames/s (hop 1920 samples) and back.
Latents are used raw (no scaling factor or shift). Public functions take and return latents as
[B, T, 64] (the DiT's layout); the VAE itself works on [B, 64, T].

Loading never leaves a half-initialised model behind: the state dict is read, renamed and checked
against the expected keys and shapes first, and only then loaded with ``strict=True``.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoints
from .checkpoints import safetensors_keys, sidecar_config
from .errors import CheckpointError, InputError
from .vae_compile import compile_decoder, compile_requested
from .vae_layout import channels_last_convs
from .vae_snake import in_place_snakes

from .constants import HOP as HOP_LENGTH, LATENT_CHANNELS, SAMPLE_RATE  # noqa: F401  (re-exported)

# Published `checkpoints/vae/config.json` of ACE-Step 1.5; ComfyUI files carry no config.
PUBLISHED_VAE_CONFIG: dict = {
    "audio_channels": 2,
    "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128,
    "decoder_input_channels": 64,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "encoder_hidden_size": 128,
    "sampling_rate": 48000,
}

DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
AIO_VAE_PREFIX = "vae."
_MAX_LISTED = 5

# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_vae(
    path: str | Path | None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    config_override: Mapping | None = None,
):
    """Load an ACE-Step 1.5 Oobleck VAE as a diffusers ``AutoencoderOobleck`` in eval mode.

    ``path`` may be
      * a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``),
      * a ComfyUI VAE file (``ace_1.5_vae.safetensors``; ``weight_g/_v`` or
        ``parametrizations.weight.original0/1`` spelling; bare or ``vae.``-prefixed keys),
      * a ComfyUI all-in-one checkpoint (only its ``vae.*`` keys are read).
    ``state_dict``: tensors already extracted by the caller (any of the spellings above); ``path``
    is then only used in messages. ``config_override`` updates the config (the folder's
    ``config.json``, else the published ACE-Step 1.5 config).
    """
    source = str(path) if path is not None else "<state_dict>"
    if state_dict is None:
        if path is None:
            raise CheckpointError("load_vae needs a path or a state_dict.")
        weights_file, config = _resolve_vae_source(Path(path))
        state_dict = read_safetensors(weights_file)
        source = str(weights_file)
    else:
        # Tensors the caller took out of a file (the all-in-one checkpoint): that file's sidecar still
        # sets the config, as for any single file.
        sidecar = sidecar_config(path) if path is not None and Path(path).is_file() else None
        config = {**PUBLISHED_VAE_CONFIG, **sidecar} if sidecar else None
    if config is None:
        config = dict(PUBLISHED_VAE_CONFIG)
    if config_override:
        config.update(config_override)

    converted = convert_vae_state_dict(state_dict)
    model = _build_empty_vae(config, source)
    _check_state_dict(model, converted, source)
    converted = {k: v.to(dtype=dtype) for k, v in converted.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    model.to(device=device)  # tensors already carry `dtype`
    _refresh_weight_norm(model)
    prepare_for_inference(model, dtype)
    model.eval().requires_grad_(False)
    return model


def prepare_for_inference(model, dtype: torch.dtype) -> None:
    """The faster inference forms of a loaded Oobleck VAE: Snakes in place (bit-identical, every
    dtype, `vae_snake.py`), in half precision channels-last convolutions (`vae_layout.py`; float32
    keeps the official kernels bit for bit) and, with `ACESTEP_VAE_COMPILE=1`, the decoder under
    `torch.compile` (`vae_compile.py`)."""
    in_place_snakes(model)
    if dtype != torch.float32:
        channels_last_convs(model)
    if compile_requested():
        compile_decoder(model)


def _refresh_weight_norm(model) -> None:
    """Recompute each weight-normed conv's cached `weight` (still a meta tensor after the build)."""
    from torch.nn.utils.weight_norm import WeightNorm

    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                setattr(module, hook.name, hook.compute_weight(module))


def _resolve_vae_source(path: Path) -> tuple[Path, dict | None]:
    """Return (safetensors file, config or None) for a folder or a single file."""
    if not path.exists():
        raise CheckpointError(f"VAE checkpoint not found: {path}. Give a VAE folder or a .safetensors file.")
    if path.is_dir():
        weights = path / DIFFUSERS_WEIGHTS_NAME
        if not weights.is_file():
            candidates = sorted(path.glob("*.safetensors"))
            if len(candidates) != 1:
                raise CheckpointError(
                    f"VAE folder {path} has no {DIFFUSERS_WEIGHTS_NAME}"
                    + (f" (found {', '.join(c.name for c in candidates)})" if candidates else "")
                    + ". Point at the official `vae` folder or at a single .safetensors file."
                )
            weights = candidates[0]
        config_file = path / "config.json"
        config = _read_config(config_file) if config_file.is_file() else None
        return weights, config
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: only .safetensors VAE files are supported.")
    # A single file carries no config: the published one, updated by its sidecar when there is one.
    sidecar = sidecar_config(path)
    return path, ({**PUBLISHED_VAE_CONFIG, **sidecar} if sidecar else None)


def _read_config(config_file: Path) -> dict:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file}: cannot read the VAE config ({exc}).") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: the VAE config must be a JSON object.")
    return config


def read_safetensors(file: Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (optionally only keys under ``prefix``) into CPU tensors.

    When ``prefix`` is None and the file holds ``vae.``-prefixed keys (an all-in-one checkpoint),
    only those are read, so the DiT and text encoders are never loaded.
    """
    if prefix is None and any(k.startswith(AIO_VAE_PREFIX) for k in safetensors_keys(file)):
        prefix = AIO_VAE_PREFIX
    return checkpoints.read_safetensors(file, prefix or "", strip_prefix=False, what="VAE")


# ComfyUI (stable-audio-tools) Sequential indices -> diffusers names.
_RES_UNIT_PARTS = ("snake1", "conv1", "snake2", "conv2")
_ENC_BLOCK_PARTS = {"0": "res_unit1", "1": "res_unit2", "2": "res_unit3", "3": "snake1", "4": "conv1"}
_DEC_BLOCK_PARTS = {"0": "snake1", "1": "conv_t1", "2": "res_unit1", "3": "res_unit2", "4": "res_unit3"}
_COMFY_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.*)$")


def convert_vae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename any supported VAE key spelling to diffusers ``AutoencoderOobleck`` names.

    Handles the ``vae.`` prefix, the ComfyUI ``layers.N`` naming (Snake alpha/beta [C] -> [1, C, 1])
    and the ``parametrizations.weight.original0/1`` weight-norm spelling. Keys that match no known
    pattern are kept as they are, so the shape/key check can name them.
    """
    keys = list(state_dict)
    if keys and all(k.startswith(AIO_VAE_PREFIX) for k in keys):
        state_dict = {k[len(AIO_VAE_PREFIX):]: v for k, v in state_dict.items()}
    is_comfy = any(_COMFY_KEY.match(k) for k in state_dict)
    num_blocks = _count_comfy_blocks(state_dict) if is_comfy else 0

    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new_key = _rename_weight_norm(key)
        if is_comfy:
            new_key = _comfy_to_diffusers(new_key, num_blocks)
            if new_key.endswith((".alpha", ".beta")) and tensor.dim() == 1:
                tensor = tensor.reshape(1, -1, 1)  # ComfyUI SnakeBeta keeps [C]; diffusers [1, C, 1]
        converted[new_key] = tensor
    return converted


def _rename_weight_norm(key: str) -> str:
    if key.endswith(".parametrizations.weight.original0"):
        return key[: -len("parametrizations.weight.original0")] + "weight_g"
    if key.endswith(".parametrizations.weight.original1"):
        return key[: -len("parametrizations.weight.original1")] + "weight_v"
    return key


def _count_comfy_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of down/up-sampling blocks: decoder.layers = [conv, blocks..., snake, conv]."""
    indices = {int(m.group(2)) for k in state_dict if (m := _COMFY_KEY.match(k)) and m.group(1) == "decoder"}
    return max(indices) - 2 if indices else 0


def _comfy_to_diffusers(key: str, num_blocks: int) -> str:
    match = _COMFY_KEY.match(key)
    if match is None:
        return key
    side, index, rest = match.group(1), int(match.group(2)), match.group(3)
    if index == 0:
        return f"{side}.conv1.{rest}"
    if index == num_blocks + 1:
        return f"{side}.snake1.{rest}"
    if index == num_blocks + 2:
        return f"{side}.conv2.{rest}"
    if not 1 <= index <= num_blocks:
        return key
    block = index - 1
    inner = re.match(r"^layers\.(\d+)\.(.*)$", rest)
    if inner is None:
        return key
    part_index, tail = inner.group(1), inner.group(2)
    part = (_ENC_BLOCK_PARTS if side == "encoder" else _DEC_BLOCK_PARTS).get(part_index)
    if part is None:
        return key
    if part.startswith("res_unit"):
        unit = re.match(r"^layers\.(\d)\.(.*)$", tail)
        if unit is None or int(unit.group(1)) >= len(_RES_UNIT_PARTS):
            return key
        return f"{side}.block.{block}.{part}.{_RES_UNIT_PARTS[int(unit.group(1))]}.{unit.group(2)}"
    return f"{side}.block.{block}.{part}.{tail}"


def _build_empty_vae(config: Mapping, source: str):
    """Instantiate AutoencoderOobleck on the meta device (no memory, no random init)."""
    from diffusers import AutoencoderOobleck

    accepted = set(inspect.signature(AutoencoderOobleck.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in config.items() if k in accepted}
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's old weight_norm API
            model = AutoencoderOobleck(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: invalid VAE config {kwargs} ({exc}).") from exc
    return model


def _check_state_dict(model, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)):
        if items:
            shown = ", ".join(items[:_MAX_LISTED]) + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the ACE-Step 1.5 Oobleck VAE ({'; '.join(problems)}). "
            "Use the official `vae` folder or ComfyUI's ace_1.5_vae.safetensors "
            "(and the matching config when it is not the published one)."
        )


# --------------------------------------------------------------------------------------------
# Chunk-size policy (official `_get_auto_decode_chunk_size` / `tiled_encode` defaults)
# --------------------------------------------------------------------------------------------

_GIB = 1024**3


def decode_chunk_frames(free_bytes: int | None, device_type: str) -> int:
    """Latent frames per decode tile from free memory (official table, capped at 512).

    CUDA: >= 24 GiB free -> 512, >= 16 -> 384, >= 12 -> 256, else 128. MPS: 512. CPU: the CUDA table
    on free RAM, never below the official CPU tile of 256 (unknown free RAM: 256). Each tile
    re-decodes 64 frames of overlap on both sides, so a 256-frame tile decodes twice its core; with the
    RAM for it (a 512-frame tile needs about 3 GB in float32) the CPU takes the larger tile the
    official code gives an accelerator with that much memory, and decodes a long song about 1.5x faster.
    """
    if device_type in ("cuda", "xpu", "cpu"):
        free_gb = (free_bytes or 0) / _GIB
        if free_gb >= 24:
            return 512
        if free_gb >= 16:
            return 384
        if free_gb >= 12 or device_type == "cpu":
            return 256
        return 128
    if device_type == "mps":
        return 512
    return 256


# Peak RAM of a one-pass CPU decode per latent frame, with margin (measured on the real Oobleck VAE,
# 750 and 1500 frames: 5.5 MB in float32, 2.3-2.4 MB in bfloat16).
CPU_DECODE_BYTES_PER_FRAME = 6 << 20
CPU_DECODE_BYTES_PER_FRAME_HALF = 3 << 20
# Progress comes between tiles: 1024 frames (41 s of audio) keep a step of it within about 20 s of a
# bfloat16 decode on two cores while a long song re-decodes only ~13 % more than its length.
CPU_DECODE_MAX_WINDOW = 1024


def cpu_decode_window(frames: int, chunk: int, dtype: torch.dtype, available_bytes: int, total_bytes: int) -> int:
    """The CPU decode window for a song of `frames` latent frames: the whole song (one pass) when it
    is at most `CPU_DECODE_MAX_WINDOW` frames and its peak fits in the RAM available now (less a
    reserve of 2 GB or 15 % of RAM), else the largest window up to that which fits; never below
    `chunk` (the memory decision's window).

    Every tile decodes 64 frames of context on each side and throws them away, so fewer, longer
    tiles are less work: a 30 s song in bfloat16 on two threads 19.8 s in 384-frame tiles, 17.9 s in
    512-frame ones, 14.7 s in one pass (docs/performance.md)."""
    from .memory.policy import spare_ram

    per_frame = CPU_DECODE_BYTES_PER_FRAME if dtype == torch.float32 else CPU_DECODE_BYTES_PER_FRAME_HALF
    fits = spare_ram(total_bytes, available_bytes) // per_frame
    return max(chunk, min(frames, fits, CPU_DECODE_MAX_WINDOW))


def encode_chunk_seconds(total_bytes: int | None, device_type: str) -> int:
    """Seconds of audio per encode tile: 30 s, or 15 s when the accelerator has <= 8 GB.

    As in the official code, a machine without CUDA counts as 0 GB and gets 15 s tiles.
    """
    if device_type in ("cuda", "mps") and total_bytes and round(total_bytes / _GIB) > 8:
        return 30
    return 15


def _device_memory(device: torch.device) -> tuple[int | None, int | None]:
    """(free, total) bytes of a CUDA device; (None, None) elsewhere."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(device)
        return free, total
    return None, None


# --------------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------------

_MIN_DECODE_OVERLAP = 4


def _effective_overlap(chunk: int, overlap: int) -> int:
    """Halve the overlap until a tile keeps a core (official rule, floor 4 frames)."""
    effective = overlap
    while chunk - 2 * effective <= 0 and effective > _MIN_DECODE_OVERLAP:
        effective //= 2
    if effective < _MIN_DECODE_OVERLAP <= overlap:
        effective = _MIN_DECODE_OVERLAP
    return effective


def _vae_param(vae) -> torch.Tensor:
    return next(vae.parameters())


@torch.inference_mode()
def vae_decode(
    vae,
    latents: torch.Tensor,
    chunk_frames: int | None = None,
    overlap_frames: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Decode latents [B, T, 64] to float32 CPU audio [B, 2, T * 1920] (48 kHz).

    Official overlap-discard tiling: tiles of ``chunk_frames`` latent frames whose core stride is
    ``chunk - 2 * overlap``; each tile's decoded overlap is discarded. No tiling when
    T <= chunk. Batch items are decoded one at a time and every tile's core is written straight
    into a preallocated CPU buffer, so accelerator memory stays bounded for any length.
    ``chunk_frames=None`` picks the size from free memory (``decode_chunk_frames``).
    ``progress(done, total)`` is called after each tile.
    """
    if latents.dim() != 3 or latents.shape[-1] != LATENT_CHANNELS:
        raise InputError(f"VAE decode expects latents [batch, frames, 64], got {tuple(latents.shape)}.")
    batch, frames, _ = latents.shape
    if frames == 0:
        raise InputError("VAE decode got 0 latent frames; nothing to decode.")
    param = _vae_param(vae)
    if chunk_frames is None:
        free, _ = _device_memory(param.device)
        chunk_frames = decode_chunk_frames(free, param.device.type)
    if chunk_frames <= 0 or overlap_frames < 0:
        raise InputError(f"VAE decode chunk must be > 0 and overlap >= 0 (got {chunk_frames}, {overlap_frames}).")
    overlap = _effective_overlap(chunk_frames, overlap_frames)
    stride = chunk_frames - 2 * overlap
    if frames > chunk_frames and stride <= 0:
        raise InputError(f"VAE decode chunk {chunk_frames} must exceed twice the overlap {overlap}.")

    windows = [(0, frames, 0, frames)] if frames <= chunk_frames else _windows(frames, stride, overlap)
    hop = _hop_length(vae)
    out = torch.zeros(batch, _audio_channels(vae), frames * hop, dtype=torch.float32)
    total_steps = batch * len(windows)
    for item in range(batch):
        write = 0
        for step, (win_start, win_end, core_start, core_end) in enumerate(windows):
            chunk = latents[item : item + 1, win_start:win_end].transpose(1, 2)
            audio = vae.decode(chunk.to(device=param.device, dtype=param.dtype)).sample
            # Official trim: factor from the tile itself, overlap rounded to whole samples.
            factor = audio.shape[-1] / (win_end - win_start)
            trim_start = int(round((core_start - win_start) * factor))
            trim_end = int(round((win_end - core_end) * factor))
            core = audio[:, :, trim_start : audio.shape[-1] - trim_end]
            length = min(core.shape[-1], out.shape[-1] - write)
            out[item : item + 1, :, write : write + length] = core[:, :, :length].float().cpu()
            write += length
            del audio, core
            if progress is not None:
                progress(item * len(windows) + step + 1, total_steps)
        if write != out.shape[-1]:
            out = out[:, :, :write]
    return out


@contextmanager
def polled_inside_tiles(vae, poll: Callable[[], None] | None):
    """Call `poll()` before each block and residual unit of the encoder and the decoder while inside
    (`poll` may raise, e.g. to cancel), so a cancel does not wait for a whole tile: a CPU tile can take
    a minute either way. A part under torch.compile is left alone (a hook would change its compiled graph)."""
    from diffusers.models.autoencoders.autoencoder_oobleck import (OobleckDecoderBlock, OobleckEncoderBlock,
                                                                   OobleckResidualUnit)

    parts = [part for part in (getattr(vae, "encoder", None), getattr(vae, "decoder", None))
             if part is not None and "forward" not in vars(part)]
    if poll is None or not parts:
        yield
        return
    handles = [m.register_forward_pre_hook(lambda module, args: poll()) for part in parts for m in part.modules()
               if isinstance(m, (OobleckEncoderBlock, OobleckDecoderBlock, OobleckResidualUnit))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _windows(frames: int, stride: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(win_start, win_end, core_start, core_end) for each tile, as in the official loop."""
    result = []
    for i in range(math.ceil(frames / stride)):
        core_start = i * stride
        core_end = min(core_start + stride, frames)
        result.append((max(0, core_start - overlap), min(frames, core_end + overlap), core_start, core_end))
    return result


def _hop_length(vae) -> int:
    return int(math.prod(vae.config.downsampling_ratios))


def _audio_channels(vae) -> int:
    return int(vae.config.audio_channels)


# --------------------------------------------------------------------------------------------
# Encode
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def vae_encode(
    vae,
    audio: torch.Tensor,
    chunk_seconds: float | None = None,
    overlap_seconds: float = 2.0,
    sample: bool = True,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode 48 kHz audio [B, 2, N] (or [2, N]) to ``(latents, mean, std)``, each [B, T, 64] float32 CPU.

    Official overlap-discard tiling over the waveform: tiles of ``chunk_seconds`` (None: 30 s, or
    15 s on accelerators with <= 8 GB and on CPU, as the reference) with ``overlap_seconds`` on each
    side. Posterior: ``std = softplus(scale) + 1e-4`` (diffusers' OobleckDiagonalGaussianDistribution).
    ``latents = mean + std * eps`` when ``sample`` (the reference samples), else ``mean``. ``eps``
    ([B, T, 64]) fixes the noise; otherwise it is drawn with ``generator`` (on the generator's device).
    The reference draws noise per tile from the global RNG, so sampled values are not bit-comparable
    across implementations; mean and std are.
    ``progress(done, total)`` is called with 0 before the first tile (a CPU tile can take half a
    minute, so the stage shows at once) and after each tile.
    """
    if audio.dim() == 2:
        audio = audio.unsqueeze(0)
    if audio.dim() != 3:
        raise InputError(f"VAE encode expects audio [batch, channels, samples], got {tuple(audio.shape)}.")
    channels = _audio_channels(vae)
    if audio.shape[1] != channels:
        raise InputError(f"VAE encode expects {channels}-channel audio, got {audio.shape[1]} channels.")
    batch, _, samples = audio.shape
    hop = _hop_length(vae)
    if samples < hop:
        raise InputError(f"audio too short to encode: {samples} samples (at least {hop} needed).")
    param = _vae_param(vae)
    rate = int(vae.config.sampling_rate)
    if chunk_seconds is None:
        _, total = _device_memory(param.device)
        chunk_seconds = encode_chunk_seconds(total, param.device.type)
    # Tile edges on whole latent frames keep every tile on the same latent grid (the official
    # 30 s / 15 s / 2 s are already multiples of the 1920-sample hop).
    chunk = int(round(rate * chunk_seconds / hop)) * hop
    overlap = int(round(rate * overlap_seconds / hop)) * hop

    if samples <= chunk:
        windows = [(0, samples, 0, samples)]
    else:
        stride = chunk - 2 * overlap
        if stride <= 0:
            raise InputError(f"VAE encode chunk {chunk_seconds}s must exceed twice the overlap {overlap_seconds}s.")
        windows = _windows(samples, stride, overlap)

    params = None  # [B, 2 * 64, T] posterior parameters (mean ‖ scale)
    write = 0
    if progress is not None:
        progress(0, len(windows))
    for step, (win_start, win_end, core_start, core_end) in enumerate(windows):
        piece = audio[:, :, win_start:win_end].to(device=param.device, dtype=param.dtype)
        tile = vae.encode(piece).latent_dist.parameters
        # Official trim: factor from the tile itself, overlap rounded to whole frames.
        factor = piece.shape[-1] / tile.shape[-1]
        trim_start = int(round((core_start - win_start) / factor))
        trim_end = int(round((win_end - core_end) / factor))
        core = tile[:, :, trim_start : tile.shape[-1] - trim_end].float().cpu()
        if params is None:
            params = torch.zeros(batch, tile.shape[1], int(math.ceil(samples / factor)) + 1)
        length = min(core.shape[-1], params.shape[-1] - write)
        params[:, :, write : write + length] = core[:, :, :length]
        write += length
        del piece, tile
        if progress is not None:
            progress(step + 1, len(windows))
    params = params[:, :, :write]

    mean, scale = params.chunk(2, dim=1)
    std = F.softplus(scale) + 1e-4
    mean, std = mean.transpose(1, 2).contiguous(), std.transpose(1, 2).contiguous()
    if not sample:
        return mean.clone(), mean, std
    if eps is None:
        eps_device = generator.device if generator is not None else torch.device("cpu")
        eps = torch.randn(mean.shape, generator=generator, device=eps_device, dtype=torch.float32)
    elif tuple(eps.shape) != tuple(mean.shape):
        raise InputError(f"eps must have the latent shape {tuple(mean.shape)} [batch, frames, 64], got {tuple(eps.shape)}.")
    latents = mean + std * eps.to(device="cpu", dtype=torch.float32)
    return latents, mean, std
