"""build_plan: group layers, size pages, bound the LCM, split the budget.

This is where a model shape (or a hand-made list of layer specs) and a byte
budget become a `MemoryPlan`, for Jenga or one of the paper's baselines:

- jenga: one group per distinct spec; token groups page `page_tokens`
  tokens, a Mamba group one state per layer, and image-keyed groups (cross,
  vision: allocated once per image at a known size) one token per page when
  the LCM bound allows it, since that removes last-page rounding.  The LCM
  bound is kept by `pagesize.fit` (bigger pages, split groups, padding).
- uniform (vLLM v1's hybrid manager): every layer page has the same size.
  The largest per-layer unit (a Mamba state, or page_tokens tokens of the
  widest layer) sets it; each token group's page_tokens grows to the
  smallest multiple of page_tokens reaching it; all layer pages (Mamba
  included) are padded to the largest result.
- max-page (vLLM v0 PagedAttention): all attention layers (full, sliding,
  chunked, cross) of a model become ONE `full` group with the widest layer's
  spec; every layer page, Mamba's included, is padded to the largest layer
  page of the model.  Cross-attention models then store text and image
  tokens in every layer.  Vision embeddings leave the pool (vLLM v0 keeps
  encoder outputs outside the KV cache and reruns the encoder per chunk).
- static: Jenga's pages plus a fixed share of large pages per group.

Each decision is written to `plan.choices` with the bytes it wastes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .pagesize import Need, Sizing, fit
from .plan import ALLOCATORS, Group, MemoryPlan
from .policies import policy_for
from .rules import AllocatorRules
from .spec import LayerSpec, ModelShape, dtype_bytes

# Kinds whose pages are keyed by image, not token position: any page_tokens
# works for them, the prefix hash block need not divide it.
# token groups may double page_tokens up to 2^6 times to bound the LCM
_MAX_DOUBLINGS = 6


@dataclass(frozen=True)
class _Unit:
    """A group before sizing: its spec and layers (true specs kept for the
    padding count when a baseline merges layers)."""

    spec: LayerSpec
    layers: tuple[int, ...]
    true_specs: tuple[LayerSpec, ...]


def build_plan(shape_or_specs: ModelShape | Sequence[LayerSpec], budget_bytes: int, *, allocator: str = "jenga",
               page_tokens: int = 16, max_lcm_ratio: int = 64,
               static_share: Sequence[float] | None = None) -> MemoryPlan:
    """The MemoryPlan for a model (or spec list, layer i = specs[i]) and a
    pool of `budget_bytes` (module doc).  static_share: for `static`,
    weights per group normalised to the page count (default: bytes one
    max_context request needs per group).  Raises ValueError naming the bad
    argument: unknown allocator, page_tokens < 1, max_lcm_ratio < 1, a budget
    too small for one large page, a static share of the wrong length."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"unknown allocator {allocator!r}; known: {', '.join(ALLOCATORS)}")
    if page_tokens < 1:
        raise ValueError(f"page_tokens must be >= 1, got {page_tokens}")
    if max_lcm_ratio < 1:
        raise ValueError(f"max_lcm_ratio must be >= 1, got {max_lcm_ratio}")
    if budget_bytes < 0:
        raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
    shape, specs = _as_shape(shape_or_specs)
    units = _group(specs)
    vision_outside = False
    if allocator == "max-page":
        units, notes, vision_outside = _merge_max_page(units)
        if not units:
            raise ValueError("max-page: the model has no layer that stores state in the pool (only vision)")
        # one page size for all, as vLLM: token pages hold as many tokens as
        # fit the largest unit (a Mamba state) rather than padding 16 tokens
        needs, more = _uniform_needs(units, page_tokens)
        notes += more
    elif allocator == "uniform":
        needs, notes = _uniform_needs(units, page_tokens)
    else:
        needs, notes = _jenga_needs(units, page_tokens), []
    layout = fit(needs, max_lcm_ratio, allow_padding=allocator in ("jenga", "static"))
    sizings, large = layout.sizings, layout.large
    groups = _groups(units, sizings, large, holds_encoder=allocator == "max-page")
    notes += _sizing_notes(units, needs, sizings, groups, large)
    if layout.note:
        notes.append(layout.note)
    num_large = budget_bytes // large
    if num_large == 0:
        raise ValueError(f"budget_bytes={budget_bytes} is too small for one large page of {large} bytes")
    shares: tuple[int, ...] = ()
    if allocator == "static":
        shares, note = _static_shares(groups, shape, page_tokens, num_large, static_share)
        notes.append(note)
    return MemoryPlan(tuple(groups), large, num_large, allocator, page_tokens, shares, tuple(notes),
                      shape.name if shape else "", shape.max_context if shape else 0, vision_outside)


def _as_shape(x: ModelShape | Sequence[LayerSpec]) -> tuple[ModelShape | None, tuple[LayerSpec, ...]]:
    if isinstance(x, ModelShape):
        return x, x.layers
    specs = tuple(x)
    if not specs or not all(isinstance(s, LayerSpec) for s in specs):
        raise ValueError("shape_or_specs must be a ModelShape or a non-empty list of LayerSpec")
    return None, specs


