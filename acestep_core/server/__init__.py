"""The official ACE-Step 1.5 REST API served by this engine (headless or inside ComfyUI)."""

from .app import create_app
from .config import DEFAULT_HOST, DEFAULT_PORT, ServerConfig
from .models import LocalModelProvider, LMUnavailableError, ModelInfo, ModelProvider
from .params import FieldError, ReleaseRequest, parse_release_request
from .routes import add_routes
from .runtime import QueueFullError, Runtime

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FieldError",
    "LMUnavailableError",
    "LocalModelProvider",
    "ModelInfo",
    "ModelProvider",
    "QueueFullError",
    "ReleaseRequest",
    "Runtime",
    "ServerConfig",
    "add_routes",
    "create_app",
    "parse_release_request",
]
