"""Screenshot a shipped workflow in the real ComfyUI editor (headless Chromium, no GPU).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/ComfyUI/.venv/bin/python \
        python docs/images/capture_workflow.py workflows/text2music_thinking.json docs/images/main-workflow.png

Starts a headless ComfyUI on CPU with this pack and the tiny test models (so the loader's combos
list real files), opens its frontend in headless Chromium, loads the workflow with
`app.loadGraphData`, and saves a PNG through the DevTools protocol. Needs `chromium` on PATH
(Debian: `apt-get install chromium`) and the comfyui-frontend-package in ComfyUI's venv.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))
COMFY_PORT = 18241
DEVTOOLS_PORT = 18242
# A fresh user directory would greet us with the templates dialog and a minimap: switch both off.
EDITOR_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
# Scale and scroll the canvas so every node (with its title bar) sits inside the free area,
# clear of the side bar (left) and the tab / run bars (top).
FIT_GRAPH_JS = """(() => {
  const [ml, mt, mr, mb] = [110, 120, 40, 40];
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of app.graph._nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const w = innerWidth - ml - mr, h = innerHeight - mt - mb;
  const s = Math.min(w / (x1 - x0), h / (y1 - y0), 1.0);
  app.canvas.ds.scale = s;
  app.canvas.ds.offset = [ml / s - x0 + (w / s - (x1 - x0)) / 2, mt / s - y0 + (h / s - (y1 - y0)) / 2];
  app.canvas.setDirty(true, true);
  return s;
})()"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def _wait_for(predicate, what: str, limit_s: float = 300.0):
    deadline = time.time() + limit_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {limit_s:.0f}s")


def start_comfyui(root: Path) -> subprocess.Popen:
    from nodes_models import build_models_dir

    fixtures = REPO_ROOT / "tests" / "fixtures"
    models = build_models_dir(root, fixtures / "acestep-tiny", fixtures / "comfyui-format-tiny", official=False)
    for d in ("out", "in", "temp", "user", "custom"):
        (root / d).mkdir(exist_ok=True)
    (root / "custom" / "acestep15_studio").symlink_to(REPO_ROOT)
    (root / "paths.yaml").write_text(
        f"ace15s:\n  base_path: {models}\n  diffusion_models: diffusion_models\n  vae: vae\n"
        f"  text_encoders: text_encoders\n  acestep: acestep\n  custom_nodes: {root / 'custom'}\n")
    comfy_dir = os.environ["COMFYUI_DIR"]
    python = os.environ.get("COMFYUI_PYTHON") or str(Path(comfy_dir) / ".venv" / "bin" / "python")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(COMFY_PORT), "--disable-auto-launch",
         "--disable-api-nodes", "--extra-model-paths-config", str(root / "paths.yaml"),
         "--output-directory", str(root / "out"), "--input-directory", str(root / "in"),
         "--temp-directory", str(root / "temp"), "--database-url", "sqlite:///:memory:",
         "--user-directory", str(root / "user")],
        cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT)
    _wait_for(lambda: "To see the GUI go to" in (root / "server.log").read_text() or proc.poll() is not None,
              "ComfyUI")
    if proc.poll() is not None:
        raise RuntimeError((root / "server.log").read_text()[-3000:])
    req = urllib.request.Request(f"http://127.0.0.1:{COMFY_PORT}/api/settings",
                                 data=json.dumps(EDITOR_SETTINGS).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    return proc


def start_chromium(profile: Path, width: int, height: int) -> subprocess.Popen:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        raise FileNotFoundError("chromium not found (apt-get install chromium)")
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             f"--remote-debugging-port={DEVTOOLS_PORT}", f"--window-size={width},{height}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def page_ws():
        try:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{DEVTOOLS_PORT}/json", timeout=5).read())
        except OSError:
            return None
        return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)

    proc.page_ws = _wait_for(page_ws, "chromium", 60)
    return proc


class DevTools:
    """The three DevTools calls we need, over aiohttp's websocket."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=120)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")


async def capture(ws_url: str, workflow: dict, out: Path, width: int, height: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        dt = DevTools(ws)
        await dt.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        await dt.call("Page.navigate", url=f"http://127.0.0.1:{COMFY_PORT}/")
        deadline = time.time() + 180
        while not await dt.evaluate("!!(window.app && window.app.graph && window.app.canvas)"):
            if time.time() > deadline:
                raise TimeoutError("the ComfyUI frontend did not start")
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # let the node definitions and extensions finish registering
        await dt.evaluate(f"app.loadGraphData({json.dumps(workflow)})")
        await asyncio.sleep(3)
        missing = await dt.evaluate("app.graph._nodes.filter(n => n.has_errors || !n.constructor.nodeData)"
                                    ".map(n => n.type)")
        if missing:
            raise RuntimeError(f"nodes not recognised by the editor: {missing}")
        await dt.evaluate("document.querySelectorAll('.p-dialog-mask, .p-toast').forEach(e => e.remove())")
        await dt.evaluate(FIT_GRAPH_JS)
        await asyncio.sleep(1)
        shot = await dt.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1680)
    parser.add_argument("--height", type=int, default=860)
    args = parser.parse_args()
    workflow = json.loads(args.workflow.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        comfy = start_comfyui(Path(tmp) / "comfy")
        chromium = None
        try:
            chromium = start_chromium(Path(tmp) / "profile", args.width, args.height)
            asyncio.run(capture(chromium.page_ws, workflow, args.out, args.width, args.height))
        finally:
            for proc in (chromium, comfy):
                if proc is not None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
