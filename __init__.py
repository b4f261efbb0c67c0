"""ComfyUI entry point of the ACE-Step 1.5 Studio node pack.

ComfyUI imports this folder as a package under a mangled name; everything below is relative.
Only the V3 entry point is exposed (no NODE_CLASS_MAPPINGS, which would disable V3).
"""

import logging

_log = logging.getLogger(__name__)

try:
    import folder_paths as _folder_paths  # noqa: F401  (present only inside ComfyUI)

    _IN_COMFYUI = True
except ImportError:  # imported as a plain package (engine use, pip install): no nodes
    _IN_COMFYUI = False

if _IN_COMFYUI:
    from .nodes import ACEStepStudioExtension
    from .nodes.model_files import register_folder as _register_folder

    _register_folder()  # before any define_schema lists the folder

    def _register_routes() -> None:
        try:
            from server import PromptServer

            from .nodes.rest_routes import register_routes

            if getattr(PromptServer, "instance", None) is not None:
                register_routes(PromptServer.instance)
        except ImportError as exc:
            _log.warning("ACE-Step: REST routes not available (%s)", exc)
        except Exception as exc:  # routes are an extra; the nodes must load regardless
            _log.warning("ACE-Step: REST routes failed to register: %s", exc)

    _register_routes()

    async def comfy_entrypoint() -> ACEStepStudioExtension:
        return ACEStepStudioExtension()
