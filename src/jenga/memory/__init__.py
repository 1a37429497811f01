"""memory/: what is stored where.  Layer specs, the memory plan, the two-level
allocator, per-kind policies and the prefix cache.  Pure Python: never
imports torch."""
