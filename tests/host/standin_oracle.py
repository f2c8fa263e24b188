"""An independent float64 Stand-In block, written from the published description, for the host tests.

Stand-In (WeChatCV, ``models/wan_video_dit.py``): video tokens ``x`` and reference tokens ``x_ip`` share
one block's weights. The reference gets its own modulation from timestep 0, a rank-r LoRA on q/k/v,
RoPE at time -1 with rows/columns right past the video's, attends to itself only and skips the
cross-attention; the video attends to ``[video | reference]`` keys. Everything here is plain torch in
float64 on the block's weights (read from its state dict); nothing of the pack or of ComfyUI's forward
is called.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from nodes_support import LATENT_SHAPE

EPS = 1e-6
RANK = 8


def block_weights(block) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to(torch.float64) for name, tensor in block.state_dict().items()}


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def layer_norm(x, weight=None, bias=None):
    return F.layer_norm(x, x.shape[-1:], weight, bias, EPS)


def linear(x, w, prefix):
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def rope_table(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Complex rotations [L, head_dim/2] for positions [L, 3], the published complex-number form."""
    c = head_dim // 2
    sizes = [c - 2 * (c // 3), c // 3, c // 3]
    parts = []
    for axis, size in enumerate(sizes):
        dims = 2 * size
        freqs = 1.0 / (10000 ** (torch.arange(0, dims, 2, dtype=torch.float64)[:size] / dims))
        parts.append(
            torch.polar(
                torch.ones(len(positions), size, dtype=torch.float64), positions[:, axis, None] * freqs
            )
        )
    return torch.cat(parts, dim=1)


def rope(x, table, heads):
    b, length, _ = x.shape
    pairs = torch.view_as_complex(x.reshape(b, length, heads, -1, 2).contiguous())
    return torch.view_as_real(pairs * table[None, :, None, :]).reshape(b, length, -1)


def attention(q, k, v, heads):
    split = [t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(split[0].shape[-1])
    out = scores.softmax(-1) @ split[2]
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def time_modulation_at_zero(model_weights: dict[str, torch.Tensor], freq_dim: int, dim: int) -> torch.Tensor:
    """[1, 6, dim]: time_projection(time_embedding(sinusoid(0))) from the model's own weights, float64."""
    half = freq_dim // 2
    position = torch.zeros(1, dtype=torch.float64)
    sinusoid = torch.outer(position, torch.pow(10000, -torch.arange(half, dtype=torch.float64).div(half)))
    embedding = torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)
    hidden = F.silu(linear(embedding, model_weights, "time_embedding.0"))
    hidden = linear(hidden, model_weights, "time_embedding.2")
    return linear(F.silu(hidden), model_weights, "time_projection.1").reshape(1, 6, dim)


def standin_block(w, x, x_ip, e_video, e_ref, context, video_table, ref_table, heads, lora, strength):
    """One Stand-In block. x [B, Lv, dim], x_ip [1, Lr, dim], e_* [B or 1, 6, dim] -> (x, x_ip)."""
    mod = (w["modulation"] + e_video).unbind(1)
    mod_ip = (w["modulation"] + e_ref).unbind(1)
    batch = x.shape[0]
    h = layer_norm(x) * (1 + mod[1][:, None]) + mod[0][:, None]
    h_ip = layer_norm(x_ip) * (1 + mod_ip[1][:, None]) + mod_ip[0][:, None]

    def lora_delta(p, hidden):
        if lora is None:
            return 0.0
        down, up = lora[p]
        return strength * (hidden @ down.T @ up.T)

    q = rope(rms_norm(linear(h, w, "self_attn.q"), w["self_attn.norm_q.weight"]), video_table, heads)
    k = rope(rms_norm(linear(h, w, "self_attn.k"), w["self_attn.norm_k.weight"]), video_table, heads)
    v = linear(h, w, "self_attn.v")
    q_ip = rope(
        rms_norm(linear(h_ip, w, "self_attn.q") + lora_delta("q", h_ip), w["self_attn.norm_q.weight"]),
        ref_table,
        heads,
    )
    k_ip = rope(
        rms_norm(linear(h_ip, w, "self_attn.k") + lora_delta("k", h_ip), w["self_attn.norm_k.weight"]),
        ref_table,
        heads,
    )
    v_ip = linear(h_ip, w, "self_attn.v") + lora_delta("v", h_ip)

    video_out = attention(
        q, torch.cat([k, k_ip.expand(batch, -1, -1)], 1), torch.cat([v, v_ip.expand(batch, -1, -1)], 1), heads
    )
    ref_out = attention(q_ip, k_ip, v_ip, heads)
    x = x + mod[2][:, None] * linear(video_out, w, "self_attn.o")
    x_ip = x_ip + mod_ip[2][:, None] * linear(ref_out, w, "self_attn.o")

    normed = layer_norm(x, w["norm3.weight"], w["norm3.bias"])
    cq = rms_norm(linear(normed, w, "cross_attn.q"), w["cross_attn.norm_q.weight"])
    ck = rms_norm(linear(context, w, "cross_attn.k"), w["cross_attn.norm_k.weight"])
    cv = linear(context, w, "cross_attn.v")
    x = x + linear(attention(cq, ck, cv, heads), w, "cross_attn.o")

    def ffn(hidden):
        return linear(F.gelu(linear(hidden, w, "ffn.0"), approximate="tanh"), w, "ffn.2")

    x = x + mod[5][:, None] * ffn(layer_norm(x) * (1 + mod[4][:, None]) + mod[3][:, None])
    x_ip = x_ip + mod_ip[5][:, None] * ffn(layer_norm(x_ip) * (1 + mod_ip[4][:, None]) + mod_ip[3][:, None])
    return x, x_ip


def lora_state(blocks: int = 2, dim: int = 128, *, scale: float = 0.2, seed: int = 5, zero_up: bool = False):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for block in range(blocks):
        for projection in "qkv":
            prefix = f"blocks.{block}.self_attn.{projection}_loras"
            state[f"{prefix}.down.weight"] = torch.randn(RANK, dim, generator=generator) * scale
            up = torch.randn(dim, RANK, generator=generator) * scale
            state[f"{prefix}.up.weight"] = torch.zeros_like(up) if zero_up else up
    return state


def oracle_model(model, reference, lora_tensors, strength: float):
    """An unpatched clone whose blocks are replaced by the float64 Stand-In block (uncached)."""
    oracle = model.clone()
    dit = model.model.diffusion_model
    model_weights = {
        k: v.detach().double() for k, v in dit.state_dict().items() if not k.startswith("blocks.")
    }
    heads, dim = dit.num_heads, dit.dim
    head_dim = dim // heads
    latent = model.model.process_latent_in(reference.latents.clone()).double()
    _, frames, rows, cols = (1, *[s // p for s, p in zip(LATENT_SHAPE[2:], dit.patch_size, strict=True)])
    ref_rows, ref_cols = latent.shape[-2] // 2, latent.shape[-1] // 2
    grid = torch.stack(
        torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (frames, rows, cols)), indexing="ij"),
        -1,
    )
    video_table = rope_table(grid.reshape(-1, 3), head_dim)
    ref_grid = torch.stack(
        torch.meshgrid(
            torch.tensor([-1.0], dtype=torch.float64),
            torch.arange(ref_rows, dtype=torch.float64) + rows,
            torch.arange(ref_cols, dtype=torch.float64) + cols,
            indexing="ij",
        ),
        -1,
    )
    ref_table = rope_table(ref_grid.reshape(-1, 3), head_dim)
    e_ref = time_modulation_at_zero(model_weights, dit.freq_dim, dim)
    weights = [block_weights(block) for block in dit.blocks]
    carried = {}

    def replacement(index):
        def run(args, extra):
            x = args["img"]
            if index == 0:
                tokens = F.conv3d(
                    latent,
                    model_weights["patch_embedding.weight"],
                    model_weights["patch_embedding.bias"],
                    stride=tuple(dit.patch_size),
                )
                carried["x_ip"] = tokens.flatten(2).transpose(1, 2)
            vec = args["vec"].double()
            e_video = vec[:, 0] if vec.ndim == 4 else vec
            block_lora = None
            if lora_tensors is not None:
                block_lora = {
                    p: (
                        lora_tensors[f"blocks.{index}.self_attn.{p}_loras.down.weight"].double(),
                        lora_tensors[f"blocks.{index}.self_attn.{p}_loras.up.weight"].double(),
                    )
                    for p in "qkv"
                }
            out, carried["x_ip"] = standin_block(
                weights[index],
                x.double(),
                carried["x_ip"],
                e_video,
                e_ref,
                args["txt"].double(),
                video_table,
                ref_table,
                heads,
                block_lora,
                strength,
            )
            return {"img": out.to(x.dtype)}

        return run

    for index in range(len(dit.blocks)):
        oracle.set_model_patch_replace(replacement(index), "dit", "double_block", index)
    return oracle
