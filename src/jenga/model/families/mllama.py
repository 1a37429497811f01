"""mllama (Llama 3.2 Vision): a Llama decoder with cross-attention layers
over the encoder tokens of the request's images.

Self-attention layers are plain Llama layers over the text tokens in their
own groups.  Cross-attention layers (`cross_attention_layers`) hold no text
state: they read K/V of the encoder tokens, which the encoder run writes
into the cross pages once per image (image tiles -> `MllamaVisionModel` ->
projector -> per layer k_proj + k_norm and v_proj); text tokens only query
them.  A cross layer is tanh-gated twice (attention and MLP); requests
without images skip cross layers, as transformers does.  Which images a
token sees, and the quirks kept for exactness, are in
`model/cross_attention.py`.

Because transformers lets text *before* the first image token attend to the
images, a request's whole prefix depends on its images
(`prefix_depends_on_images`): the engine salts its prefix-cache keys with
the images' hashes, so only requests with the same images share pages.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...memory.spec import kv_heads_per_rank
from ...sched.step import StepPlan
from ..attn_metadata import AttnMetadata
from ..cross_attention import CrossMetadata, build_cross_metadata, cross_attend
from ..image_processing import mllama_pixels, pixel_hash, processor_settings
from ..kv_pool import KVPool
from ..kv_quant import quantize
from ..layers import GatedMLP, RMSNorm
from ..multimodal import ImageInput, ImageStore, encoder_runs, image_slots, require_pages
from ..parallel import NO_TP, ColumnParallelLinear, RowParallelLinear, TPShard, head_ranges
from .base import Arch, DecoderLM, common_arch, hf_config
from .mllama_vision import MllamaVisionModel

_TEXT = ("model.language_model.", "language_model.model.")
_HEAD = ("language_model.lm_head.",)
_VISION = ("model.vision_model.", "vision_model.")
_PROJ = ("model.multi_modal_projector.", "multi_modal_projector.")


class CrossAttention(nn.Module):
    """Cross-attention over the encoder's K/V pages; sharded by heads like
    self-attention (each rank writes its KV heads of the encoder states)."""

    def __init__(self, a: Arch, shard: TPShard = NO_TP) -> None:
        super().__init__()
        D = a.head_dim
        (q0, q1), (k0, k1) = head_ranges(a.num_heads, a.num_kv_heads, shard)
        self.q_proj = ColumnParallelLinear(a.hidden_size, (q0 * D, q1 * D), False, a.num_heads * D)
        self.k_proj = ColumnParallelLinear(a.hidden_size, (k0 * D, k1 * D), False, a.num_kv_heads * D)
        self.v_proj = ColumnParallelLinear(a.hidden_size, (k0 * D, k1 * D), False, a.num_kv_heads * D)
        self.o_proj = RowParallelLinear((q0 * D, q1 * D), a.hidden_size, False, a.num_heads * D, shard)
        self.q_norm, self.k_norm = RMSNorm(D, a.rms_eps), RMSNorm(D, a.rms_eps)
        self.head_dim, self.scale = D, a.scale

    def encoder_kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V [n, Hkv, D] of encoder states [n, hidden]."""
        n = states.shape[0]
        key = self.k_norm(self.k_proj(states).view(n, -1, self.head_dim))
        return key, self.v_proj(states).view(n, -1, self.head_dim)

    def forward(self, x: torch.Tensor, meta: CrossMetadata, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = self.q_norm(self.q_proj(x).view(x.shape[0], -1, self.head_dim))
        return self.o_proj(cross_attend(q, kv[0], kv[1], meta, self.scale).reshape(x.shape[0], -1))


class CrossDecoderLayer(nn.Module):
    def __init__(self, a: Arch, shard: TPShard = NO_TP) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(a, shard)
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_eps)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_eps)
        self.mlp = GatedMLP(a.hidden_size, a.intermediate_size, a.act, shard=shard)
        self.cross_attn_attn_gate = nn.Parameter(torch.empty(1), requires_grad=False)
        self.cross_attn_mlp_gate = nn.Parameter(torch.empty(1), requires_grad=False)

    def forward(self, h: torch.Tensor, meta: CrossMetadata, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """h with the rows of `meta` updated (a new tensor)."""
        x = h[meta.rows]
        x = x + self.cross_attn_attn_gate.tanh() * self.cross_attn(self.input_layernorm(x), meta, kv)
        m = self.mlp(self.post_attention_layernorm(x)) * meta.sees[:, None].to(x.dtype)
        return h.index_copy(0, meta.rows, x + self.cross_attn_mlp_gate.tanh() * m)


class MllamaForConditionalGeneration(DecoderLM):
    model_types = ("mllama",)
    accepts_images = True
    expands_image_tokens = False          # one <|image|> token per image in the prompt
    prefix_depends_on_images = True

    def __init__(self, config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 shard: TPShard = NO_TP) -> None:
        full = hf_config(config)
        super().__init__(full.text_config, dtype, device, shard)   # vision tower and projector replicated
        self.vlm_config, vc, a = full, full.vision_config, self.arch
        self.cross_layers = tuple(sorted(full.text_config.cross_attention_layers))
        if any(not 0 <= i < a.num_layers for i in self.cross_layers):
            raise ValueError(f"cross_attention_layers {self.cross_layers} outside the {a.num_layers} layers")
        self.image_token_id = full.image_token_id
        with torch.device("meta"):
            # 8 extra rows: the image token and reserved ids sit past the text vocabulary
            self.model.embed_tokens = nn.Embedding(a.vocab_size + 8, a.hidden_size)
            for i in self.cross_layers:
                self.model.layers[i] = CrossDecoderLayer(a, shard)
            self.vision_model = MllamaVisionModel(vc)
            self.multi_modal_projector = nn.Linear(vc.vision_output_dim, a.hidden_size)
        self.patches = self.vision_model.num_patches
        self.tokens_per_image = vc.max_num_tiles * self.patches

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        return common_arch(cfg)

    @property
    def attn_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.arch.num_layers) if i not in self.cross_layers)

    def layer_kv_shapes(self) -> dict[int, tuple[int, int, int, int]]:
        a = self.arch
        heads = kv_heads_per_rank(a.num_kv_heads, self.shard.size)
        return {**super().layer_kv_shapes(), **{i: (heads, a.head_dim, 0, 0) for i in self.cross_layers}}

    def map_name(self, name: str) -> str | None:
        for prefixes, target in ((_TEXT, "model."), (_HEAD, "lm_head."), (_VISION, "vision_model."),
                                 (_PROJ, "multi_modal_projector.")):
            for p in prefixes:
                if name.startswith(p):
                    return super().map_name(target + name[len(p):])
        return super().map_name(name)

    # -- images ----------------------------------------------------------
    def image_processor(self, preprocessor_config: dict | None = None):
        """A function RGB PIL image -> ImageInput; ValueError when the
        preprocessor config disagrees with the vision tower's geometry."""
        vc = self.vlm_config.vision_config
        s = processor_settings("mllama", vc.to_dict(), preprocessor_config)
        if (s.size, s.max_tiles) != (vc.image_size, vc.max_num_tiles):
            raise ValueError(f"preprocessor tiles of {s.size} px x {s.max_tiles} do not match the vision "
                             f"model's image_size={vc.image_size}, max_num_tiles={vc.max_num_tiles}")

        def process(image) -> ImageInput:
            px, ratio_id, tiles = mllama_pixels(image, s)
            return ImageInput(px, pixel_hash(px, ratio_id, tiles), self.tokens_per_image, ratio_id, tiles)
        return process

    def encode(self, image: ImageInput) -> torch.Tensor:
        """Projected encoder states [tiles * patches, hidden] of one image."""
        tiles = self.vision_model.tiles
        mask = (torch.arange(tiles) < image.num_tiles).long()[None].to(self.device)
        feats = self.vision_model(image.pixel_values[None].to(self.device), torch.tensor([image.aspect_ratio_id],
                                  device=self.device), mask)
        return self.multi_modal_projector(feats).reshape(-1, self.arch.hidden_size)

    def prepare_images(self, step: StepPlan, plan, kv_pool: KVPool, store: ImageStore) -> tuple[dict, int]:
        """Run the encoder for the images this step lists (writing every
        cross layer's K/V into its pages), then build the cross metadata.
        Returns forward keyword arguments and the number of encoder runs."""
        runs = 0
        groups = {kv_pool.group_of(i) for i in self.cross_layers}
        for s in step.seqs:
            for k in encoder_runs(s, plan.groups):
                states = self.encode(store.get(s.req_id, k))
                if states.shape[0] != s.images[k].num_tokens:
                    raise ValueError(f"request {s.req_id}: image {k} encodes to {states.shape[0]} tokens, "
                                     f"its ImageRef says {s.images[k].num_tokens}")
                runs += 1
                for i in self.cross_layers:
                    pages, offs = image_slots(s, plan.groups[kv_pool.group_of(i)], k)
                    require_pages(s, kv_pool.group_of(i), k, pages)
                    kc, vc = kv_pool.kv_view(i)
                    key, value = self.model.layers[i].cross_attn.encoder_kv(states)
                    pages, offs = pages.to(kc.device), offs.to(kc.device)
                    kc[pages, offs], vc[pages, offs] = quantize(key, kc.dtype), quantize(value, vc.dtype)
        metas = {g: build_cross_metadata(step, plan.groups[g], store, self.patches, self.device) for g in groups}
        if all(m is None for m in metas.values()):
            return {}, runs
        return {"cross": {i: metas[kv_pool.group_of(i)] for i in self.cross_layers}}, runs

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn_metadata: AttnMetadata,
                kv_pool: KVPool, rows: torch.Tensor | None = None,
                cross: dict[int, CrossMetadata] | None = None) -> torch.Tensor:
        """As DecoderLM.forward; `cross` (layer -> metadata, from
        prepare_images) runs the cross layers for the seqs with images;
        without it cross layers are skipped."""
        h = self.model.embed_tokens(input_ids)
        cos_sin = [r.cos_sin(positions, h.dtype) for r in self._ropes]
        for i, layer in enumerate(self.model.layers):
            if i not in self.cross_layers:
                h = layer(h, cos_sin[self._rope_of[i]], attn_metadata.for_layer(i), kv_pool.kv_view(i),
                          attn_metadata.backend)
            elif cross is not None:
                h = layer(h, cross[i], kv_pool.kv_view(i))
        if rows is not None:
            h = h[rows]
        if self.lm_head is None:   # a tensor-parallel worker: rank 0 alone computes logits
            return h
        return self.lm_head(self.model.norm(h))
