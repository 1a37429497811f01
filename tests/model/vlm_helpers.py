"""Tiny random-weight vision-language checkpoints (mllama, LLaVA) with a
byte-level tokenizer whose image token is a special token, and reference
runs with transformers (eager attention, explicit position ids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

BOS, EOS, IMAGE = 256, 257, 258      # ids of <s>, </s> and the image token
TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}"
            "{% else %}{{ image_token }}{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def save_tokenizer(path: Path, image_token: str) -> None:
    """Byte-level tokenizer: 256 byte tokens, <s>, </s>, then `image_token`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", image_token])
    tok.save(str(path / "tokenizer.json"))
    template = TEMPLATE.replace("{{ image_token }}", image_token)
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "bos_token": "<s>", "chat_template": template}))


def _perturb(model, seed: int) -> None:
    """Random weights with 1-D ones (norms, biases, gates) made non-trivial,
    and decisive logits so fp32 rounding never flips an argmax."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
        model.lm_head.weight.mul_(8.0)


def tiny_mllama(path: Path, seed: int = 0, max_tiles: int = 2):
    """mllama: 4 text layers (cross at 1 and 3), 16 px tiles of 4 px patches
    (17 tokens per tile), up to `max_tiles` tiles.  Returns the HF model."""
    import transformers as tf
    vision = tf.MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                                   attention_heads=4, image_size=16, patch_size=4, max_num_tiles=max_tiles,
                                   intermediate_layers_indices=[0], vision_output_dim=64,
                                   supported_aspect_ratios=[list(r) for r in _ratios(max_tiles)])
    text = tf.MllamaTextConfig(vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1, 3],
                               max_position_embeddings=512, pad_token_id=0, bos_token_id=BOS, eos_token_id=EOS,
                               rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    cfg = tf.MllamaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=IMAGE)
    return _save(tf.MllamaForConditionalGeneration, cfg, path, seed, "<|image|>")


def _ratios(max_tiles: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles]


def tiny_llava(path: Path, seed: int = 0, tower: str = "clip"):
    """LLaVA: 2-layer Llama text model, a 2-layer CLIP (or SigLIP) tower on
    16 px images of 4 px patches: 16 image tokens.  Returns the HF model."""
    import transformers as tf
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=16, patch_size=4)
    vision = tf.CLIPVisionConfig(**common) if tower == "clip" else tf.SiglipVisionConfig(**common)
    text = tf.LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                          bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=False)
    strategy = "default" if tower == "clip" else "full"
    cfg = tf.LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=IMAGE,
                         vision_feature_select_strategy=strategy, vision_feature_layer=-2)
    return _save(tf.LlavaForConditionalGeneration, cfg, path, seed, "<image>")


def _save(cls, cfg, path: Path, seed: int, image_token: str):
    torch.manual_seed(seed)
    cfg._attn_implementation = "eager"
    for sub in ("text_config", "vision_config"):
        getattr(cfg, sub)._attn_implementation = "eager"
    model = cls(cfg).eval()
    _perturb(model, seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    save_tokenizer(path, image_token)
    model.generation_config.eos_token_id = None
    return model


def random_image(seed: int, height: int, width: int) -> torch.Tensor:
    """A uint8 [3, H, W] image of random pixels."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8))


def hf_greedy(model, ids: list[int], n: int, **inputs) -> list[int]:
    """transformers' greedy continuation (n tokens, eos ignored)."""
    t = torch.tensor([ids])
    out = model.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0, **inputs)
    return out[0, len(ids):].tolist()


def to_pil(image: torch.Tensor):
    from PIL import Image
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def hf_mllama_inputs(prompt: list[int], images: list[torch.Tensor], max_tiles: int = 2) -> dict:
    """transformers' own processor outputs for `images` (pixel values, aspect
    ratios, tile masks) and the cross-attention mask of `prompt`."""
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
    from transformers.models.mllama.processing_mllama import (convert_sparse_cross_attention_mask_to_dense,
                                                               get_cross_attention_token_mask)
    proc = MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=max_tiles)
    out = proc(images=[[to_pil(i) for i in images]], return_tensors="pt")
    mask = convert_sparse_cross_attention_mask_to_dense([get_cross_attention_token_mask(prompt, IMAGE)],
                                                        out["num_tiles"], max_tiles, len(prompt))
    return dict(pixel_values=out["pixel_values"], aspect_ratio_ids=out["aspect_ratio_ids"],
                aspect_ratio_mask=out["aspect_ratio_mask"], cross_attention_mask=torch.tensor(mask))


def hf_llava_inputs(images: list[torch.Tensor]) -> dict:
    """transformers' own LLaVA (CLIP) processor outputs for `images`."""
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    proc = LlavaImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return dict(pixel_values=proc(images=[to_pil(i) for i in images], return_tensors="pt")["pixel_values"])


def engine_logits(llm, prompt, images) -> torch.Tensor:
    """Logits at every prompt position, computed by the engine's own model
    and pool on the step the real scheduler plans (the whole prompt in one
    step): add_request (image loading, preprocessing, placeholders), then
    what ModelRunner.execute does, keeping every row."""
    from jenga.model.attn_metadata import build_attn_metadata
    e = llm.engine
    e.add_request("logits", prompt, images=images)
    plan = e.scheduler.schedule()
    (s,) = plan.seqs
    assert s.start == 0 and s.sample, "the prompt must fit one step"
    with torch.no_grad():
        meta = build_attn_metadata(plan, e.plan, e.model.attn_layers, e.device)
        extra, _ = e.model.prepare_images(plan, e.plan, e.kv_pool, e.runner.images)
        logits = e.model(torch.tensor(s.token_ids), meta.positions, meta, e.kv_pool, None, **extra)
    e.abort("logits")
    return logits, list(s.token_ids)


def vlm_llm(path, **kw):
    """An LLM over a tiny VLM folder: one thread, 4 MiB of KV, 4-token pages."""
    from jenga.engine.llm import LLM

    base = dict(cpu_threads=1, kv_cache_memory=1 << 22, page_tokens=4, max_num_batched_tokens=64)
    return LLM(str(path), **{**base, **kw})
