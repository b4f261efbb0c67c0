"""Test stand-in for ComfyUI's server module: `PromptServer.instance` is None (no REST routes, as when
ComfyUI runs without its web server) unless a test installs a `TextRecorder` to catch what nodes show."""


class PromptServer:
    instance = None


class TextRecorder:
    """Records `send_progress_text` (the text ComfyUI shows under a node)."""

    def __init__(self):
        self.texts: list[tuple[str, str]] = []

    def send_progress_text(self, text, node_id, sid=None):
        self.texts.append((str(node_id), text if isinstance(text, str) else text.decode("utf-8")))
