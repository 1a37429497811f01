"""Vision-language families: a text config inside, a vision tower beside.

- mllama (Llama 3.2 Vision): the text model's `cross_attention_layers` get a
  `cross` spec (K/V of the encoder tokens), every other layer `full`.  One
  image becomes `max_num_tiles * ((image_size / patch_size)**2 + 1)` encoder
  tokens (4 * 1601 = 6404 for 560 px tiles of 14 px patches).
- llava / llava_onevision: the decoder's layers, then ONE `vision`
  pseudo-layer (index = number of decoder layers) holding the projected
  embedding of each image token, of the text hidden size.  Tokens per image
  come from the vision geometry, (image_size // patch_size)**2, plus the
  class token when the strategy is "full" on a CLIP tower; else the config's
  `image_seq_length`; else 576 (LLaVA-1.5's 336 px / 14 px).  For
  llava_onevision that is 729 tokens: ONE 384 px crop.  Real AnyRes inputs
  add up to 9 more crops per image, which this shape does not model.
- gemma3 (multimodal): the text model only.  Its SigLIP tower counts in the
  weights, but no vision pseudo-layer is added: the engine's Gemma-3 family
  serves text (image embeddings would be 256 tokens per image).
- llama4 (Scout, Maverick): likewise the text model only; its vision tower,
  pixel-shuffle adapter and projector count in the weights.

Weights count the vision tower and projector; `active_params` counts only
the text decoder, because the simulator prices the vision encoder per image
separately.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..spec import LayerSpec
from . import params as P
from .hf import Body, attn_dims, require, text_body

DEFAULT_IMAGE_TOKENS = 576


def _text_config(cfg: Mapping, default_type: str) -> dict:
    text = dict(cfg.get("text_config") or {})
    if not text:
        raise ValueError(f"config (model_type={cfg.get('model_type')!r}) lacks field 'text_config'")
    text.setdefault("model_type", default_type)
    if cfg.get("tie_word_embeddings"):
        text["tie_word_embeddings"] = True
    return text


def _vision_config(cfg: Mapping) -> dict:
    vision = cfg.get("vision_config")
    if not vision:
        raise ValueError(f"config (model_type={cfg.get('model_type')!r}) lacks field 'vision_config'")
    return dict(vision)


def mllama(cfg: Mapping, dt: str, ssm_dtype: str | None) -> Body:
    text = _text_config(cfg, "mllama_text_model")
    text["model_type"] = "llama"            # self-attention layers are plain Llama layers
    vision = _vision_config(cfg)
    vision.setdefault("model_type", "mllama_vision_model")
    cross_layers = set(text.get("cross_attention_layers") or ())
    hidden, heads, kv, head_dim = attn_dims(text)
    cross_attn = P.attention(hidden, heads, kv, head_dim, qk_norm=True) + 2     # + attn and mlp gates

    def claim(i: int) -> tuple[LayerSpec, int] | None:
        return (LayerSpec("cross", dt, kv, head_dim), cross_attn) if i in cross_layers else None

    body = text_body(text, dt, ssm_dtype, extra=claim)
    tiles = require(vision, "max_num_tiles")
    per_tile = (require(vision, "image_size") // require(vision, "patch_size")) ** 2 + 1
    proj = P.linear(require(vision, "vision_output_dim"), hidden, True)
    extra = P.ParamCount(8 * hidden + P.vit(vision) + proj, 0)   # 8 extra embedding rows for image tokens
    return Body(body.layers, body.params + extra, hidden, body.max_context, tiles * per_tile)


def _llava_image_tokens(cfg: Mapping, vision: Mapping) -> int:
    size, patch = vision.get("image_size"), vision.get("patch_size")
    if size and patch:
        tokens = (size // patch) ** 2
        strategy = cfg.get("vision_feature_select_strategy", "full" if cfg.get("model_type") == "llava_onevision"
                           else "default")
        has_cls = vision.get("model_type", "clip_vision_model") == "clip_vision_model"
        return tokens + (1 if strategy == "full" and has_cls else 0)
    return cfg.get("image_seq_length") or DEFAULT_IMAGE_TOKENS


def _llava(default_text: str, default_vision: str, newline: bool) -> Callable[[Mapping, str, str | None], Body]:
    def build(cfg: Mapping, dt: str, ssm_dtype: str | None) -> Body:
        text = _text_config(cfg, default_text)
        vision = _vision_config(cfg)
        vision.setdefault("model_type", default_vision)
        body = text_body(text, dt, ssm_dtype)
        hidden = body.hidden_size
        layer = cfg.get("vision_feature_layer", -1)
        feat = require(vision, "hidden_size") * (len(layer) if isinstance(layer, list) else 1)
        bias = cfg.get("multimodal_projector_bias", True)
        proj = P.linear(feat, hidden, bias) + P.linear(hidden, hidden, bias) + (hidden if newline else 0)
        layers = body.layers + (LayerSpec("vision", dt, hidden_size=hidden),)
        return Body(layers, body.params + P.ParamCount(P.vit(vision) + proj, 0), hidden, body.max_context,
                    _llava_image_tokens(cfg, vision))
    return build


def gemma3(cfg: Mapping, dt: str, ssm_dtype: str | None) -> Body:
    text = _text_config(cfg, "gemma3_text")
    vision = _vision_config(cfg)
    vision.setdefault("model_type", "siglip_vision_model")
    vision.setdefault("vision_use_head", False)
    body = text_body(text, dt, ssm_dtype)
    vh = require(vision, "hidden_size")
    proj = vh * body.hidden_size + vh           # projection matrix and its RMSNorm
    return Body(body.layers, body.params + P.ParamCount(P.vit(vision) + proj, 0), body.hidden_size,
                body.max_context)


def llama4(cfg: Mapping, dt: str, ssm_dtype: str | None) -> Body:
    text = _text_config(cfg, "llama4_text")
    vision = _vision_config(cfg)
    vision.setdefault("model_type", "llama4_vision_model")
    body = text_body(text, dt, ssm_dtype)
    proj = P.linear(vision.get("vision_output_dim", 7680), body.hidden_size)
    return Body(body.layers, body.params + P.ParamCount(P.vit(vision) + proj, 0), body.hidden_size,
                body.max_context)


VLM_FAMILIES: dict[str, Callable[[Mapping, str, str | None], Body]] = {
    "mllama": mllama,
    "llava": _llava("llama", "clip_vision_model", newline=False),
    "llava_onevision": _llava("qwen2", "siglip_vision_model", newline=True),
    "gemma3": gemma3,
    "llama4": llama4,
}
