"""Drafts for the speculative-decoding tests (importable by name, like
engine_helpers): a random one and one cut from the target."""

import torch
import transformers as tf
from engine_helpers import save_byte_tokenizer


def random_draft(path, seed: int = 1) -> None:
    """A 1-layer, 32-wide random Llama over the same 258-token vocabulary:
    its proposals are almost never right."""
    cfg = tf.LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                         eos_token_id=257, bos_token_id=256, pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    tf.LlamaForCausalLM(cfg).save_pretrained(path)
    save_byte_tokenizer(path)


def truncated_draft(target_model, path) -> None:
    """The target's embeddings, first layer, norm and head: a 1-layer draft
    (layer skipping) that agrees with the target often but not always."""
    cfg = target_model.config.to_dict()
    cfg.update(num_hidden_layers=1, layer_types=None)
    draft = tf.LlamaForCausalLM(tf.LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"}))
    own = draft.state_dict()
    draft.load_state_dict({k: v for k, v in target_model.state_dict().items() if k in own})
    draft.save_pretrained(path)
    save_byte_tokenizer(path)
