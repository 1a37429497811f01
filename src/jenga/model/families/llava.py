"""LLaVA: a CLIP or SigLIP vision tower, a two-layer projector, and any
decoder family of ours as the language model.

An image becomes `num_tokens` embeddings (the tower's patches, CLIP's class
token dropped by the "default" feature strategy), projected to the text
width; the prompt holds as many placeholder tokens, whose input embeddings
are replaced by the image's.  With Jenga's plan the embeddings live in the
pool's `vision` group: the encoder run writes them into the image's pages
when a chunk first reaches the image, and each chunk reads its own rows from
there (the pages are released as chunks prefill them).  With `max-page`
(`plan.vision_outside_pool`) nothing is kept: the scheduler lists the image
for every chunk that reaches it and the encoder output is used directly, as
vLLM v0 did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ...sched.step import NO_PAGE, StepPlan
from ..attn_metadata import AttnMetadata
from ..image_processing import clip_pixels, pixel_hash, processor_settings
from ..kv_pool import KVPool
from ..layers import activation
from ..multimodal import ImageInput, ImageStore, encoder_runs, image_slots, require_pages
from ..parallel import NO_TP, TPShard
from .base import Arch, DecoderLM, hf_config
from .clip import VisionTower

_TEXT = ("model.language_model.", "language_model.model.")
_HEAD = ("language_model.lm_head.",)
_TOWER = ("model.vision_tower.", "vision_tower.")
_PROJ = ("model.multi_modal_projector.", "multi_modal_projector.")


def _text_family(model_type: str) -> type[DecoderLM]:
    from . import model_class
    if model_type == "llava":
        raise ValueError("a llava text_config cannot itself be llava")
    return model_class(model_type)


class Projector(nn.Module):
    def __init__(self, features: int, hidden: int, act: str, bias: bool) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(features, hidden, bias=bias)
        self.linear_2 = nn.Linear(hidden, hidden, bias=bias)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@dataclass(frozen=True)
class ImageEmbeds:
    """rows [N]: step token rows that are image placeholders; values
    [N, hidden]: their embeddings."""

    rows: torch.Tensor
    values: torch.Tensor


class LlavaForConditionalGeneration(DecoderLM):
    model_types = ("llava",)
    accepts_images = True
    expands_image_tokens = True           # the prompt holds num_tokens placeholders per image
    prefix_depends_on_images = False

    def __init__(self, config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 shard: TPShard = NO_TP) -> None:
        full = hf_config(config)
        text = full.text_config
        if full.tie_word_embeddings:
            text.tie_word_embeddings = True
        super().__init__(text, dtype, device, shard)   # the decoder sharded, the vision tower replicated
        self.vlm_config, vc = full, full.vision_config
        self.image_token_id = full.image_token_id
        self.feature_layers = full.vision_feature_layer
        self.strategy = full.vision_feature_select_strategy
        if self.strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {self.strategy!r} must be 'default' or 'full'")
        layers = self.feature_layers if isinstance(self.feature_layers, list) else [self.feature_layers]
        with torch.device("meta"):
            self.vision_tower = VisionTower(vc)
            self.multi_modal_projector = Projector(vc.hidden_size * len(layers), self.arch.hidden_size,
                                                   full.projector_hidden_act, full.multimodal_projector_bias)
        self.tokens_per_image = self.vision_tower.num_positions - (1 if self.strategy == "default" else 0)
        self.vision_layer = self.arch.num_layers    # the shape's vision pseudo-layer follows the decoder

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        return _text_family(cfg.model_type).arch_from_config(cfg)

    def make_mlp(self, a: Arch) -> nn.Module:
        return _text_family(self.config.model_type).make_mlp(self, a)

    def map_name(self, name: str) -> str | None:
        for p in _TOWER:
            if name.startswith(p):
                rest = VisionTower.map_name(name[len(p):])
                return None if rest is None else "vision_tower." + rest
        for prefixes, target in ((_TEXT, "model."), (_HEAD, "lm_head."), (_PROJ, "multi_modal_projector.")):
            for p in prefixes:
                if name.startswith(p):
                    return super().map_name(target + name[len(p):])
        return super().map_name(name)

    # -- images ----------------------------------------------------------
    def image_processor(self, preprocessor_config: dict | None = None):
        """A function RGB PIL image -> ImageInput; ValueError when the
        preprocessor's crop disagrees with the tower's image size."""
        vc = self.vlm_config.vision_config
        s = processor_settings("clip", vc.to_dict(), preprocessor_config)
        if (s.crop or s.size) != vc.image_size:
            raise ValueError(f"preprocessor crop of {s.crop or s.size} px does not match the vision tower's "
                             f"image_size={vc.image_size}")

        def process(image) -> ImageInput:
            px = clip_pixels(image, s)
            return ImageInput(px, pixel_hash(px), self.tokens_per_image)
        return process

    def encode(self, image: ImageInput) -> torch.Tensor:
        """Projected embeddings [num_tokens, hidden] of one image."""
        states = self.vision_tower(image.pixel_values[None].to(self.device))
        layers = self.feature_layers if isinstance(self.feature_layers, list) else [self.feature_layers]
        crop = 1 if self.strategy == "default" else 0
        feats = torch.cat([states[i][:, crop:] for i in layers], dim=-1)
        return self.multi_modal_projector(feats)[0]

    def prepare_images(self, step: StepPlan, plan, kv_pool: KVPool, store: ImageStore) -> tuple[dict, int]:
        """Run the encoder for the images this step lists (into their vision
        pages, or kept for this step only when the plan keeps none), and
        gather the embeddings of the step's placeholder rows.  Returns
        forward keyword arguments and the number of encoder runs."""
        gid = None if plan.vision_outside_pool else kv_pool.group_of(self.vision_layer)
        table = None if gid is None else kv_pool.embed_view(gid)
        rows, values, runs, row0 = [], [], 0, 0
        for s in step.seqs:
            todo = encoder_runs(s, plan.groups)
            for k, img in enumerate(s.images):
                fresh = None
                if k in todo:
                    fresh = self.encode(store.get(s.req_id, k))
                    runs += 1
                    if fresh.shape[0] != img.num_tokens:
                        raise ValueError(f"request {s.req_id}: image {k} encodes to {fresh.shape[0]} tokens, "
                                         f"its ImageRef says {img.num_tokens}")
                    if table is not None:
                        pages, offs = image_slots(s, plan.groups[gid], k)
                        keep = pages != NO_PAGE   # pages a prefix hit already consumed stay NO_PAGE
                        dev = table.device
                        table[pages[keep].to(dev), offs[keep].to(dev)] = fresh[keep.to(dev)].to(table.dtype)
                lo, hi = max(s.start, img.position) - img.position, min(s.end, img.end) - img.position
                if lo >= hi:
                    continue
                if table is not None:
                    pages, offs = image_slots(s, plan.groups[gid], k)
                    require_pages(s, gid, k, pages[lo:hi])
                    values.append(table[pages[lo:hi].to(table.device), offs[lo:hi].to(table.device)])
                elif fresh is None:
                    raise ValueError(f"request {s.req_id}: image {k} has no embeddings in the pool and was "
                                     "not listed for an encoder run")
                else:
                    values.append(fresh[lo:hi])
                rows.append(torch.arange(row0 + img.position + lo - s.start, row0 + img.position + hi - s.start))
            row0 += s.num_tokens
        if not rows:
            return {}, runs
        return {"image_embeds": ImageEmbeds(torch.cat(rows).to(self.device), torch.cat(values))}, runs

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn_metadata: AttnMetadata,
                kv_pool: KVPool, rows: torch.Tensor | None = None,
                image_embeds: ImageEmbeds | None = None) -> torch.Tensor:
        """As DecoderLM.forward, with the placeholder rows' input embeddings
        replaced by `image_embeds` (scaled like text embeddings afterwards,
        as transformers scales inputs_embeds)."""
        h = self.model.embed_tokens(input_ids)
        if image_embeds is not None:
            h = h.index_copy(0, image_embeds.rows, image_embeds.values.to(h.dtype))
        return self.decode(h, positions, attn_metadata, kv_pool, rows)
