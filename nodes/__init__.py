"""ComfyUI glue for CustomVideoX: node schemas, the MODEL patch, previews. Logic lives in customvideox_core."""
