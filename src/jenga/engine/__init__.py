"""engine/: the real engine.  `LLMEngine` drives the scheduler, the torch
model runner, the sampler and the tokenizer one step at a time; `LLM` is the
offline batch API on top of it (names as in vLLM)."""
