"""The mllama (Llama 3.2 Vision) image encoder, as transformers computes it.

An image arrives as `max_num_tiles` tiles (padding tiles are zero), an
aspect-ratio id (which tile arrangement it uses) and a tile mask.  Per tile:
patch embedding, a gated embedding of the aspect ratio, a class token, gated
position embeddings (per patch, plus per tile and aspect ratio), LayerNorm;
then the patches of all tiles, padded to a multiple of 8 per tile, go
through a local transformer, LayerNorm, another aspect-ratio embedding and a
gated global transformer.  The output concatenates the global transformer's
last state with the local transformer's `intermediate_layers_indices`
states, giving `vision_output_dim` features per patch.

transformers' attention mask is reproduced as is: it masks only padding
keys seen from padding queries (the outer product of the padding flags), so
real patches do attend to padding patches and tiles.  (Its `-0:` slice,
which would flag every token, never triggers: patches = n^2 + 1 is never a
multiple of 8.)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .clip import MLP


class GatedAspectRatioEmbedding(nn.Module):
    """tanh(gate) * embedding(aspect ratio), one vector per tile."""

    def __init__(self, max_ratio_id: int, tiles: int, d: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_ratio_id + 1, tiles * d)
        self.gate = nn.Parameter(torch.empty(1), requires_grad=False)
        self.tiles, self.d = tiles, d

    def forward(self, h: torch.Tensor, ratio_ids: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(ratio_ids).reshape(-1, self.tiles, 1, self.d)
        return h + emb * self.gate.tanh()


class GatedPositionEmbedding(nn.Module):
    """(1 - tanh g) * per-patch embedding + tanh g * per-(tile, patch)
    embedding of the aspect ratio."""

    def __init__(self, max_ratio_id: int, tiles: int, patches: int, d: int) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.empty(1), requires_grad=False)
        self.embedding = nn.Parameter(torch.empty(patches, d), requires_grad=False)
        self.tile_embedding = nn.Embedding(max_ratio_id + 1, tiles * patches * d)
        self.tiles, self.patches, self.d = tiles, patches, d

    def forward(self, h: torch.Tensor, ratio_ids: torch.Tensor) -> torch.Tensor:
        h = h + ((1 - self.gate.tanh()) * self.embedding).view(1, 1, self.patches, self.d)
        tile = self.tile_embedding(ratio_ids).reshape(h.shape[0], self.tiles, self.patches, self.d)
        return h + self.gate.tanh() * tile


class VisionAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.heads = heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = (p(x).view(B, L, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=(D // self.heads) ** -0.5)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, D))


class VisionLayer(nn.Module):
    """Pre-norm encoder layer; the global transformer's are tanh-gated."""

    def __init__(self, cfg, gated: bool) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.self_attn = VisionAttention(d, cfg.attention_heads)
        self.mlp = MLP(d, cfg.intermediate_size, cfg.hidden_act)
        self.input_layernorm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.gated = gated
        if gated:
            self.gate_attn = nn.Parameter(torch.empty(1), requires_grad=False)
            self.gate_ffn = nn.Parameter(torch.empty(1), requires_grad=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.self_attn(self.input_layernorm(h), mask)
        h = h + (self.gate_attn.tanh() * a if self.gated else a)
        m = self.mlp(self.post_attention_layernorm(h))
        return h + (self.gate_ffn.tanh() * m if self.gated else m)


class VisionEncoder(nn.Module):
    def __init__(self, cfg, num_layers: int, gated: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(cfg, gated) for _ in range(num_layers))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Last state and the output of every layer."""
        states = []
        for layer in self.layers:
            h = layer(h, mask)
            states.append(h)
        return h, states


def tile_attention_mask(ratio_mask: torch.Tensor, patches: int, padded: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [N, 1, T*padded, T*padded] from the tile mask [N, T]
    (1 = real tile), exactly as transformers builds it (module doc)."""
    N, T = ratio_mask.shape
    m = ratio_mask.view(N, T, 1, 1).to(dtype).repeat(1, 1, padded, 1)
    m[:, :, patches:] = 0
    inv = (1 - m).reshape(N, T * padded, 1)
    return (inv @ inv.transpose(-1, -2) * torch.finfo(dtype).min).unsqueeze(1)


class MllamaVisionModel(nn.Module):
    """Module names mirror transformers' `vision_model`."""

    def __init__(self, cfg) -> None:
        super().__init__()
        d, p, tiles = cfg.hidden_size, cfg.patch_size, cfg.max_num_tiles
        self.num_patches = (cfg.image_size // p) ** 2 + 1
        self.tiles, self.d = tiles, d
        self.intermediate = tuple(cfg.intermediate_layers_indices)
        ratio_ids = len(cfg.supported_aspect_ratios)
        self.patch_embedding = nn.Conv2d(cfg.num_channels, d, p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(d), requires_grad=False)
        self.gated_positional_embedding = GatedPositionEmbedding(ratio_ids, tiles, self.num_patches, d)
        self.pre_tile_positional_embedding = GatedAspectRatioEmbedding(ratio_ids, tiles, d)
        self.post_tile_positional_embedding = GatedAspectRatioEmbedding(ratio_ids, tiles, d)
        self.layernorm_pre, self.layernorm_post = nn.LayerNorm(d), nn.LayerNorm(d)
        self.transformer = VisionEncoder(cfg, cfg.num_hidden_layers, gated=False)
        self.global_transformer = VisionEncoder(cfg, cfg.num_global_layers, gated=True)
        self.output_dim = d * (1 + len(self.intermediate))
        if self.output_dim != cfg.vision_output_dim:
            raise ValueError(f"vision_output_dim={cfg.vision_output_dim} but hidden_size * (1 + "
                             f"{len(self.intermediate)} intermediate layers) = {self.output_dim}")

    def forward(self, pixels: torch.Tensor, ratio_ids: torch.Tensor, ratio_mask: torch.Tensor) -> torch.Tensor:
        """Features [N, tiles, patches, vision_output_dim] of N images given
        as pixels [N, tiles, 3, S, S], ratio_ids [N] and ratio_mask [N, tiles]."""
        N, T = pixels.shape[:2]
        d, P = self.d, self.num_patches
        x = pixels.reshape(N * T, *pixels.shape[2:]).to(self.patch_embedding.weight.dtype)
        h = self.patch_embedding(x).flatten(2).transpose(1, 2)
        h = self.pre_tile_positional_embedding(h.reshape(N, T, -1, d), ratio_ids)
        h = h.reshape(N * T, -1, d)
        h = torch.cat([self.class_embedding.expand(N * T, 1, d), h], dim=1)
        h = self.layernorm_pre(self.gated_positional_embedding(h.reshape(N, T, P, d), ratio_ids))
        padded = math.ceil(P / 8) * 8
        h = F.pad(h, (0, 0, 0, padded - P))
        mask = tile_attention_mask(ratio_mask, P, padded, h.dtype)
        h, states = self.transformer(h.reshape(N, T * padded, d), mask)
        h = self.post_tile_positional_embedding(self.layernorm_post(h).reshape(N, T, padded, d), ratio_ids)
        h, _ = self.global_transformer(h.reshape(N, T * padded, d), mask)
        h = h.reshape(N, T, padded, d)[:, :, :P]
        inter = torch.stack([states[i] for i in self.intermediate], dim=-1).reshape(N, T, padded, -1)[:, :, :P]
        return torch.cat([h, inter], dim=-1)
