"""Test stand-in for comfy.utils.ProgressBar (records every update)."""

updates: list = []
hook = None  # optional callable(value, total) run on each update, like ComfyUI's progress hook


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        updates.append((self.current, self.total))
        if hook is not None:
            hook(self.current, self.total)

    def update(self, value):
        self.update_absolute(self.current + value)
