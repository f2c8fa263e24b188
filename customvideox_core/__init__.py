"""Host-free core of CustomVideoX: the algorithm, with torch, einops, safetensors, peft and numpy only.

Never imports ComfyUI. Internal imports are relative so the package works both as a top-level
package (tests, ``python -m customvideox_core.batch``) and as a subpackage of the node pack.
"""

LAYOUT_VERSION = 1
"""Version of the reference-token layout that adapters are trained against (saved in metadata)."""
