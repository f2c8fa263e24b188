"""CustomVideoX for ComfyUI: zero-shot subject-customized video with 3D reference attention.

Guarded entry point. Inside ComfyUI this module exposes the pack through the V3 API
(``comfy_entrypoint``) and registers the ``models/customvideox`` folder; imported anywhere else
(tests, tooling, ``python -m customvideox_core.batch``) it does nothing and prints nothing. That
includes pytest importing this file as a bare module when the checkout's folder name is not a Python
identifier (a clone in ``ComfyUI-CustomVideoX`` or ``ci-1234``): without a parent package there is
nothing to register.
"""

try:  # Only ComfyUI provides these modules; anywhere else the pack stays inert.
    import folder_paths  # noqa: F401
    from comfy_api.latest import ComfyExtension  # noqa: F401
except ImportError:
    __all__: list[str] = []
else:
    if __package__:  # loaded as a package, as ComfyUI's custom-node loader does
        from .nodes.extension import comfy_entrypoint, register_model_folders

        register_model_folders()
        __all__ = ["comfy_entrypoint"]
    else:
        __all__ = []
