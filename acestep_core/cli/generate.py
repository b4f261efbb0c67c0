"""`generate`: one song (or a batch) from the command line, written with a JSON of every parameter."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..request import LM_SKIPPED_TASKS


SONG = ("caption", "lyrics", "bpm", "key_scale", "time_signature", "vocal_language", "audio_duration")
DIFFUSION = ("inference_steps", "guidance_scale", "shift", "seed", "infer_method", "timesteps", "cfg_interval_start",
             "cfg_interval_end", "use_adg", "batch_size")
TASK = ("task_type", "src_audio", "reference_audio", "repainting_start", "repainting_end", "continuation_seconds",
        "audio_cover_strength", "cover_noise_strength", "audio_code_string", "chunk_mask_mode", "repaint_mode",
        "repaint_strength", "track_name", "track_classes", "instruction")
LM_STAGES = ("thinking", "sample_mode", "sample_query", "use_format")


def add_parser(subparsers) -> None:
    from .schema_args import add_fields

    p = subparsers.add_parser("generate", help="generate music (text2music, cover, repaint, continuation, extract, lego, complete)")
    # Every request flag comes from the schema (acestep_core/schema.py); the rest are files and models.
    g = p.add_argument_group("song")
    add_fields(g, SONG)
    g.add_argument("--caption-file", default=None, help="read the caption from this UTF-8 text file")
    g.add_argument("--lyrics-file", default=None, help="read the lyrics from this UTF-8 text file")
    add_fields(p.add_argument_group("diffusion"), DIFFUSION)
    g = p.add_argument_group("task")
    add_fields(g, TASK)
    g.add_argument("--src-latents", default=None, help="safetensors with 'latents' [1, frames, 64] used as the encoded source")
    g = p.add_argument_group("adapters")
    g.add_argument("--lora", action=_AddAdapter, dest="adapters", default=[], metavar="PATH",
                   help="LoRA / LoKr adapter: an official PEFT folder, a ComfyUI LoRA .safetensors or a LoKr "
                        ".safetensors (repeat to stack several)")
    g.add_argument("--lora-scale", action=_ScaleLastAdapter, dest="adapters", type=float, metavar="S",
                   help="strength of the --lora just before it (default 1.0; -10 to 10, negative and above 1 allowed)")
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
    add_fields(g, ("audio_format",))
    g.add_argument("--audio-quality", default=None, help="mp3 V0|128k|192k|256k|320k; flac 16|24; wav 16|24|32; opus 64k..256k; aac 96k..320k")
    g.add_argument("--save-latents", default=None, help="write final latents [batch, frames, 64] to this file (inside --out)")
    g.add_argument("--overwrite", action="store_true",
                   help="let --save-latents replace an existing file (songs always get new numbered names)")
    g.add_argument("--tiny", action="store_true",
                   help="demo: use tiny random-weight checkpoints (proves the install; makes noise, not music)")
    from .lm_args import add_lm_arguments

    g = add_lm_arguments(p)
    add_fields(g, LM_STAGES)
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


def _read_text(args, what: str) -> str:
    """--caption / --lyrics, or the file given for it (as think / format / sample read it)."""
    from ..values import read_text_file

    path = getattr(args, f"{what}_file")
    return read_text_file(path, what) if path else getattr(args, what)


def build_request(args):
    """The request from the flags, fully checked (values, files, sources) without loading a model."""
    from ..adapters import scaled_adapters
    from ..outputs import load_latents
    from ..request import MAX_DURATION, MIN_REQUEST_DURATION, GenerationRequest
    from ..schedules import parse_timesteps
    from ..values import optional_duration
    from .schema_args import values_of

    # A bad adapter file is reported before minutes of model loading.
    adapters = scaled_adapters([a[0] for a in args.adapters], [a[1] for a in args.adapters])
    values = values_of(args, "request")
    values["caption"] = _read_text(args, "caption")
    values["lyrics"] = _read_text(args, "lyrics")
    # The command line takes the official API's range, as the REST server does.
    values["audio_duration"] = optional_duration("--audio-duration", args.audio_duration, MIN_REQUEST_DURATION,
                                                 MAX_DURATION)
    values["src_latents"] = load_latents(args.src_latents) if args.src_latents else None
    request = GenerationRequest(**values, adapters=adapters)
    request.validate()
    parse_timesteps(request.timesteps)  # the pipeline's own check, now rather than after the LM ran
    return request.check_sources()


def plan_options(args):
    from ..planning import PlanOptions
    from .schema_args import values_of

    options = PlanOptions.from_values(values_of(args, "plan"), "cli", max_duration=args.lm_max_duration)
    options.validate()
    return options


def _check_lm_request(request, args) -> None:
    from ..lm.planner import validate_user_fields

    validate_user_fields(request.bpm, request.key_scale or None, request.time_signature or None,
                         request.audio_duration, None, args.lm_max_duration)


def make_output_dir(out: Path) -> tuple[Path, list[Path]]:
    """Create --out now, before any model loads (a folder that cannot exist is an error in seconds,
    not after the LM ran); returns it and the folders this made, deepest first. On failure nothing
    this made is left behind."""
    from ..errors import InputError
    from ..outputs import check_output_dir

    created: list[Path] = []
    try:
        out_dir = check_output_dir(out)
        for folder in (out_dir, *out_dir.parents):
            if folder.exists():
                break
            created.append(folder)
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a name too long, a read-only or virtual file system (/proc), ...
        remove_empty(created)
        raise InputError(f"cannot create the output folder {out} ({exc.strerror or exc}): choose another "
                         "--out") from None
    return out_dir, created


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            pass


def run(args) -> int:
    out_dir, created = make_output_dir(Path(args.out))
    try:
        return _generate(args, out_dir)
    except BaseException:
        remove_empty(created)  # nothing was written: leave no empty folder behind
        raise


def _generate(args, out_dir: Path) -> int:
    from ..audio_io import check_output_format
    from ..outputs import check_new_file, contained_path, next_free_index, safe_stem, save_latents, write_new_text
    from .. import audio_io
    from .model_setup import engine_from_args, plan_from_args, tiny_notice

    # Everything a user can get wrong is checked before minutes of model loading.
    latents_path = None
    if args.save_latents:
        latents_path = check_new_file(contained_path(out_dir, args.save_latents), args.overwrite)
    check_output_format(args.audio_format, args.audio_quality)
    request = build_request(args)
    options = plan_options(args)
    needs_lm = options.wants_lm(request.task_type)
    if needs_lm:
        _check_lm_request(request, args)
    # One decision (loading.decide_load, shared with serve and the Load node), shown and applied before
    # the weights load; a missing LM is reported before the DiT loads.
    plan = plan_from_args(args, want_lm=needs_lm)
    from ..engine import clamp_to

    request, messages = clamp_to(plan.decision, request)
    request.validate()
    options.max_duration = min(options.max_duration or 600, plan.decision.max_duration_s)
    for note in messages:
        print(note, file=sys.stderr)

    engine = engine_from_args(args, plan=plan, need_lm=needs_lm)
    pipe = engine.pipeline

    if options.thinking and request.task_type in LM_SKIPPED_TASKS:
        print(f"note: --thinking is skipped for {request.task_type} (the source audio sets the song), "
              "as in the official pipeline", file=sys.stderr)
    if needs_lm:
        from .lm_commands import progress_printer
        from ..planning import plan_request

        request, report = plan_request(request, options, engine.planner, progress=progress_printer(True),
                                       set_stage=lambda stage: print(stage, "...", file=sys.stderr))
        for note in report.notices:
            print(note, file=sys.stderr)
        engine.release_planner()  # the LM's memory is free again before the DiT runs

    from .progress import StageProgress

    result = pipe.generate(request, progress=StageProgress("diffusion", "steps"),
                           decode_progress=StageProgress("VAE decode", "tiles"),
                           encode_progress=StageProgress("VAE encode", "tiles"))

    for note in result.notices:
        print(f"note: {note}", file=sys.stderr)
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
