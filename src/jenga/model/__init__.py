"""Tensors: the flat KV pool, paged attention, model families and weight
loading.  With engine/runner.py the only place torch is imported; see
docs/model.md for the pool layout and the attention paths."""