def _group(specs: Sequence[LayerSpec]) -> list[_Unit]:
    """Layers with equal specs, groups in order of first appearance."""
    layers: dict[LayerSpec, list[int]] = {}
    for i, spec in enumerate(specs):
        layers.setdefault(spec, []).append(i)
    return [_Unit(s, tuple(ix), (s,) * len(ix)) for s, ix in layers.items()]


def _align(spec: LayerSpec) -> int:
    return max(dtype_bytes(spec.dtype), dtype_bytes(spec.state_dtype) if spec.state_dtype else 0)


def _page_token_options(spec: LayerSpec, base: int) -> tuple[int, ...]:
    """Allowed page_tokens, preferred first: one state for recurrent kinds,
    1 then multiples of the hash block for image-keyed kinds, else the hash
    block times powers of two."""
    if policy_for(spec.kind).recurrent:
        return (1,)
    scaled = tuple(base << j for j in range(_MAX_DOUBLINGS + 1))
    return ((1,) + scaled) if policy_for(spec.kind).image_keyed else scaled


def _jenga_needs(units: list[_Unit], base: int) -> list[Need]:
    return [Need(u.spec.unit_bytes(), len(u.layers), _page_token_options(u.spec, base), _align(u.spec))
            for u in units]


def _uniform_needs(units: list[_Unit], base: int) -> tuple[list[Need], list[str]]:
    """vLLM v1: token pages grow to the largest per-layer unit, then every
    layer page is padded to the largest layer page."""
    def natural(u: _Unit) -> int:
        return u.spec.unit_bytes() * (1 if policy_for(u.spec.kind).recurrent else base)
    widest = max(units, key=natural)
    target = natural(widest)
    pts = [1 if policy_for(u.spec.kind).recurrent else base * -(-target // (base * u.spec.unit_bytes()))
           for u in units]
    floor = _aligned_floor(units, max(pt * u.spec.unit_bytes() for pt, u in zip(pts, units)))
    needs = [Need(u.spec.unit_bytes(), len(u.layers), (pt,), _align(u.spec), floor) for pt, u in zip(pts, units)]
    note = (f"uniform: the largest per-layer unit is {target} B ({widest.spec.describe()}); token groups take "
            f"page_tokens {sorted(set(p for p, u in zip(pts, units) if not policy_for(u.spec.kind).recurrent))} "
            f"and every layer page is {floor} B")
    return needs, [note]


def _merge_max_page(units: list[_Unit]) -> tuple[list[_Unit], list[str], bool]:
    """One `full` group per model for all attention layers; Mamba groups
    stay; vision groups leave the pool."""
    out: list[_Unit] = []
    merged: dict[str, int] = {}
    notes, vision_outside = [], False
    for u in units:
        kind = policy_for(u.spec.kind)
        if not kind.decoder_layer:
            vision_outside = True
            notes.append(f"max-page: {u.spec.describe()} embeddings are kept outside the pool, as vLLM v0 keeps "
                         "encoder outputs outside the KV cache (the encoder reruns for every chunk)")
            continue
        if kind.recurrent:
            out.append(u)
            continue
        tag = u.spec.model
        if tag not in merged:
            merged[tag] = len(out)
            out.append(_Unit(u.spec, (), ()))
        prev = out[merged[tag]]
        pairs = sorted(zip(prev.layers + u.layers, prev.true_specs + u.true_specs))
        out[merged[tag]] = _Unit(prev.spec, tuple(i for i, _ in pairs), tuple(s for _, s in pairs))
    for tag, idx in merged.items():
        u = out[idx]
        wide = max(u.true_specs, key=lambda s: s.bytes_per_token)
        spec = LayerSpec("full", wide.dtype, wide.num_kv_heads, wide.head_size, model=tag)
        out[idx] = _Unit(spec, u.layers, u.true_specs)
        notes.append(f"max-page: {len(u.layers)} attention layers of model {tag!r} form one full group at the widest "
                     f"layer's {spec.bytes_per_token} B/token; every layer stores every token"
                     + ("" if not any(policy_for(s.kind).image_keyed for s in u.true_specs)
                        else ", text and image tokens alike (cross layers present)"))
    return out, notes, vision_outside


def _aligned_floor(units: list[_Unit], floor: int) -> int:
    """`floor` rounded up so every group's typed views stay aligned (the
    element sizes are powers of two, so the largest is their lcm)."""
    align = max(_align(u.spec) for u in units)
    return -(-floor // align) * align


def _groups(units: list[_Unit], sizings: list[Sizing], large: int, holds_encoder: bool) -> list[Group]:
    """Groups in unit order; a split unit becomes consecutive sub-groups."""
    groups: list[Group] = []
    for u, s in zip(units, sizings):
        n = len(u.layers) // s.split
        for k in range(s.split):
            layers, specs = u.layers[k * n:(k + 1) * n], u.true_specs[k * n:(k + 1) * n]
            useful = sum(s.page_tokens * t.unit_bytes() for t in specs)
            small = s.layer_page_bytes * n
            groups.append(Group(len(groups), u.spec, layers, s.page_tokens, s.layer_page_bytes, large // small,
                                small - useful, holds_encoder and any(policy_for(t.kind).image_keyed for t in specs)))
    return groups


def _sizing_notes(units: list[_Unit], needs: list[Need], sizings: list[Sizing], groups: list[Group],
                  large: int) -> list[str]:
    """One line per group the planner changed: what, and the bytes wasted."""
    notes, gid = [], 0
    for u, need, s in zip(units, needs, sizings):
        label = f"group {gid}" if s.split == 1 else f"groups {gid}-{gid + s.split - 1}"
        what = f"{label} ({u.spec.describe()} x{len(u.layers)})"
        parts = []
        if policy_for(u.spec.kind).image_keyed and s.page_tokens == 1:
            parts.append("1 token per page, since its state is allocated once per image at a known size "
                         "(no last-page rounding)")
        elif s.page_tokens != need.page_tokens[0]:
            parts.append(f"page_tokens {need.page_tokens[0]} -> {s.page_tokens} to bound the LCM")
        if s.split > 1:
            n = len(u.layers) // s.split
            parts.append(f"split into {s.split} sub-groups of {n} layer{'s' if n > 1 else ''} to bound the LCM")
        if s.layer_page_bytes > max(need.floor, s.useful_layer_bytes):
            parts.append(f"layer page padded {max(need.floor, s.useful_layer_bytes)} -> {s.layer_page_bytes} B "
                         "to bound the LCM")
        elif s.layer_page_bytes > s.useful_layer_bytes:
            parts.append(f"layer page padded {s.useful_layer_bytes} -> {s.layer_page_bytes} B to the common size")
        subs = groups[gid:gid + s.split]
        if parts or any(g.padding_bytes for g in subs):
            parts = parts or ["layers narrower than the group's spec padded to its page"]
            notes.append(f"{what}: {'; '.join(parts)} ({_waste(subs)})")
        gid += s.split
    biggest = max(g.small_page_bytes for g in groups)
    notes.append(f"large page {large} B = LCM of the small pages ({large / biggest:g}x the largest, "
                 f"{biggest} B)")
    return notes


def _waste(subs: list[Group]) -> str:
    """Bytes wasted per small page, per sub-group when they differ."""
    def one(g: Group) -> str:
        return f"{g.padding_bytes} B wasted per small page, {100 * g.padding_bytes / g.small_page_bytes:.2f}%"
    if len({g.padding_bytes for g in subs}) == 1:
        return one(subs[0])
    return "; ".join(f"group {g.gid}: {one(g)}" for g in subs)


def _static_shares(groups: list[Group], shape: ModelShape | None, base: int, num_large: int,
                   given: Sequence[float] | None) -> tuple[tuple[int, ...], str]:
    """Large pages per group: weights (given, or bytes one request at
    max_context needs) normalised to num_large, each group >= 1."""
    if num_large < len(groups):
        raise ValueError(f"budget_bytes gives {num_large} large pages, fewer than the {len(groups)} groups the "
                         "static allocator must each give one")
    if given is not None:
        weights = [float(w) for w in given]
        if len(weights) != len(groups) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"static_share must be {len(groups)} non-negative weights with a positive sum, "
                             f"got {list(given)}")
        why = "given"
    else:
        if shape is None:
            raise ValueError("static allocator needs a ModelShape (for max_context) or an explicit static_share")
        rules = AllocatorRules(partitioned=True)
        weights = [policy_for(g.kind)(g, base, rules, 512).footprint_pages(shape.max_context,
                                                                           shape.image_tokens_per_image)
                   * g.small_page_bytes for g in groups]
        why = (f"proportional to the bytes one request of max_context={shape.max_context} tokens "
               f"({shape.image_tokens_per_image} image tokens) needs per group")
    shares = _apportion(weights, num_large)
    return shares, f"static: large pages per group {list(shares)}, {why}"


def _apportion(weights: list[float], total: int) -> tuple[int, ...]:
    """Largest-remainder split of `total` by weights; a group left with 0
    takes one page from the largest share (total >= len(weights))."""
    norm = sum(weights) or 1.0
    exact = [total * w / norm for w in weights]
    parts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], i))
    for i in order[:total - sum(parts)]:
        parts[i] += 1
    for i in range(len(parts)):
        if parts[i] == 0:
            parts[max(range(len(parts)), key=lambda j: parts[j])] -= 1
            parts[i] = 1
    return tuple(parts)


def artifact_static_share(groups: Sequence[Group], block_tokens: int = 16) -> list[float]:
    """The paper artifact's static partition (vLLM v0 fork,
    `--static-partition-allocator`): each group's share of the pool is the
    bytes of one of its vLLM pages (`block_tokens` tokens of every layer of
    the group, or one state) times its kind's `static_weight` (1 for kinds
    whose need grows with the sequence, 0.5 for sliding, chunked and mamba).
    Fixed before any request arrives; pass it as `build_plan(...,
    static_share=...)`."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens!r}")
    return [g.spec.unit_bytes() * (block_tokens if g.spec.per_token else 1) * len(g.layers)
            * policy_for(g.kind).static_weight for g in groups]
