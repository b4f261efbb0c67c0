"""The one way to load and place models: checkpoint paths + the user's choices -> a ready `Engine`.

- `ModelPaths` says where the weights are (official folders, a checkpoint root, ComfyUI single files,
  or the `--tiny` random set); `resolve()` makes that concrete (default DiT, LM discovery) or raises a
  CheckpointError that says how to get the weights.
- `LoadChoices` holds what the user set explicitly (device, dtype, offload, LM); "auto" leaves a
  setting to the memory policy.
- `decide_load()` is pure: the memory decision (`memory.policy.decide`) with those choices applied.
  It is the only place that turns a decision and choices into pipeline settings; the CLI, `serve`
  and the ComfyUI Load node all call it, so one card gets one decision through every door.
- `load_engine()` loads the pipeline with that decision and returns an `Engine` (engine.py) that
  loads the LM on first use, clamps requests to the decision's limits and describes itself.

docs/memory.md explains the decision; docs/checkpoints.md the layouts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from .checkpoints import LM_SIZES, find_lm, find_lms, lm_size_of, preferred_lm
from .errors import CheckpointError, InputError
from .memory import policy
from .memory.policy import DeviceMemory, MemoryDecision

log = logging.getLogger("acestep_core.loading")

GET_WEIGHTS_HELP = (
    "No ACE-Step 1.5 weights found in {root}.\n"
    "Download the official checkpoints (about 10 GB) into one folder, e.g. with huggingface-cli:\n"
    "  huggingface-cli download ACE-Step/Ace-Step1.5 --local-dir checkpoints\n"
    "which gives checkpoints/acestep-v15-turbo, checkpoints/vae, checkpoints/Qwen3-Embedding-0.6B and\n"
    "checkpoints/acestep-5Hz-lm-1.7B; then pass --checkpoint-dir checkpoints (or set ACESTEP_CHECKPOINTS_DIR).\n"
    "ComfyUI files work too: --dit .../diffusion_models/acestep_v1.5_turbo.safetensors --vae .../vae/ace_1.5_vae.safetensors\n"
    "--text-encoder .../text_encoders/qwen_0.6b_ace15.safetensors --text-tokenizer <Qwen tokenizer folder>.\n"
    "To check the install without weights, add --tiny (tiny random weights: it makes noise, not music)."
)

# The default DiT when several are installed: the official default first, then the XL turbo, then the rest.
DIT_PREFERENCE = ("acestep-v15-turbo", "acestep-v15-xl-turbo", "acestep-v15-turbo-shift3", "acestep-v15-turbo-shift1",
                  "acestep-v15-sft", "acestep-v15-base", "acestep-v15-xl-sft", "acestep-v15-xl-base")

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
OFFLOAD_CHOICES = ("auto", "on", "off")
# --tiny runs in float32 whatever the CPU, so the install check behaves the same everywhere.
TINY_DTYPE = "float32"
# The random tiny LM never ends a caption: its free text stops here, so a --tiny run takes seconds
# (the official budget, 3500 tokens for a 600 s limit, took minutes on a CPU). Codes are not capped.
TINY_LM_TOKEN_CAP = 128


def lm_token_cap(paths) -> int | None:
    """The LM's free-text cap for these checkpoints: only the tiny random set has one."""
    return TINY_LM_TOKEN_CAP if paths.tiny else None


def tiny_notice() -> str:
    return ("NOTE: this ran the TINY RANDOM-WEIGHT checkpoints (--tiny) to prove the install. "
            "The output is noise, not music; point --checkpoint-dir at real ACE-Step 1.5 weights for songs.")


def tiny_checkpoints() -> dict[str, Path]:
    """The tiny set named by ACESTEP_TINY_DIR; otherwise random ones built once in the user's cache."""
    from .tiny import build_tiny_checkpoints, find_tiny_fixtures

    found = find_tiny_fixtures()
    if found is not None:
        return found
    return build_tiny_checkpoints()


def default_dit(root: Path | None, fits_xl: bool = True) -> str | None:
    """The installed DiT folder a run uses when no DiT is given (XL only when it fits)."""
    if root is None or not root.is_dir():
        return None
    installed = [name for name in DIT_PREFERENCE if (root / name / "config.json").is_file()]
    installed += sorted(p.name for p in root.glob("acestep-v15-*") if (p / "config.json").is_file() and p.name not in installed)
    usable = [name for name in installed if fits_xl or not policy.is_xl_name(name)]
    return (usable or installed or [None])[0]


