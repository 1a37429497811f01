"""Helpers for the engine tests (importable by name: pytest puts this folder
on sys.path)."""

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from jenga.engine.tokenizer import Tokenizer


def build_byte_tokenizer(template: str | None = None, eos: str | None = None) -> Tokenizer:
    """One token per byte (no merges), so every multi-byte character is
    split across tokens; plus two special tokens <s> and </s>."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = HFTokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<s>", "</s>"])
    return Tokenizer(backend, chat_template=template, eos_token=eos, bos_token="<s>")


def save_byte_tokenizer(path) -> None:
    """Write the byte tokenizer into a model folder, with </s> as eos."""
    import json
    build_byte_tokenizer().backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))


def tiny_checkpoint(kind: str, path, seed: int = 0):
    """A random-weight HF model ("llama", or "gemma2": alternating sliding
    window 8 / full layers; "gemma2-mqa" with one KV head) saved with the byte tokenizer (vocab 258, eos
    257) to `path`; returns the transformers model for reference runs."""
    import torch
    import transformers as tf
    base = dict(vocab_size=258, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=256, eos_token_id=257,
                bos_token_id=256, pad_token_id=None)
    if kind == "llama":
        cls, cfg = tf.LlamaForCausalLM, tf.LlamaConfig(**base, num_hidden_layers=2, tie_word_embeddings=False)
    elif kind in ("gemma2", "gemma2-mqa"):   # -mqa: one KV head
        kv = {"num_key_value_heads": 1} if kind == "gemma2-mqa" else {}
        cls, cfg = tf.Gemma2ForCausalLM, tf.Gemma2Config(**{**base, **kv}, num_hidden_layers=4, sliding_window=8,
                                                         query_pre_attn_scalar=16)
    else:
        raise ValueError(f"kind: unknown tiny model {kind!r}")
    torch.manual_seed(seed)
    cfg._attn_implementation = "eager"
    model = cls(cfg).eval()
    with torch.no_grad():   # make logits decisive so fp32 rounding never flips an argmax
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(path)
    save_byte_tokenizer(path)
    return model


def reference_greedy(model, prompt: list[int], n: int) -> list[int]:
    """transformers' greedy continuation of `prompt`, `n` tokens, no eos."""
    import torch
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()
