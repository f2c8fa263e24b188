"""Stand-In (WeChatCV, Apache-2.0) for Wan, host-free: file parsing, reference RoPE, the reference branch
with its LoRA, the cached reference K/V and the video attention over ``[video | reference]`` keys.

See ``docs/STAND_IN.md`` for what the published code does and how this package maps onto ComfyUI.
"""