@dataclass
class ModelPaths:
    """Where the weights are. Each component: a folder name under `checkpoint_dir`, a folder path, or a
    ComfyUI single file; None = the official default (or, for the DiT, the preferred installed one)."""

    checkpoint_dir: Optional[str | Path] = None
    dit: Optional[str | Path] = None
    vae: Optional[str | Path] = None
    text_encoder: Optional[str | Path] = None
    text_tokenizer: Optional[str | Path] = None
    lm: Optional[str | Path] = None  # an LM folder or file to use (an explicit choice)
    lm_tokenizer: Optional[str | Path] = None
    tiny: bool = False  # the tiny random set (tiny_checkpoints) fills every component not given
    # LM size -> path found by the caller (the ComfyUI node lists its own folders); None = search checkpoint_dir.
    lms: Optional[dict[str, str]] = None

    def resolve(self, fits_xl: bool = True, need_dit: bool = True) -> "ModelPaths":
        """Concrete paths: the tiny set, the default DiT and the installed LMs filled in.
        `need_dit=False`: only the LM is wanted (the LM commands), so a root without a DiT is fine."""
        if self.tiny:
            tiny = tiny_checkpoints()
            return dataclasses.replace(
                self, checkpoint_dir=None, dit=str(self.dit or tiny["dit"]), vae=str(self.vae or tiny["vae"]),
                text_encoder=str(self.text_encoder or tiny["text_encoder"]), lm=str(self.lm or tiny["lm"]),
                lms=self.lms if self.lms is not None else {})
        root = Path(self.checkpoint_dir).expanduser() if self.checkpoint_dir else None
        dit = self.dit
        if not (self.dit or self.vae or self.text_encoder):
            dit = default_dit(root, fits_xl=fits_xl)
            if dit is None and need_dit:
                raise CheckpointError(GET_WEIGHTS_HELP.format(root=root.resolve() if root else "(no --checkpoint-dir)"))
        has_root = root is not None and root.is_dir()
        lms = self.lms
        if lms is None and has_root:
            lms = {size: str(path) for size, path in find_lms([root]).items()}
        return dataclasses.replace(self, checkpoint_dir=root if has_root else None, dit=dit, lms=lms)

    def labels(self) -> dict[str, str]:
        """What is loaded, for the JSON beside each song."""
        return {k: str(getattr(self, k)) for k in ("dit", "vae", "text_encoder") if getattr(self, k)}


@dataclass
class LoadChoices:
    """The user's explicit settings; "auto" leaves each one to the memory policy."""

    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    offload: str = "auto"  # auto | on | off
    lm: str = "auto"  # auto | none | 0.6B | 1.7B | 4B | an LM folder or file
    # The caller is about to use the LM (CLI --thinking): with lm=auto the policy's LM is turned on
    # even where the tier leaves it off by default.
    want_lm: bool = False

    def validate(self) -> None:
        if self.dtype not in DTYPE_CHOICES:
            raise InputError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {self.dtype!r}")
        if self.offload not in OFFLOAD_CHOICES:
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {self.offload!r}")


@dataclass(frozen=True)
class LoadPlan:
    """What `load_engine` will do: concrete paths, the decision, the LM (None = none) and the memory."""

    paths: ModelPaths
    decision: MemoryDecision
    lm_path: Optional[str]
    memory: DeviceMemory


def _lm_request(paths: ModelPaths, choices: LoadChoices) -> Optional[str]:
    """"none", an explicit LM (size or path), or None for the policy's choice."""
    choice = str(choices.lm or "auto").strip()
    if choice.lower() == "none":
        return "none"
    if choice.lower() != "auto":
        return choice
    return str(paths.lm) if paths.lm else None


def _explicit_lm_path(request: str, paths: ModelPaths) -> Optional[str]:
    if request in LM_SIZES and paths.lms is not None and request in paths.lms:
        return str(paths.lms[request])
    if request in LM_SIZES and paths.lms is not None and paths.checkpoint_dir is None:
        return None  # the caller listed what is installed (ComfyUI): it is not there
    try:
        return str(find_lm(paths.checkpoint_dir, request))
    except CheckpointError:
        return None


