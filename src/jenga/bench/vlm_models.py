"""Small random-weight vision-language checkpoints for CPU benchmarks.

`vlm:mllama-small` and `vlm:llava-small` have the shapes that make the
paper's point at a size two CPU cores run: mllama with 2 cross-attention
layers among 8 (Llama 3.2 Vision has 8 among 40) and images of up to 4
tiles of 50 encoder tokens (200 per image, far more than the prompt's
text); LLaVA with a 4-layer CLIP tower turning a 96 px image into 144
embeddings, so chunked prefill cuts through images.  Weights are random
(fixed seed): outputs are noise, memory and compute behave as in the real
families.  A byte-level tokenizer (256 bytes, <s>, </s>, the image token)
is written beside them.  A model is built once into `<jenga cache>/vlm-NAME`
(stamped with its recipe) and reused.
"""

from __future__ import annotations

import json
from pathlib import Path

PREFIX = "vlm:"
STAMP = "jenga_vlm.json"
BOS, EOS, IMAGE = 256, 257, 258
_TEXT = dict(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=1024, bos_token_id=BOS, eos_token_id=EOS)

RECIPES: dict[str, dict] = {
    "mllama-small": dict(
        kind="mllama", image_token="<|image|>",
        vision=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_global_layers=2,
                    attention_heads=4, image_size=56, patch_size=8, max_num_tiles=4,
                    intermediate_layers_indices=[1, 3], vision_output_dim=384,
                    supported_aspect_ratios=[[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]),
        text=dict(_TEXT, vocab_size=258, num_hidden_layers=8, cross_attention_layers=[3, 7], pad_token_id=0,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "llava-small": dict(
        kind="llava", image_token="<image>",
        vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                    image_size=96, patch_size=8),
        text=dict(_TEXT, vocab_size=259, num_hidden_layers=4, head_dim=64, tie_word_embeddings=False)),
}


def vlm_names() -> tuple[str, ...]:
    return tuple(RECIPES)


def _config(name: str):
    import transformers as tf
    if name not in RECIPES:
        raise ValueError(f"model: unknown VLM {name!r}; known: {', '.join(RECIPES)}")
    r = RECIPES[name]
    if r["kind"] == "mllama":
        return tf.MllamaConfig(vision_config=tf.MllamaVisionConfig(**r["vision"]).to_dict(),
                               text_config=tf.MllamaTextConfig(**r["text"]).to_dict(), image_token_index=IMAGE)
    return tf.LlavaConfig(vision_config=tf.CLIPVisionConfig(**r["vision"]).to_dict(),
                          text_config=tf.LlamaConfig(**r["text"]).to_dict(), image_token_index=IMAGE)


def save_byte_tokenizer(folder: Path, image_token: str) -> None:
    """256 byte tokens, <s> (256), </s> (257) and `image_token` (258)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", image_token])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))


def vlm_model_path(name: str, seed: int = 0) -> Path:
    """The folder of VLM `name`, built first when absent or from another
    recipe.  Raises ValueError for an unknown name."""
    import torch
    import transformers as tf

    from ..model.gguf_convert import cache_root, cached_folder
    config = _config(name)
    out = cache_root() / f"vlm-{name}"
    stamp = {"name": name, "seed": seed, "recipe": RECIPES[name]}

    def build(folder: Path) -> None:
        torch.manual_seed(seed)
        cls = tf.MllamaForConditionalGeneration if RECIPES[name]["kind"] == "mllama" else \
            tf.LlavaForConditionalGeneration
        cls(config).save_pretrained(folder)
        save_byte_tokenizer(folder, RECIPES[name]["image_token"])

    return cached_folder(out, STAMP, stamp, build)
