"""Model shapes: layer specs of real models, from HF configs or presets.

`hf.shape_from_config` / `hf.shape_from_path` read a `config.json`;
`presets.get_preset` returns the shapes of the paper's models, built from
embedded configs through the same code.  Pure Python: no torch.
"""
