"""One memory shape for a target model and its speculative-decoding draft.

Speculative decoding keeps both models' state in ONE pool: the plan is
built from the target's layer specs followed by the draft's, each draft
spec tagged with the draft's model name (`LayerSpec.model`), so equal specs
of the two models still form separate groups (their pages, prefix-cache
keys and eviction are their own) and the planner sizes pages for both with
no split set by hand.  Draft layer i is plan layer `len(target.layers) + i`;
the draft's ModelRunner is given that offset.  Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import replace

from ..memory.spec import ModelShape

DRAFT_TAG = "draft"


def merge_shapes(target: ModelShape, draft: ModelShape, tag: str = DRAFT_TAG) -> ModelShape:
    """The shape holding `target`'s layers then `draft`'s, the latter tagged
    `tag`.  max_context is the smaller of the two (the draft must reach every
    position the target does); weights and active parameters add up (both
    run every step); other fields are the target's.  Raises ValueError for
    an empty or "main" tag, or when a layer already carries `tag` or the
    draft's layers are tagged for another model."""
    if not tag or tag == "main":
        raise ValueError(f"tag must name the draft model (not empty or 'main'), got {tag!r}")
    if any(s.model == tag for s in target.layers):
        raise ValueError(f"target {target.name!r} already has layers tagged {tag!r}")
    foreign = {s.model for s in draft.layers} - {"main", tag}
    if foreign:
        raise ValueError(f"draft {draft.name!r} has layers of other models {sorted(foreign)}")
    layers = target.layers + tuple(replace(s, model=tag) for s in draft.layers)
    return replace(target, name=f"{target.name}+{tag}:{draft.name}", layers=layers,
                   max_context=min(target.max_context, draft.max_context),
                   weights_bytes=target.weights_bytes + draft.weights_bytes,
                   active_params=target.active_params + draft.active_params)


def draft_layer_offset(target: ModelShape) -> int:
    """Plan index of the draft's layer 0 in `merge_shapes(target, ...)`."""
    return len(target.layers)
