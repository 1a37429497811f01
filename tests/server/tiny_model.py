"""A tiny random-weight Llama checkpoint with a byte-level BPE tokenizer and
a ChatML chat template, written to a folder (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}"
    "{% else %}<image>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "paging keeps memory for every layer in one pool",
    "hello world, how are you today? I am fine, thank you.",
    "large pages split into small pages of every group",
    "sliding window attention forgets old tokens",
] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(folder: Path) -> int:
    """Train a ~300-token byte-level BPE; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>", "bos_token": None,
           "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tok.get_vocab_size(with_added_tokens=True)


def build_tiny_llama(folder: Path, max_position_embeddings: int = 256) -> Path:
    """Write config.json, weights, tokenizer files into `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(folder)
    eos = SPECIALS.index("<|im_end|>")
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                         max_position_embeddings=max_position_embeddings, eos_token_id=eos,
                         bos_token_id=0, tie_word_embeddings=False, torch_dtype="float32")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return folder
