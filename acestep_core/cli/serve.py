"""`python -m acestep_core serve`: the official ACE-Step REST API on a local port (default 127.0.0.1:8001).

Start-up makes the memory decision the CLI and the ComfyUI Load node make (`loading.decide_load`: device
memory -> dtype, offload, VAE window, whether the LM runs, duration and batch limits), logs it, loads by it
and reports it in /v1/stats; requests are clamped to it. SIGTERM / SIGINT: stop taking jobs, cancel the
running one at its next step, keep the queue on record, remove orphaned uploads, exit within
ACESTEP_SHUTDOWN_GRACE seconds (default 5) plus the time open connections need to close (1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

log = logging.getLogger("acestep_core.serve")
# Open HTTP connections get this long to finish once the server stops.
CONNECTION_CLOSE_S = 1.0


class StartupError(Exception):
    """A start-up problem the user can fix; `serve` prints it as one line and exits non-zero."""


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0-65535 (0 picks a free one)")
    return port


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the ACE-Step 1.5 REST API (release_task, query_result, ...)",
        description="Serve the official ACE-Step 1.5 REST API. Binds to loopback unless told otherwise; "
                    "set ACESTEP_API_KEY to require a key.",
    )
    p.add_argument("--host", default=os.environ.get("ACESTEP_API_HOST", "127.0.0.1"),
                   help="interface to bind (default 127.0.0.1; use 0.0.0.0 only behind an API key)")
    # The default stays text so argparse checks ACESTEP_API_PORT with the same rule as --port.
    p.add_argument("--port", type=port_number, default=os.environ.get("ACESTEP_API_PORT", "8001"),
                   help="port (default 8001; 0 picks a free one and prints it)")
    p.add_argument("--checkpoint-dir", default=os.environ.get("ACESTEP_CHECKPOINTS_DIR"),
                   help="official checkpoints/ root (acestep-v15-turbo/, vae/, Qwen3-Embedding-0.6B/, acestep-5Hz-lm-*/)")
    p.add_argument("--dit", default=os.environ.get("ACESTEP_CONFIG_PATH"),
                   help="DiT folder name under --checkpoint-dir, a folder path, or a ComfyUI .safetensors")
    p.add_argument("--vae", default=None)
    p.add_argument("--text-encoder", default=None)
    p.add_argument("--text-tokenizer", default=None)
    p.add_argument("--lm", default=None, help="5 Hz LM folder (default: acestep-5Hz-lm-* under --checkpoint-dir)")
    p.add_argument("--lm-tokenizer", default=None)
    p.add_argument("--no-lm", action="store_true",
                   help="run without the 5 Hz LM (thinking / use_format / sample mode then fail with a clear error)")
    p.add_argument("--device", default=os.environ.get("ACESTEP_DEVICE", "auto"),
                   help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N, mps or xpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--offload", default="auto", choices=["auto", "on", "off"],
                   help="keep idle components on the CPU (auto: by the memory tier)")
    p.add_argument("--output-dir", default=os.environ.get("ACESTEP_OUTPUT_DIR", "acestep_api_output"),
                   help="results are written to <output-dir>/<task_id>/ and served from there only")
    p.add_argument("--api-key", default=None, help="require this key (overrides ACESTEP_API_KEY)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--tiny", action="store_true",
                   help="serve tiny random-weight checkpoints (proves the install and the API; songs are noise)")
    p.set_defaults(func=run)


def _use_lm(args) -> bool:
    if args.no_lm:
        return False
    flag = (os.environ.get("ACESTEP_INIT_LLM") or "").strip().lower()
    return flag not in ("0", "false", "no", "n", "off")


def provider_from_args(args: argparse.Namespace):
    """The headless model provider for these flags; it makes the memory decision (loading.decide_load)."""
    from ..server import LocalModelProvider

    return LocalModelProvider(
        checkpoint_dir=args.checkpoint_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder,
        text_tokenizer=args.text_tokenizer, lm=args.lm, lm_tokenizer=args.lm_tokenizer, use_lm=_use_lm(args),
        device=args.device, dtype=args.dtype, offload=args.offload, tiny=args.tiny)


def run(args: argparse.Namespace) -> int:
    from ..errors import ACEStepError
    from ..server import Runtime, ServerConfig, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.tiny:
        from .model_setup import tiny_notice

        print(tiny_notice(), file=sys.stderr, flush=True)
    elif args.checkpoint_dir is None and args.dit is None:
        print("error: give --checkpoint-dir (official checkpoints/ root) or --dit/--vae/--text-encoder",
              file=sys.stderr)
        return 2
    for flag, value in (("--checkpoint-dir", args.checkpoint_dir), ("--dit", args.dit), ("--vae", args.vae),
                        ("--text-encoder", args.text_encoder), ("--lm", args.lm)):
        # a bare name under --checkpoint-dir is resolved by the engine; paths must exist now
        looks_like_path = value and (flag == "--checkpoint-dir" or os.sep in value or value.endswith(".safetensors"))
        if looks_like_path and not Path(value).exists():
            print(f"error: {flag} {value} does not exist", file=sys.stderr)
            return 2
    overrides = {"api_key": args.api_key} if args.api_key else {}
    try:
        config = ServerConfig.from_env(Path(args.output_dir), **overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_folders(config)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # The decision is made here, before the first request: a bad --device, missing weights or an XL
        # model this card cannot hold are start-up errors, not failed jobs.
        provider = provider_from_args(args)
    except ACEStepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    decision = provider.decision()
    log.info("memory decision: %s", decision.summary())
    for reason in decision.reasons:
        log.info("  %s", reason)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logging.warning("binding to %s without ACESTEP_API_KEY: anyone who can reach this port can "
                        "run jobs and download results", args.host)
    runtime = Runtime(provider, config, memory_decision=decision)
    try:
        asyncio.run(_serve(create_app(runtime, start_runtime=False), args.host, args.port, config, provider,
                           runtime))
    except KeyboardInterrupt:
        pass
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if runtime.abandoned_work:
        # The model thread is inside a step with no cancel point; its record already says the job
        # was stopped. Leave without tearing down the native thread pools under it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def check_folders(config) -> None:
    """The output and state folders exist (or are made) before anything loads."""
    for flag, folder in (("--output-dir", config.result_dir), ("ACESTEP_STATE_DIR", config.state_dir)):
        if folder is None:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StartupError(f"{flag} {folder}: a file (not a folder) has this name, or one of its parent "
                               "folders; give a folder path") from None
        except OSError as exc:
            raise StartupError(f"{flag} {folder}: cannot create this folder ({exc.strerror or exc}); "
                               "give a folder you can write to") from None


def bind_error(exc: OSError, host: str, port: int) -> StartupError:
    """A one-line reason why host:port cannot be bound, and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{host}:{port} is already in use (another server?); stop it or give another "
                            "--port (0 picks a free one)")
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return StartupError(f"--host {host} is not an address of this machine; use 127.0.0.1 (this machine "
                            "only), 0.0.0.0 (every interface) or one of this machine's own addresses")
    if exc.errno == errno.EACCES:
        return StartupError(f"{host}:{port}: not allowed to bind this port (ports below 1024 need "
                            "privileges); give a --port of 1024 or more")
    return StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def _serve(app, host: str, port: int, config, provider, runtime) -> None:
    """Bind, start the runtime (only once the port is ours), print the real address (so --port 0 is
    usable), serve until SIGINT / SIGTERM."""
    from aiohttp import web

    from ..server.state_lock import StateFolderInUseError

    runner = web.AppRunner(app, access_log=None, shutdown_timeout=CONNECTION_CLOSE_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise bind_error(exc, host, port) from None
        # No await between the bind and this start: no request is served before the runtime runs.
        try:
            await runtime.start()
        except StateFolderInUseError as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot use the state folder {runtime.state_dir}: {exc.strerror or exc}") from None
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"ACE-Step API on http://{bound_host}:{bound_port}  (results in {config.result_dir.resolve()}, "
              f"LM: {provider.lm_name() or 'none'})", flush=True)
        stop = asyncio.Event()
        received: list[str] = []
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig.name), stop.set()))
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
                pass
        await stop.wait()
        log.info("%s received: taking no new jobs, stopping the running one (grace %.1f s)",
                 received[0] if received else "stop", config.shutdown_grace_s)
        summary = await runtime.shutdown(config.shutdown_grace_s)
        if summary["running_finished"]:
            log.info("job %s finished during the grace period; its results are kept", summary["running"])
        elif summary["running"]:
            how = "at its next step" if summary["stopped_in_time"] else "by exiting (no cancel point in time)"
            log.info("job %s stopped %s; it answers status 2 after a restart", summary["running"], how)
        log.info("%d queued job(s) kept on record (they answer status 2 after a restart, their uploads "
                 "are removed); shutting down", summary["queued"])
    finally:
        await runner.cleanup()