def _apply_lm(decision: MemoryDecision, paths: ModelPaths, choices: LoadChoices, request: Optional[str],
              reasons: list[str]) -> tuple[bool, str, Optional[str], Optional[str]]:
    """(LM on, LM name, LM path, why it is off) with the user's choice applied: what the user asked for wins."""
    on, name, path = _lm_on(decision, paths, choices, request, reasons)
    if on:
        return on, name, path, None
    if decision.lm_off_reason is None and not paths.lms:
        return on, name, path, "no 5 Hz LM checkpoint is installed"
    return on, name, path, decision.lm_off_reason


def _lm_on(decision: MemoryDecision, paths: ModelPaths, choices: LoadChoices, request: Optional[str],
           reasons: list[str]) -> tuple[bool, str, Optional[str]]:
    lms = paths.lms or {}
    if request == "none":
        return False, decision.lm_model, None
    if request is not None:
        path = _explicit_lm_path(request, paths)
        size = request if request in LM_SIZES else lm_size_of(request)
        name = size or Path(request).name
        if size and size != decision.lm_model and decision.lm_model != "none":
            reasons.append(f"The memory tier suggests the {decision.lm_model} LM; loading {name} as asked.")
        elif paths.tiny:
            reasons.append("--tiny turns the tiny LM on (it is quick on any machine).")
        elif not size or decision.lm_model == "none" or not decision.init_lm:
            reasons.append(f"The LM {name} is used as asked.")
        if path is None:
            reasons.append(f"The requested LM {request!r} is not installed; it fails when first used.")
        return True, name, path
    path = decision.lm_model_path or lms.get(decision.lm_model)
    init_lm = decision.init_lm
    if choices.want_lm and not init_lm:
        if path is None:
            path = str(preferred_lm({k: Path(v) for k, v in lms.items()})) if lms else None
        init_lm = True
        reasons.append("The LM is turned on because this run uses it (thinking).")
    if init_lm and path is None:
        if choices.want_lm:
            reasons.append("No 5 Hz LM found beside the checkpoints; thinking fails until one is installed.")
            return True, decision.lm_model, None
        reasons.append("No 5 Hz LM checkpoint found; the LM stays off.")
        return False, decision.lm_model, None
    name = lm_size_of(path) or (Path(path).name if path else decision.lm_model)
    return init_lm, name, path if init_lm else None


def plan_load(paths: ModelPaths, choices: LoadChoices, memory: DeviceMemory | None = None,
              env: Mapping[str, str] | None = None, need_dit: bool = True) -> LoadPlan:
    """`decide_load` plus the resolved paths and the LM to load (pure: loads nothing)."""
    env = os.environ if env is None else env
    choices.validate()
    from .pipeline import mask_padded_frames_switch

    mask_padded_frames_switch(env)  # a mistyped switch stops here, not after the models have loaded
    if memory is None:
        device = None
        if str(choices.device or "auto") != "auto":
            from .pipeline import resolve_device

            device = resolve_device(choices.device)  # a missing GPU is a clear error here already
        memory = policy.detect_device_memory(device, env=env)
    else:
        memory = policy.simulate_smaller(memory, env)
    resolved = paths.resolve(fits_xl=policy.xl_rule(memory.total_gb, memory.device_type) != "refuse",
                             need_dit=need_dit)
    request = _lm_request(resolved, choices)
    available = sorted(resolved.lms) if resolved.lms is not None else None
    base = policy.decide(memory, env=env, requested_lm=request, available_lms=available,
                         dit=str(resolved.dit) if resolved.dit else None)
    base.check_dit()

    reasons = list(base.reasons)
    init_lm, lm_name, lm_path, lm_off_reason = _apply_lm(base, resolved, choices, request, reasons)
    if resolved.tiny:
        dtype = lm_dtype = TINY_DTYPE
        reasons.append("--tiny runs in float32 (the same result on every CPU).")
    elif choices.dtype != "auto":
        dtype = lm_dtype = choices.dtype
        reasons.append(f"dtype {dtype} as asked.")
    else:
        dtype, lm_dtype = base.dtype, base.lm_dtype
    offload, offload_dit = base.offload_to_cpu, base.offload_dit_to_cpu
    if choices.offload != "auto":
        offload = offload_dit = choices.offload == "on"
        reasons.append(f"Offload {choices.offload} as asked.")
    decision = dataclasses.replace(
        base, init_lm=init_lm, lm_model=lm_name, lm_model_path=lm_path, dtype=dtype, lm_dtype=lm_dtype,
        offload_to_cpu=offload, offload_dit_to_cpu=offload_dit,
        max_duration_s=base.max_duration_with_lm_s if init_lm else base.max_duration_without_lm_s,
        max_batch=base.max_batch_with_lm if init_lm else base.max_batch_without_lm,
        reasons=tuple(reasons), lm_off_reason=lm_off_reason)
    return LoadPlan(resolved, decision, lm_path, memory)


