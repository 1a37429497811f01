"""CLIP and SigLIP vision towers, as LLaVA uses them.

A ViT: patch embedding (a strided convolution), CLIP's class token, learned
position embeddings, CLIP's pre-LayerNorm, then pre-norm encoder layers
(LayerNorm -> attention with biased q/k/v/out projections -> residual ->
LayerNorm -> fc1, activation, fc2 -> residual).  `forward` returns the
hidden states transformers reports: the encoder's input, then every layer's
output, so LLaVA can pick `vision_feature_layer`.  The towers' post-LayerNorm
and SigLIP's pooling head feed only pooled outputs, which LLaVA never reads:
the LayerNorm loads (it is in every checkpoint) and the head is skipped.
Module names mirror the checkpoints (`embeddings.patch_embedding`,
`encoder.layers.N.self_attn.q_proj`, ...).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import activation

TOWER_TYPES = ("clip_vision_model", "siglip_vision_model")


def _act(name: str):
    if name == "quick_gelu":   # CLIP's sigmoid approximation of GELU
        return lambda x: x * torch.sigmoid(1.702 * x)
    return activation(name)


class Embeddings(nn.Module):
    def __init__(self, cfg, clip: bool) -> None:
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.patch_embedding = nn.Conv2d(cfg.num_channels, d, p, stride=p, bias=not clip)
        patches = (cfg.image_size // p) ** 2
        self.class_embedding = nn.Parameter(torch.empty(d), requires_grad=False) if clip else None
        self.position_embedding = nn.Embedding(patches + (1 if clip else 0), d)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        if self.class_embedding is not None:
            h = torch.cat([self.class_embedding.expand(h.shape[0], 1, -1), h], dim=1)
        return h + self.position_embedding.weight


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = (p(x).view(B, L, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, scale=(D // self.heads) ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    def __init__(self, d: int, inter: int, act: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, inter), nn.Linear(inter, d)
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.self_attn = SelfAttention(d, cfg.num_attention_heads)
        self.mlp = MLP(d, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.layer_norm1(h))
        return h + self.mlp(self.layer_norm2(h))


class VisionTower(nn.Module):
    """A CLIP or SigLIP vision transformer from its HF vision config.
    Raises ValueError for another tower type."""

    def __init__(self, cfg) -> None:
        super().__init__()
        kind = getattr(cfg, "model_type", "clip_vision_model")
        if kind not in TOWER_TYPES:
            raise ValueError(f"vision tower {kind!r} is not supported; known: {', '.join(TOWER_TYPES)}")
        self.has_cls = kind == "clip_vision_model"
        d = cfg.hidden_size
        self.embeddings = Embeddings(cfg, self.has_cls)
        self.pre_layrnorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if self.has_cls else None
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.num_positions = (cfg.image_size // cfg.patch_size) ** 2 + (1 if self.has_cls else 0)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states [B, positions, hidden] of pixels [B, 3, S, S]: the
        encoder's input, then each layer's output."""
        h = self.embeddings(pixels)
        if self.pre_layrnorm is not None:
            h = self.pre_layrnorm(h)
        states = [h]
        for layer in self.encoder.layers:
            h = layer(h)
            states.append(h)
        return states

    @staticmethod
    def map_name(name: str) -> str | None:
        """Checkpoint name below the tower -> parameter name (None: skip)."""
        name = name.removeprefix("vision_model.")
        return None if name.startswith("head.") else name
