"""`python -m acestep_core doctor`: the device, its memory, the memory decision and the checkpoints found.

    python -m acestep_core doctor
    python -m acestep_core doctor --simulate-vram 8 --json
    python -m acestep_core doctor --checkpoint-dir ~/models/ace --comfy-models ~/ComfyUI/models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import InputError
from ..switches import env_flag
from ..memory.inventory import (available_lm_sizes, default_checkpoint_dir, scan_checkpoint_dir,
                                scan_comfy_models)
from ..memory.policy import (ENV_ALLOW_XL, ENV_OFFLOAD_TO_CPU, XL_MIN_GB, XL_NO_OFFLOAD_GB, DeviceMemory, decide,
                             detect_device_memory,
                             is_xl_name, simulated_memory, xl_rule)

_DEVICES = ("auto", "cuda", "mps", "xpu", "cpu")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="show the device, its memory, what will run on it, and the checkpoints found",
        description="Show the compute device, its memory, the memory decision (LM size, offload, limits, "
                    "VAE chunk) with its reasons, and the ACE-Step checkpoints found on disk.",
    )
    parser.add_argument("--simulate-vram", type=float, metavar="GB",
                        help="decide for a GPU of this many GB instead of the real device")
    parser.add_argument("--device", choices=_DEVICES, default="auto",
                        help="device to inspect (default: the best available)")
    parser.add_argument("--lm", metavar="SIZE_OR_PATH",
                        help="LM you want (0.6B, 1.7B, 4B, none or a folder); shows whether the tier allows it")
    parser.add_argument("--dit", metavar="NAME_OR_PATH",
                        help="DiT you want (e.g. acestep-v15-xl-turbo); shows whether it fits and how it would run")
    parser.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                        help="official checkpoint root (default: $ACESTEP_CHECKPOINTS_DIR or ./checkpoints)")
    parser.add_argument("--comfy-models", type=Path, metavar="DIR",
                        help="a ComfyUI models/ folder to search for the repackaged single files")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(func=run)


def _gb(num_bytes: int) -> str:
    return f"{num_bytes / 1024**3:.2f} GB"


def _memory(args: argparse.Namespace) -> DeviceMemory:
    if args.simulate_vram is not None:
        device_type = args.device if args.device in ("cuda", "mps", "xpu") else "cuda"
        return simulated_memory(args.simulate_vram, device_type)
    try:
        return detect_device_memory(None if args.device == "auto" else args.device)
    except (RuntimeError, AssertionError) as exc:  # e.g. --device cuda on a machine without CUDA
        raise InputError(f"cannot inspect device {args.device!r}: {exc}. Use --device auto or cpu.") from exc


def _offload_turned_off() -> bool:
    """ACESTEP_OFFLOAD_TO_CPU says no (an unreadable value is ignored, as the decision does)."""
    try:
        return env_flag(ENV_OFFLOAD_TO_CPU, None, "", os.environ) is False
    except InputError:
        return False


def build_report(args: argparse.Namespace) -> dict:
    memory = _memory(args)
    checkpoint_dir = args.checkpoint_dir or default_checkpoint_dir()
    checkpoints = scan_checkpoint_dir(checkpoint_dir)
    comfy = scan_comfy_models(args.comfy_models) if args.comfy_models else []
    if args.comfy_models and not Path(args.comfy_models).is_dir():
        raise InputError(f"--comfy-models {args.comfy_models} is not a folder; pass ComfyUI's models/ folder.")
    searched = Path(checkpoint_dir).is_dir() or bool(args.comfy_models)
    # Tell the policy which LMs exist only when there was somewhere to look.
    available = available_lm_sizes(checkpoints + comfy) if searched else None
    decision = decide(memory, env=os.environ, requested_lm=args.lm, available_lms=available, dit=args.dit)
    import torch

    xl_found = [c.name for c in checkpoints + comfy if c.kind == "dit" and is_xl_name(c.name)]
    xl = {"rule": xl_rule(memory.total_gb, memory.device_type), "min_gb": XL_MIN_GB,
          "no_offload_gb": XL_NO_OFFLOAD_GB, "found": xl_found, "offload_env_off": _offload_turned_off()}

    return {
        "torch": torch.__version__,
        "device": memory.to_dict(),
        "decision": decision.to_dict(),
        "checkpoint_dir": str(checkpoint_dir),
        "checkpoint_dir_exists": Path(checkpoint_dir).is_dir(),
        "checkpoints": [c.to_dict() for c in checkpoints],
        "comfy_models_dir": str(args.comfy_models) if args.comfy_models else None,
        "comfy_files": [c.to_dict() for c in comfy],
        "xl": xl,
    }


def _print_text(report: dict) -> None:
    device, decision = report["device"], report["decision"]
    sim = " (simulated)" if device["simulated"] else ""
    print(f"Device:    {device['device_type']} — {device['name']}{sim}   (torch {report['torch']})")
    print(f"Memory:    {_gb(device['total_bytes'])} total, {_gb(device['free_bytes'])} free")
    print(f"Decision:  {decision['summary']}")
    lm = decision["lm_model"]
    state = " — runs by default" if decision["init_lm"] else (" — off by default" if lm != "none" else "")
    path = f" ({decision['lm_model_path']})" if decision["lm_model_path"] else ""
    print(f"  LM:        {lm}{state}{path}")
    print(f"  offload:   CPU {'on' if decision['offload_to_cpu'] else 'off'}, "
          f"DiT {'on' if decision['offload_dit_to_cpu'] else 'off'}")
    print(f"  limits:    {decision['max_duration_s']} s, batch {decision['max_batch']} "
          f"(with LM {decision['max_duration_with_lm_s']} s x{decision['max_batch_with_lm']}, "
          f"without {decision['max_duration_without_lm_s']} s x{decision['max_batch_without_lm']})")
    print(f"  VAE chunk: {decision['vae_chunk_frames']} latent frames; dtype {decision['dtype']} "
          f"(LM {decision['lm_dtype']})")
    xl = report["xl"]
    verdict = {
        "fits": "fits without offload",
        "offload": (f"needs CPU offload below {xl['no_offload_gb']:g} GB, but {ENV_OFFLOAD_TO_CPU} turns it off: "
                    "expect out-of-memory errors" if xl.get("offload_env_off") else
                    f"runs with CPU offload (turned on automatically below {xl['no_offload_gb']:g} GB)"),
        "refuse": f"refused below {xl['min_gb']:g} GB (set {ENV_ALLOW_XL}=1 to try anyway); use a 2B model",
    }[xl["rule"]]
    found = f" — found: {', '.join(xl['found'])}" if xl["found"] else ""
    print(f"  XL DiT:    {verdict}{found}")
    print("Why:")
    for reason in decision["reasons"]:
        print(f"  - {reason}")

    where = report["checkpoint_dir"]
    if not report["checkpoint_dir_exists"]:
        print(f"Checkpoints: folder {where} not found (set ACESTEP_CHECKPOINTS_DIR or --checkpoint-dir).")
    elif not report["checkpoints"]:
        print(f"Checkpoints in {where}: none of acestep-v15-*, vae, Qwen3-Embedding-0.6B, acestep-5Hz-lm-*.")
    else:
        print(f"Checkpoints in {where}:")
        for c in report["checkpoints"]:
            state = "ok" if c["complete"] else "INCOMPLETE, missing " + ", ".join(c["missing"])
            if c["corrupt"]:
                state = "CORRUPT" if c["complete"] else state + "; CORRUPT"
            size = f", {c['lm_size']}" if c["lm_size"] else ""
            print(f"  {c['name']:<34} {c['kind']:<13} {_gb(c['size_bytes']):>10}{size}  [{state}]")
            for problem in c["corrupt"]:
                print(f"      {problem}")
    if report["comfy_models_dir"]:
        files = report["comfy_files"]
        print(f"ComfyUI files in {report['comfy_models_dir']}:" + ("" if files else " none found."))
        for c in files:
            size = f", {c['lm_size']} LM" if c["lm_size"] else ""
            state = "  [CORRUPT]" if c["corrupt"] else "  [ok]"
            print(f"  {c['name']:<48} {c['kind']:<13} {_gb(c['size_bytes']):>10}{size}{state}")
            for problem in c["corrupt"]:
                print(f"      {problem}")


def run(args: argparse.Namespace) -> int:
    report = build_report(args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(report)
    return 0
