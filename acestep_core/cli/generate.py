"""`generate`: one song (or a batch) from the command line, written with a JSON of every parameter."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..prompts import TRACK_NAMES
from ..request import LM_METAS_ONLY_TASKS, LM_SKIPPED_TASKS

FORMATS = ("mp3", "flac", "wav", "opus")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate music (text2music, cover, repaint, continuation, extract, lego, complete)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("song")
    g.add_argument("--caption", default="", help="style / description of the music")
    g.add_argument("--lyrics", default="", help="lyrics with [Verse]/[Chorus] tags; '[Instrumental]' for none")
    g.add_argument("--lyrics-file", default=None)
    g.add_argument("--bpm", type=int, default=None)
    g.add_argument("--key-scale", default="", help='e.g. "C major"')
    g.add_argument("--time-signature", default="", help="2, 3, 4 or 6")
    g.add_argument("--vocal-language", default="en")
    g.add_argument("--audio-duration", type=float, default=None,
                   help="seconds, 10-600; -1 or 0 = automatic (the LM's plan with --thinking, else 120 s)")
    g = p.add_argument_group("diffusion")
    g.add_argument("--inference-steps", type=int, default=None, help="default: 8 (turbo) / 32 (base, sft)")
    g.add_argument("--guidance-scale", type=float, default=7.0, help="base/sft only; turbo runs without CFG")
    g.add_argument("--shift", type=float, default=3.0)
    g.add_argument("--seed", default="-1", help="-1 = random; a comma list gives one seed per batch item")
    g.add_argument("--infer-method", default="ode", choices=["ode", "sde"])
    g.add_argument("--timesteps", default=None, help="comma list of custom timesteps (turbo snaps them)")
    g.add_argument("--cfg-interval-start", type=float, default=0.0)
    g.add_argument("--cfg-interval-end", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=1)
    g = p.add_argument_group("task")
    g.add_argument("--task-type", default="text2music",
                   choices=["text2music", "cover", "repaint", "continuation", "extract", "lego", "complete"],
                   help="extract / lego / complete need a base model")
    g.add_argument("--src-audio", default=None, help="source audio for cover / repaint / continuation / track tasks")
    g.add_argument("--src-latents", default=None, help="safetensors with 'latents' [1, frames, 64] used as the encoded source")
    g.add_argument("--reference-audio", default=None, help="timbre reference audio")
    g.add_argument("--repainting-start", type=float, default=0.0)
    g.add_argument("--repainting-end", type=float, default=None, help="-1 or unset = end of the source")
    g.add_argument("--continuation-seconds", type=float, default=None, help="continuation: seconds to add")
    g.add_argument("--audio-cover-strength", type=float, default=1.0)
    g.add_argument("--cover-noise-strength", type=float, default=0.0,
                   help="start from the source re-noised to t = 1 - s and run only the remaining steps (0 = off)")
    g.add_argument("--audio-code-string", default="", help="<|audio_code_N|> string (runs text2music as cover)")
    g.add_argument("--chunk-mask-mode", default="auto", choices=["auto", "explicit"])
    g.add_argument("--repaint-mode", default="balanced", choices=["aggressive", "balanced", "conservative"])
    g.add_argument("--repaint-strength", type=float, default=0.5)
    g.add_argument("--track-name", default="",
                   help="extract / lego: the track to take out or add (" + ", ".join(TRACK_NAMES) + ")")
    g.add_argument("--track-classes", default="", help="complete: comma list of tracks to add")
    g.add_argument("--instruction", default="", help="replace the task's DiT instruction (expert use)")
    g = p.add_argument_group("adapters")
    g.add_argument("--lora", action=_AddAdapter, dest="adapters", default=[], metavar="PATH",
                   help="LoRA / LoKr adapter: an official PEFT folder, a ComfyUI LoRA .safetensors or a LoKr "
                        ".safetensors (repeat to stack several)")
    g.add_argument("--lora-scale", action=_ScaleLastAdapter, dest="adapters", type=float, metavar="S",
                   help="strength of the --lora just before it (default 1.0; negative and above 1 allowed)")
    g = p.add_argument_group("models and output")
    g.add_argument("--checkpoint-dir", default=os.environ.get("ACESTEP_CHECKPOINTS_DIR", "checkpoints"))
    g.add_argument("--dit", default=None, help="DiT folder name/path or a ComfyUI .safetensors (default acestep-v15-turbo)")
    g.add_argument("--vae", default=None)
    g.add_argument("--text-encoder", default=None)
    g.add_argument("--text-tokenizer", default=None, help="tokenizer folder for a ComfyUI text-encoder file")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    g.add_argument("--offload", default="auto", choices=["auto", "on", "off"], help="keep idle components on the CPU")
    g.add_argument("--out", default="outputs", help="output directory")
    g.add_argument("--name", default=None, help="file name stem (default: from the caption)")
    g.add_argument("--audio-format", default="flac", choices=FORMATS)
    g.add_argument("--audio-quality", default=None, help="mp3 V0|128k|192k|256k|320k; wav 16|24|32")
    g.add_argument("--save-latents", default=None, help="write final latents [batch, frames, 64] to this file (inside --out)")
    g.add_argument("--overwrite", action="store_true",
                   help="let --save-latents replace an existing file (songs always get new numbered names)")
    g.add_argument("--tiny", action="store_true",
                   help="demo: use tiny random-weight checkpoints (proves the install; makes noise, not music)")
    g.add_argument("--thinking", action="store_true", help="plan metas, caption and audio codes with the 5 Hz LM first")
    from ..lm.cli_args import add_lm_arguments

    add_lm_arguments(p)
    p.set_defaults(func=run)


class _AddAdapter(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        adapters = list(getattr(namespace, self.dest) or [])
        adapters.append([value, 1.0, False])
        setattr(namespace, self.dest, adapters)


class _ScaleLastAdapter(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        adapters = list(getattr(namespace, self.dest) or [])
        if not adapters or adapters[-1][2]:
            parser.error("each --lora-scale follows the --lora it sets (one --lora-scale per --lora)")
        adapters[-1] = [adapters[-1][0], value, True]
        setattr(namespace, self.dest, adapters)


def _read_lyrics(args) -> str:
    from ..values import read_text_file

    if args.lyrics_file:
        return read_text_file(args.lyrics_file, "lyrics")
    return args.lyrics


def _default_steps(args, is_turbo: bool) -> int:
    if args.inference_steps is not None:
        return args.inference_steps
    return 8 if is_turbo else 32


def build_request(args):
    """The request from the flags, fully checked (values, files, sources) without loading a model."""
    from ..outputs import load_latents
    from ..request import MAX_DURATION, MIN_REQUEST_DURATION, GenerationRequest
    from ..values import optional_duration
    from ..adapters import scaled_adapters

    # A bad adapter file is reported before minutes of model loading.
    adapters = scaled_adapters([a[0] for a in args.adapters], [a[1] for a in args.adapters])

    # The command line takes the official API's range, as the REST server does.
    duration = optional_duration("--audio-duration", args.audio_duration, MIN_REQUEST_DURATION, MAX_DURATION)
    src_latents = load_latents(args.src_latents) if args.src_latents else None
    request = GenerationRequest(
        caption=args.caption, lyrics=_read_lyrics(args), bpm=args.bpm, key_scale=args.key_scale,
        time_signature=args.time_signature, vocal_language=args.vocal_language, audio_duration=duration,
        # Placeholder until the DiT tells turbo (8) from base (32); both are valid.
        inference_steps=_default_steps(args, True), guidance_scale=args.guidance_scale, shift=args.shift,
        seed=args.seed, infer_method=args.infer_method, timesteps=args.timesteps, task_type=args.task_type,
        src_audio=args.src_audio, src_latents=src_latents, reference_audio=args.reference_audio,
        repainting_start=args.repainting_start, repainting_end=args.repainting_end,
        continuation_seconds=args.continuation_seconds, audio_cover_strength=args.audio_cover_strength,
        cover_noise_strength=args.cover_noise_strength,
        audio_code_string=args.audio_code_string, cfg_interval_start=args.cfg_interval_start,
        cfg_interval_end=args.cfg_interval_end, chunk_mask_mode=args.chunk_mask_mode, repaint_mode=args.repaint_mode,
        repaint_strength=args.repaint_strength, batch_size=args.batch_size, track_name=args.track_name,
        track_classes=args.track_classes, instruction=args.instruction, adapters=adapters,
    )
    request.validate()
    return request.check_sources()


def _check_thinking_args(args, request) -> None:
    from ..lm.cli_args import sampling_from_args
    from ..lm.planner import validate_user_fields

    sampling_from_args(args).validate()
    validate_user_fields(request.bpm, request.key_scale or None, request.time_signature or None,
                         request.audio_duration, None, args.lm_max_duration)


def run(args) -> int:
    from ..audio_io import check_output_format
    from ..outputs import check_new_file, check_output_dir, contained_path, next_free_index, safe_stem, save_latents, \
        write_new_text
    from .. import audio_io
    from .model_setup import engine_from_args, plan_from_args, tiny_notice

    # Everything a user can get wrong is checked before minutes of model loading.
    out_dir = check_output_dir(Path(args.out))
    latents_path = None
    if args.save_latents:
        latents_path = check_new_file(contained_path(out_dir, args.save_latents), args.overwrite)
    check_output_format(args.audio_format, args.audio_quality)
    request = build_request(args)
    thinking = args.thinking and request.task_type not in LM_SKIPPED_TASKS
    if thinking:
        _check_thinking_args(args, request)
    # One decision (loading.decide_load, shared with serve and the Load node), shown and applied before
    # the weights load; a missing LM is reported before the DiT loads.
    plan = plan_from_args(args, want_lm=thinking)
    from ..engine import clamp_to

    request, messages = clamp_to(plan.decision, request)
    request.validate()
    for note in messages:
        print(note, file=sys.stderr)

    engine = engine_from_args(args, plan=plan, need_lm=thinking)
    pipe = engine.pipeline
    request.inference_steps = _default_steps(args, pipe.is_turbo)

    if args.thinking and not thinking:
        print(f"note: --thinking is skipped for {request.task_type} (the source audio sets the song), "
              "as in the official pipeline", file=sys.stderr)
    elif thinking:
        from ..lm.cli_args import think_kwargs_from_args
        from ..lm.cli_common import progress_printer

        planner = engine.planner()
        print("thinking with the 5 Hz LM ...", file=sys.stderr)
        request.plan = planner.think(
            request.caption, request.lyrics, bpm=request.bpm, keyscale=request.key_scale or None,
            timesignature=request.time_signature or None, duration=request.audio_duration,
            language=None, progress=progress_printer(True), **think_kwargs_from_args(args),
            generate_codes=request.task_type not in LM_METAS_ONLY_TASKS)
        del planner
        engine.release_planner()  # the LM's memory is free again before the DiT runs

    out_dir.mkdir(parents=True, exist_ok=True)
    from .progress import StageProgress

    result = pipe.generate(request, progress=StageProgress("diffusion", "steps"),
                           decode_progress=StageProgress("VAE decode", "tiles"))

    stem = safe_stem(args.name or request.caption or "acestep")
    index = next_free_index(out_dir, stem)
    written = []
    params = dict(result.params)
    # The decoded sources travel as tensors; the record names the files.
    params.update(src_audio=args.src_audio, reference_audio=args.reference_audio, src_latents=args.src_latents)
    params.update(audio_format=args.audio_format, checkpoints=engine.labels)
    if args.tiny:
        params["note"] = tiny_notice()
    for item in range(result.audio.shape[0]):
        name = f"{stem}_{index + item:05d}"
        audio_path = contained_path(out_dir, f"{name}.{args.audio_format}")
        json_path = contained_path(out_dir, f"{name}.json")
        while audio_path.exists() or json_path.exists():  # a file appeared meanwhile: take the next number
            index += 1
            name = f"{stem}_{index + item:05d}"
            audio_path = contained_path(out_dir, f"{name}.{args.audio_format}")
            json_path = contained_path(out_dir, f"{name}.json")
        tags = {"title": (request.caption or "ACE-Step 1.5")[:120], "comment": f"seed {result.seeds[item]}",
                "bpm": str(params.get("bpm") or ""), "key": str(params.get("key_scale") or "")}
        audio_io.save_audio(audio_path, result.audio[item], result.sample_rate, args.audio_format,
                            quality=args.audio_quality, metadata=tags)
        item_params = dict(params, seed=result.seeds[item], file=audio_path.name)
        write_new_text(json_path, json.dumps(item_params, indent=2, default=str))
        written.append(audio_path)
        print(f"wrote {audio_path} ({result.audio.shape[-1] / result.sample_rate:.2f} s, seed {result.seeds[item]}) and {json_path.name}")
    if latents_path is not None:
        latents_path.parent.mkdir(parents=True, exist_ok=True)
        save_latents(latents_path, result.latents, overwrite=args.overwrite)
        print(f"wrote latents {latents_path} {list(result.latents.shape)}")
    if args.tiny:
        print(tiny_notice())
    return 0
