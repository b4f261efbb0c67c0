"""Peak memory of loading a DiT checkpoint, against the size of its weights.

Writes a random checkpoint in the official folder layout (bf16, like the published files) with the
real XL (or 2B) widths and `--layers` decoder layers, then loads it with `load_dit` in a fresh process
per dtype and prints the process's peak RSS growth next to the file size and the loaded weights.
Loading must not hold the checkpoint twice: the growth should stay close to the loaded size.

    python bench/bench_load.py                  # XL widths, 8 decoder layers (~3.8 GB file)
    python bench/bench_load.py --model 2b --layers 24
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def write_checkpoint(folder: Path, model: str, layers: int) -> None:
    from safetensors.torch import save_file

    from acestep_core.dit import _build_modules
    from acestep_core.tiny import _diffusers_to_official
    from bench_dit import model_config

    config = model_config(model)
    config.update(num_hidden_layers=layers, layer_types=config["layer_types"][:layers], model_type="acestep")
    tensors = {}
    with torch.device("meta"):
        modules = _build_modules(config)
    for component, module in modules.items():
        for key, value in module.state_dict().items():
            if key == "silence_latent":
                continue
            tensors[_diffusers_to_official(component, key)] = torch.randn(value.shape, dtype=torch.bfloat16) * 0.02
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))


def measure(folder: str, dtype: str) -> dict:
    from acestep_core.dit import load_dit

    before = rss_gb()
    model = load_dit(folder, dtype=getattr(torch, dtype))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    loaded = sum(p.numel() * p.element_size() for m in model.modules().values() for p in m.parameters()) / 1024**3
    return {"dtype": dtype, "before_gb": before, "peak_gb": peak, "growth_gb": peak - before, "loaded_gb": loaded}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="xl", choices=["xl", "2b"])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"acestep-v15-{args.model}-bench"
        write_checkpoint(folder, args.model, args.layers)
        file_gb = (folder / "model.safetensors").stat().st_size / 1024**3
        print(f"{args.model} widths, {args.layers} decoder layers: model.safetensors {file_gb:.2f} GB (bf16)")
        print(f"{'dtype':>9} {'loaded':>8} {'RSS growth':>11} {'growth/loaded':>14}")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
        for dtype in args.dtypes.split(","):
            out = subprocess.run([sys.executable, __file__, "--measure", str(folder), dtype], env=env,
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{dtype:>9} {r['loaded_gb']:7.2f}G {r['growth_gb']:10.2f}G {r['growth_gb'] / r['loaded_gb']:13.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
