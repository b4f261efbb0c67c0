"""Test stand-in for comfy_api.latest.ui: the pack returns plain ui dicts."""
