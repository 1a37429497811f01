"""Jenga: an LLM-serving engine whose memory manager holds every kind of model
state (full / sliding / chunked attention KV, Mamba states, cross-attention KV,
vision embeddings, draft-model KV) in one paged pool.  See docs/ and
../shared/DESIGN.md for the map."""

__version__ = "0.1.0"