def decide_load(paths: ModelPaths, choices: LoadChoices, memory: DeviceMemory | None = None,
                env: Mapping[str, str] | None = None) -> MemoryDecision:
    """The memory decision for these checkpoints on this device, with the user's explicit choices
    (dtype, offload, LM) applied. Pure: measures memory (or takes `memory`, e.g. ComfyUI's numbers),
    loads nothing. Raises InsufficientMemoryError for an XL DiT that cannot fit, CheckpointError when
    no weights are found."""
    return plan_load(paths, choices, memory, env).decision


def load_pipeline(plan: LoadPlan, device: Any = "auto"):
    """The ACEStepPipeline of `plan`, placed on `device` with the decision's dtype, offload and VAE window."""
    from .pipeline import ACEStepPipeline, resolve_device

    paths, decision = plan.paths, plan.decision
    target = resolve_device(device)
    if policy.apply_memory_cap(plan.memory):
        log.info("simulated %.1f GB card: this process's CUDA allocator is capped to match", plan.memory.total_gb)
    log.info("memory decision: %s", decision.summary())
    return ACEStepPipeline.from_pretrained(
        checkpoint_dir=paths.checkpoint_dir, dit=paths.dit, vae=paths.vae, text_encoder=paths.text_encoder,
        text_tokenizer=paths.text_tokenizer, device=target, **decision.pipeline_kwargs())


def check_lm(plan: LoadPlan, choices: LoadChoices) -> None:
    """Raise CheckpointError (saying where it looked) when the plan uses an LM that is not there."""
    if plan.decision.init_lm and plan.lm_path is None:
        find_lm(plan.paths.checkpoint_dir, _lm_request(plan.paths, choices))


def load_engine(paths: ModelPaths, choices: LoadChoices, memory: DeviceMemory | None = None, *,
                device: Any = None, eager_lm: bool = False, need_lm: bool = False,
                env: Mapping[str, str] | None = None, plan: LoadPlan | None = None):
    """Load the pipeline as `decide_load` decides and return the `Engine`.

    `device`: where the weights go (default: `choices.device`; the ComfyUI node loads on the CPU and
    lets ComfyUI move them). `eager_lm`: load the LM now instead of on first use. `need_lm`: the caller
    will use the LM, so a missing one is reported before minutes of DiT loading. `plan`: a `plan_load`
    result already shown to the user (the same decision, not made twice)."""
    from .engine import Engine

    if plan is None:
        plan = plan_load(paths, choices, memory, env)
    if need_lm or eager_lm:
        check_lm(plan, choices)
    pipeline = load_pipeline(plan, device if device is not None else choices.device)
    engine = Engine(pipeline, plan.decision, labels=plan.paths.labels(), lm_path=plan.lm_path,
                    lm_tokenizer=plan.paths.lm_tokenizer, lm_token_cap=lm_token_cap(plan.paths))
    if eager_lm and engine.has_lm():
        engine.planner()
    return engine


def load_planner(paths: ModelPaths, choices: LoadChoices, memory: DeviceMemory | None = None, *,
                 env: Mapping[str, str] | None = None):
    """Only the 5 Hz LM (the think / format / sample / understand commands), placed as decided."""
    from .engine import load_lm_planner

    plan = plan_load(paths, dataclasses.replace(choices, want_lm=True), memory, env, need_dit=False)
    path = plan.lm_path or str(find_lm(plan.paths.checkpoint_dir, _lm_request(plan.paths, choices)))
    return load_lm_planner(path, plan.paths.lm_tokenizer, choices.device, plan.decision.lm_dtype,
                           lm_token_cap(plan.paths))
